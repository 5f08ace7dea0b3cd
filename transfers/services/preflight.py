"""Failures found before anything long starts: the checks an approver sees on a waiting request.

When a share waits for an approver (share_request), and again when an approver opens it and the
last checks are older than PREFLIGHT_FRESH_SECONDS (``preflight_refresh``):

- the source account, in the source team's job (``share_preflight``): its keys reach OOS, the
  export bucket the request bound is still its own, its OMI quota has room for the copy-first
  image when one is needed, and OUTSCALE accepts a dry run of the export's first create
  (CreateImageExportTask, or the copy-first CreateImage);
- each recipient account of a team in the portal, in a job of its own (``recipient_preflight``)
  with that account's own keys, recorded in that team's trail: the copy's name is free there
  (ReadImages), the copy fits its OMI quota (ReadQuotas; the approver is told whether it fits, not
  how full the account is), and OUTSCALE accepts a dry run of the copy (CreateImage).

The request itself never opens another team's keys (INS-09): it only queues that team's job. What
the checks found is kept on the rows (Share.preflight, Recipient.preflight: one entry per check,
each with a status and a sentence) and shown on the share page. It informs the decision and
blocks nothing: the export and each import check again for themselves when they start.
"""

from datetime import timedelta

from django.db import transaction
from django.utils import timezone

import outscale
from accounts import preflight as checks
from accounts import vault
from accounts.keys import credentials_for
from accounts.models import CloudAccount
from audit.recorder import record
from transfers import scheduling
from transfers.models import Recipient, Share
from transfers.services.exports import DEFAULT_DISK_FORMAT

PREFLIGHT_FRESH_SECONDS = 300  # an approver opening the share re-runs older checks

KEYS_NOT_VALID = "The keys of {label} are not validated, so nothing could be checked (and nothing would run there)."
KEYS_UNOPENED = "The stored keys of {label} could not be opened, so nothing could be checked."
EXPORT_DRY_RUN_OK = "OUTSCALE accepts a dry run of the export ({action})."
COPY_DRY_RUN_OK = "OUTSCALE accepts a dry run of the copy into {label} (CreateImage)."
DRY_RUN_KEYS = "OUTSCALE refused these keys for {action} ({reason}): the step would fail the same way."
DRY_RUN_QUOTA = "OUTSCALE would refuse {action}: the account's OMI quota is full."
DRY_RUN_NAME = "OUTSCALE would refuse the copy: an image named {name} already exists in {label}."
DRY_RUN_IMAGE_GONE = "OUTSCALE no longer finds the image {image_id} in the source account: the export would fail."
DRY_RUN_OTHER = "OUTSCALE answered the dry run of {action} with: {reason}"
DRY_RUN_UNKNOWN = "The dry run of {action} could not be made: {reason}"
NAME_FREE = "The name {name} is free in {label}."
NAME_TAKEN = ("An image named {name} already exists in {label}: OUTSCALE would refuse the copy there. Ask for a new "
              "request with another copy name.")
NAME_UNKNOWN = "Whether the name {name} is free in {label} could not be checked: {reason}"

PREFLIGHT_PREFIX = "omiportal/pre-flight/"  # a dry run's OsuPrefix: nothing is written


def preflight_begin(*, share: Share) -> None:
    """Queue the checks of a share waiting for approval, once the caller's transaction commits:
    the source's, and one job per recipient account of a team in the portal."""
    stamp = int(timezone.now().timestamp() // PREFLIGHT_FRESH_SECONDS)
    scheduling.enqueue("transfers.jobs.share_preflight_job", str(share.public_id),
                       job_id=f"share-preflight-{share.public_id}-{stamp}", queue=scheduling.BACKGROUND)
    for public_id in Recipient.objects.filter(share=share, kind=Recipient.Kind.TEAM).values_list("public_id",
                                                                                                flat=True):
        scheduling.enqueue("transfers.jobs.recipient_preflight_job", str(public_id),
                           job_id=f"recipient-preflight-{public_id}-{stamp}", queue=scheduling.BACKGROUND)


def preflight_stale(share: Share, now=None) -> bool:
    """Whether a waiting share's checks are missing or older than PREFLIGHT_FRESH_SECONDS."""
    if share.state != Share.State.REQUESTED:
        return False
    checked = share.preflight_checked_at
    return checked is None or (now or timezone.now()) - checked > timedelta(seconds=PREFLIGHT_FRESH_SECONDS)


def preflight_refresh(*, share: Share) -> bool:
    """An approver opened a waiting share: queue its checks again if they are stale. True if queued."""
    if not preflight_stale(share):
        return False
    with transaction.atomic():
        preflight_begin(share=share)
    return True


def _usable_keys(account: CloudAccount, findings: checks.Findings):
    """The account's opened keys, or None (and why, in ``findings``) when nothing should be called."""
    if not account.is_valid:
        # Keys OUTSCALE refused are never tried again: four bad signatures lock the account.
        findings.add("keys", checks.PROBLEM, KEYS_NOT_VALID.format(label=account.label))
        return None
    try:
        return credentials_for(account, purpose="pre-flight checks")
    except vault.VaultError:
        findings.add("keys", checks.PROBLEM, KEYS_UNOPENED.format(label=account.label))
        return None


def _dry_run(findings: checks.Findings, creds, action: str, ok: str, *, label: str = "", name: str = "",
             image_id: str = "", **params) -> None:
    """One dry run, its answer in words (``ok`` when OUTSCALE would accept the call)."""
    words = {"action": action, "label": label, "name": name, "image_id": image_id}
    try:
        outscale.dry_run(creds=creds, action=action, **params)
    except outscale.CredentialError as exc:
        findings.add("dry_run", checks.PROBLEM, DRY_RUN_KEYS.format(reason=exc.user_message.rstrip("."), **words))
    except outscale.QuotaExceeded:
        findings.add("dry_run", checks.PROBLEM, DRY_RUN_QUOTA.format(**words))
    except outscale.Conflict:
        findings.add("dry_run", checks.PROBLEM, DRY_RUN_NAME.format(**words))
    except outscale.NotFound as exc:
        if image_id:  # the source's own image: gone
            findings.add("dry_run", checks.PROBLEM, DRY_RUN_IMAGE_GONE.format(**words))
        else:  # a recipient cannot see the source before its copy starts (a grant, an export): as expected
            findings.add("dry_run", checks.OK, ok.format(**words), answer=exc.code or "")
    except outscale.RetryLater as exc:
        findings.add("dry_run", checks.UNKNOWN, DRY_RUN_UNKNOWN.format(reason=exc.user_message, **words))
    except outscale.CloudError as exc:
        findings.add("dry_run", checks.WARNING, DRY_RUN_OTHER.format(reason=exc.user_message, **words))
    else:
        findings.add("dry_run", checks.OK, ok.format(**words))


def _save(model, row, findings: checks.Findings, request_ids, *, action: str, team, target, details: dict) -> None:
    now = timezone.now()
    result = {**findings.as_json(), "checked_at": now.isoformat()}
    fields = {"preflight": result, **({"preflight_checked_at": now} if model is Share else {})}
    with transaction.atomic():
        # Kept only while the share still waits: a decision made meanwhile stands as it was made.
        waiting = {"state": Share.State.REQUESTED} if model is Share else {"share__state": Share.State.REQUESTED}
        if not model.objects.filter(pk=row.pk, **waiting).update(**fields):
            return
        record(action=action, outcome="failed" if findings.problems else "success", actor=None, team=team,
               target=target, cloud_request_ids=list(request_ids),
               details={**details, "checks": {check["name"]: check["status"] for check in findings.checks}})


def share_preflight(*, share_id) -> None:
    """The source side of a waiting share, with the source account's keys (the source team's job)."""
    share = Share.objects.select_related("team", "source_account__team").filter(public_id=share_id).first()
    if share is None or share.state != Share.State.REQUESTED:
        return
    account = share.source_account
    findings = checks.Findings()
    with outscale.record_request_ids() as request_ids:
        creds = _usable_keys(account, findings)
        if creds is not None:
            checks.check_storage(account, creds, findings, bucket=share.export_bucket)
            copy_first = share.source_image_relation != "owned"
            if copy_first:
                checks.check_quota(creds, findings)
                _dry_run(findings, creds, "CreateImage", EXPORT_DRY_RUN_OK, image_id=share.source_image_id,
                         SourceImageId=share.source_image_id, SourceRegionName=account.region,
                         ImageName=f"omiportal-copy-{share.public_id}")
            else:
                _dry_run(findings, creds, "CreateImageExportTask", EXPORT_DRY_RUN_OK, image_id=share.source_image_id,
                         ImageId=share.source_image_id,
                         OsuExport={"DiskImageFormat": share.disk_format or DEFAULT_DISK_FORMAT,
                                    "OsuBucket": share.export_bucket or account.export_bucket,
                                    "OsuPrefix": PREFLIGHT_PREFIX})
    _save(Share, share, findings, request_ids, action="share.preflight_checked", team=share.team, target=share,
          details={"account": account.label, "bucket": share.export_bucket})


def recipient_preflight(*, recipient_id) -> None:
    """One recipient account of a waiting share, with that account's own keys, recorded in its
    team's trail (its team's job: the source team never opens these keys)."""
    recipient = (Recipient.objects.select_related("share", "team", "target_account__team")
                 .filter(public_id=recipient_id, kind=Recipient.Kind.TEAM).first())
    if recipient is None or recipient.share is None or recipient.share.state != Share.State.REQUESTED:
        return
    account, name = recipient.target_account, recipient.image_name
    words = {"name": name, "label": account.label}
    findings = checks.Findings()
    with outscale.record_request_ids() as request_ids:
        creds = _usable_keys(account, findings)
        if creds is not None:
            try:
                taken = outscale.find_image_by_name(creds=creds, account_id=account.account_id, name=name)
                findings.add("name", checks.PROBLEM if taken else checks.OK,
                             (NAME_TAKEN if taken else NAME_FREE).format(**words))
            except outscale.CloudError as exc:
                findings.add("name", checks.UNKNOWN, NAME_UNKNOWN.format(reason=exc.user_message, **words))
            checks.check_quota(creds, findings, label=account.label)
            if not findings.problems:  # the dry run would only say the same again
                _dry_run(findings, creds, "CreateImage", COPY_DRY_RUN_OK, **words,
                         SourceImageId=recipient.share.source_image_id, SourceRegionName=account.region,
                         ImageName=name)
    _save(Recipient, recipient, findings, request_ids, action="import.preflight_checked", team=recipient.team,
          target=recipient.share, details={"recipient": str(recipient.public_id), "account": account.label,
                                           "image_name": name})
