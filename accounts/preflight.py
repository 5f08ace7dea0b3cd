"""Pre-flight checks of a cloud account: what would make an export or a copy fail hours later,
found in a few calls before anything long starts.

- OOS: the keys can use OUTSCALE's Object Storage, not only its API (a key can pass ReadAccounts
  and still be refused by OOS: an EIM user without OOS rights). ListBuckets answers that.
- The export bucket exists and is the account's own (the same ListBuckets, then HeadBucket to tell
  a missing bucket from someone else's). A missing one can be created from the account's page
  (``cloud_account_create_bucket``), by an admin, with the account's keys.
- OMI quota headroom (ReadQuotas): a full quota refuses every copy and import.

They run when the keys are validated (``cloud_account_validate``) and again for a share's source
account before approval (transfers/services/preflight.py). What they found is kept on the account
(``CloudAccount.preflight``: one entry per check, each with a status and a sentence) with the time
(``preflight_checked_at``), shown on the Cloud accounts page, and recorded with its RequestIds.
"""

from dataclasses import dataclass, field

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

import outscale
from accounts import vault
from accounts.access import require
from accounts.keys import credentials_for
from accounts.models import CloudAccount
from accounts.roles import Capability
from accounts.selectors import TeamAccess
from audit.recorder import record

# A check's status. "unknown": it could not be made (throttled, unreachable); it says nothing either way.
OK, WARNING, PROBLEM, UNKNOWN = "ok", "warning", "problem", "unknown"
LOW_HEADROOM = 5  # fewer free OMIs than this in the quota: a warning
CREATE_BUCKET = "create_bucket"  # the fix a page can offer for a missing bucket

OOS_OK = "OUTSCALE's Object Storage (OOS) accepts these keys."
OOS_REFUSED = ("OUTSCALE accepts these keys for its API, but its Object Storage (OOS) refused them: exports "
               "could neither be written to the bucket nor read from it. Use keys that may use OOS.")
OOS_UNKNOWN = "The Object Storage (OOS) could not be asked: {reason}"
BUCKET_OK = "The export bucket {bucket} exists and belongs to this account."
BUCKET_MISSING = ("The export bucket {bucket} does not exist in {region}: create it (Cloud accounts page), or "
                  "choose another bucket.")
BUCKET_NOT_OWNED = ("The export bucket {bucket} belongs to another OUTSCALE account: exports would be handed to "
                    "that account. Choose a bucket this account owns.")
BUCKET_UNKNOWN = "Not checked, since the Object Storage could not be used with these keys."
QUOTA_OK = "{headroom} more OMIs fit in the account's OMI quota ({used} of {limit} used)."
QUOTA_NO_LIMIT = "The account's OMI quota sets no limit."
QUOTA_LOW = ("Only {headroom} more OMIs fit in the account's OMI quota ({used} of {limit} used): a few copies "
             "will fill it.")
QUOTA_FULL = ("The account's OMI quota is full ({used} of {limit} used): OUTSCALE would refuse every copy or import "
              "into it. Delete OMIs, or ask OUTSCALE for a higher quota.")
QUOTA_FITS_THERE = "The copy fits in the OMI quota of {label}."
QUOTA_FULL_THERE = ("The OMI quota of {label} is full: OUTSCALE would refuse the copy there. Its team must delete OMIs "
                    "or ask OUTSCALE for a higher quota.")
QUOTA_NOT_REPORTED = "OUTSCALE reported no OMI quota ({name}) for this account, so its headroom is unknown."
QUOTA_UNKNOWN = "The OMI quota could not be read: {reason}"

BUCKET_CREATED_MESSAGE = "The export bucket {bucket} was created in {label} ({region})."
BUCKET_NOT_MISSING_MESSAGE = "The export bucket {bucket} already exists: nothing was created."
BUCKET_OTHERS_MESSAGE = ("The export bucket {bucket} belongs to another OUTSCALE account, so it cannot be created "
                         "for {label}: choose another name in Edit.")
BUCKET_NOT_CREATED_MESSAGE = "The export bucket {bucket} could not be created: {reason}"
NOT_VALIDATED_MESSAGE = "Check {label}'s keys first: the bucket is created with them."


class BucketError(ValidationError):
    """The bucket was not created; the message says why."""


@dataclass
class Findings:
    """What a run of checks found: one entry per check (collect the calls' RequestIds around it
    with ``outscale.record_request_ids``)."""

    checks: list[dict] = field(default_factory=list)

    def add(self, name: str, status: str, message: str, **extra) -> None:
        self.checks.append({"name": name, "status": status, "message": message, **extra})

    @property
    def problems(self) -> list[dict]:
        return [check for check in self.checks if check["status"] == PROBLEM]

    def as_json(self) -> dict:
        return {"checks": self.checks, "problems": len(self.problems)}


def _reason(exc: outscale.CloudError) -> str:
    return exc.user_message


def check_storage(account: CloudAccount, creds, findings: Findings, *, bucket: str = "") -> None:
    """The OOS and bucket checks: ListBuckets (and HeadBucket when the bucket is not listed).
    ``bucket``: the one to check, if not the account's current export bucket (a share's bound one)."""
    bucket = bucket or account.export_bucket
    try:
        ownership = outscale.bucket_ownership(creds=creds, bucket=bucket)
    except outscale.CredentialError as exc:
        findings.add("oos", PROBLEM, OOS_REFUSED, code=exc.code or "")
        findings.add("bucket", UNKNOWN, BUCKET_UNKNOWN)
        return
    except outscale.CloudError as exc:
        findings.add("oos", UNKNOWN, OOS_UNKNOWN.format(reason=_reason(exc)))
        findings.add("bucket", UNKNOWN, BUCKET_UNKNOWN)
        return
    findings.add("oos", OK, OOS_OK)
    if ownership.owned:
        findings.add("bucket", OK, BUCKET_OK.format(bucket=bucket))
    elif ownership.exists:
        findings.add("bucket", PROBLEM, BUCKET_NOT_OWNED.format(bucket=bucket))
    else:
        findings.add("bucket", PROBLEM, BUCKET_MISSING.format(bucket=bucket, region=account.region), fix=CREATE_BUCKET)


def check_quota(creds, findings: Findings, *, needed: int = 1, label: str = "") -> None:
    """OMI quota headroom (ReadQuotas): ``needed`` more OMIs must fit. With a ``label`` (another
    team's account, checked for a share's approver), the sentence names the account and gives no
    numbers: the approver learns whether the copy fits, not how full that team's account is."""
    try:
        quota = outscale.read_quota(creds=creds)
    except outscale.CloudError as exc:
        findings.add("quota", UNKNOWN, QUOTA_UNKNOWN.format(reason=_reason(exc)))
        return
    if quota is None:
        findings.add("quota", UNKNOWN, QUOTA_NOT_REPORTED.format(name=outscale.IMAGE_QUOTA))
        return
    if label:
        fits = quota.headroom is None or quota.headroom >= needed
        findings.add("quota", OK if fits else PROBLEM, (QUOTA_FITS_THERE if fits else QUOTA_FULL_THERE).format(
            label=label))
        return
    numbers = {"headroom": quota.headroom, "used": quota.used_value, "limit": quota.max_value,
               "quota": quota.name}
    if quota.headroom is None:
        findings.add("quota", OK, QUOTA_NO_LIMIT, **numbers)
    elif quota.headroom < needed:
        findings.add("quota", PROBLEM, QUOTA_FULL.format(**numbers), **numbers)
    elif quota.headroom < needed + LOW_HEADROOM:
        findings.add("quota", WARNING, QUOTA_LOW.format(**numbers), **numbers)
    else:
        findings.add("quota", OK, QUOTA_OK.format(**numbers), **numbers)


def account_findings(account: CloudAccount, creds) -> Findings:
    """Every check of the account, with these (opened) keys. Cloud calls only: nothing is written."""
    findings = Findings()
    check_storage(account, creds, findings)
    check_quota(creds, findings)
    return findings


def cloud_account_preflight(*, account: CloudAccount, actor=None, creds=None) -> CloudAccount:
    """Run the account's checks and keep what they found (``CloudAccount.preflight``), with one
    ``cloud_account.preflight_checked`` event (failed when a check found a problem). ``creds``:
    keys the caller opened already (validation); otherwise they are opened here. The cloud calls
    happen outside any transaction."""
    account = CloudAccount.objects.select_related("team").get(pk=account.pk)
    try:
        creds = creds or credentials_for(account, purpose="pre-flight checks")
    except vault.VaultError:
        return account  # recorded as a failed use of the keys; nothing to check with
    with outscale.record_request_ids() as request_ids:
        findings = account_findings(account, creds)
    now = timezone.now()
    with transaction.atomic():
        # Only for the keys and bucket checked: an edit meanwhile is checked on its own.
        CloudAccount.objects.filter(pk=account.pk, export_bucket=account.export_bucket,
                                    access_key_sealed=account.access_key_sealed).update(
            preflight=findings.as_json(), preflight_checked_at=now)
        record(action="cloud_account.preflight_checked", outcome="failed" if findings.problems else "success",
               actor=actor, team=account.team, target=account, cloud_request_ids=list(request_ids),
               details={"bucket": account.export_bucket,
                        "checks": {check["name"]: check["status"] for check in findings.checks}})
    account.preflight, account.preflight_checked_at = findings.as_json(), now
    return account


def cloud_account_create_bucket(*, access: TeamAccess, account: CloudAccount) -> CloudAccount:
    """Create the account's missing export bucket with its own keys (an admin's choice on the
    account's page), then check the account again. Only a bucket that does not exist: one that
    belongs to another account is never touched. Refusals and failures are recorded too."""
    require(access, Capability.MANAGE_TEAM, target=account)
    account = CloudAccount.objects.select_related("team").get(pk=account.pk, team=access.team)
    if not account.is_valid:  # a retired account is not valid either
        raise BucketError(NOT_VALIDATED_MESSAGE.format(label=account.label))
    bucket, names = account.export_bucket, {"bucket": account.export_bucket, "label": account.label,
                                            "region": account.region}
    creds = credentials_for(account, purpose="create export bucket")
    refusal = ""
    with outscale.record_request_ids() as request_ids:
        try:
            ownership = outscale.bucket_ownership(creds=creds, bucket=bucket)
            if ownership.owned:
                refusal = BUCKET_NOT_MISSING_MESSAGE.format(**names)
            elif ownership.exists:
                refusal = BUCKET_OTHERS_MESSAGE.format(**names)
            else:
                outscale.ensure_bucket(creds=creds, bucket=bucket)
        except outscale.CloudError as exc:
            refusal = BUCKET_NOT_CREATED_MESSAGE.format(bucket=bucket, reason=exc.user_message)
    outcome = "success" if not refusal else "failed"
    record(action="cloud_account.bucket_created", outcome=outcome, actor=access.user, team=access.team,
           target=account, cloud_request_ids=list(request_ids),
           details={"bucket": bucket, "region": account.region, **({"reason": refusal} if refusal else {})})
    account = cloud_account_preflight(account=account, actor=access.user, creds=creds)
    if refusal:
        raise BucketError(refusal)
    return account
