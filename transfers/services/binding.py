"""What an approval binds, and the checks that hold a transfer to it.

An approval applies to the source account's real OUTSCALE account id and Region, its export
bucket, and each portal recipient's real account id and Region, as they were at request time
(Share.export_bucket, Recipient.bound_account_id / bound_region, all in the digest). Portal ids
alone are not enough: a team admin can re-key an account (another OUTSCALE account behind the
same row) or move it to another Region after the approval.
"""

import hashlib
import json

import outscale
from accounts.keys import credentials_for
from accounts.models import CloudAccount
from transfers import errors
from transfers.models import Recipient, Share
from transfers.services import copy_facts
from transfers.services.import_ends import import_failed


def _recipient_line(r: Recipient, account_id: str, region: str) -> list[str]:
    line = [r.kind, str(r.target_account.public_id) if r.target_account_id else "", account_id, region,
            r.external_account_id, r.external_region]
    if r.external_oos_user_id:  # what an object ACL names (object_grants.py): bound too
        line.append(r.external_oos_user_id)
    # How it gets its copy (transfers/services/methods.py) is signed too; a request made before
    # methods were chosen (a portal account by export, an external one by link) keeps its digest.
    legacy = Recipient.Method.LINK if r.kind == Recipient.Kind.EXTERNAL else Recipient.Method.EXPORT
    return line if r.method == legacy else [*line, r.method]


def digest_of(*, share: Share, recipients: list[Recipient], source: CloudAccount, bucket: str,
              bound: dict[int, tuple[str, str]]) -> str:
    """The fingerprint of a request: ``bound`` maps each portal recipient (by target account pk)
    to the (account id, Region) it stands for."""
    content = {
        "source": [str(source.public_id), source.account_id, source.region, share.source_image_id],
        "bucket": bucket,
        "copy": [share.copy_name, share.description],
        "recipients": sorted(_recipient_line(r, *bound.get(r.target_account_id, ("", ""))) for r in recipients),
    }
    if share.launch_permission_only:
        content["launch_permission_only"] = True
    if copy_facts.bound_tags(share) is not None:  # the source's tags its copies carry (older requests: none)
        content["tags"] = copy_facts.bound_tags(share)
    if share.disk_format:  # requests made before the team chose a format keep their digest
        content["disk_format"] = share.disk_format
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()


def bound_digest(share: Share, recipients: list[Recipient]) -> str:
    """The digest of what was bound at request time (what the approver is shown)."""
    bound = {r.target_account_id: (r.bound_account_id, r.bound_region) for r in recipients if r.target_account_id}
    return digest_of(share=share, recipients=recipients, source=share.source_account, bucket=share.export_bucket,
                     bound=bound)


def current_digest(share: Share) -> str:
    """The digest the same request would get from the accounts' rows as they are now."""
    source = CloudAccount.objects.get(pk=share.source_account_id)
    recipients = list(share.recipients.select_related("target_account"))
    bound = {r.target_account_id: (r.target_account.account_id, r.target_account.region)
             for r in recipients if r.target_account_id}
    return digest_of(share=share, recipients=recipients, source=source, bucket=source.export_bucket, bound=bound)


def change_since_request(share: Share) -> tuple[str, str]:
    """Which account moved since the request, and how, in words: (label, what)."""
    source = CloudAccount.objects.get(pk=share.source_account_id)
    if share.export_bucket and source.export_bucket != share.export_bucket:
        return source.label, f"export bucket {share.export_bucket} is now {source.export_bucket}"
    for r in share.recipients.filter(kind=Recipient.Kind.TEAM).select_related("target_account"):
        what = account_drift(r.target_account, r.bound_account_id, r.bound_region)
        if what:
            return r.target_account.label, what
    # The source's own account id and Region are bound only through the digest.
    return source.label, "its OUTSCALE account id or Region"


def account_drift(account: CloudAccount, account_id: str, region: str) -> str:
    """How ``account`` no longer is the (account id, Region) that was bound, in words; "" if it still is."""
    if not account_id:
        return "the approval bound no OUTSCALE account"
    if account.region != region:
        return f"now in Region {account.region}, approved in {region}"
    if account.account_id != account_id:
        return (f"now OUTSCALE account {account.account_id}, approved {account_id}" if account.account_id
                else f"its keys were replaced since account {account_id} was approved")
    if not account.is_valid:
        return "its keys are not validated"
    return ""


# --- The export bucket ---------------------------------------------------------------------------

def bucket_problem(account: CloudAccount, bucket: str, *, purpose: str) -> tuple[str, tuple[str, ...]]:
    """Why ``bucket`` may not take ``account``'s exports ("" when it may), and the cloud's request ids.

    The bucket must exist and be the account's own. A bucket that does not exist is refused
    too, rather than created: the portal never creates buckets in a team's account (the export
    itself needs an existing one), and a name left free could be taken by anyone before the
    export starts. A bucket that exists and belongs to someone else would hand the export, and
    with it the disk snapshots, to that account.
    """
    ownership = outscale.bucket_ownership(creds=credentials_for(account, purpose=purpose), bucket=bucket)
    if ownership.owned:
        return "", ownership.request_ids
    message = errors.BUCKET_NOT_OWNED if ownership.exists else errors.BUCKET_MISSING
    return message.format(bucket=bucket, label=account.label, region=account.region), ownership.request_ids


# --- Recipients: an import starts only into what was approved ------------------------------------

def is_bound(recipient: Recipient) -> bool:
    """Pasted links (kind=link) and external accounts bind no portal account."""
    return recipient.kind == Recipient.Kind.TEAM and bool(recipient.share_id)


def import_refusal(recipient: Recipient, account: CloudAccount | None = None) -> str:
    """Why this import may not start ("" when it may): its account is no longer what was
    approved, or its keys are not validated. ``account`` is the target's row as it is now
    (read here when not given)."""
    if not is_bound(recipient):
        return ""
    account = account or CloudAccount.objects.get(pk=recipient.target_account_id)
    what = account_drift(account, recipient.bound_account_id, recipient.bound_region)
    return errors.CHANGED_SINCE_APPROVAL.format(label=account.label, what=what) if what else ""


def imports_allowed(recipients: list[Recipient], *, states) -> list[Recipient]:
    """The recipients whose import may start; the others are refused (failed, one denied event
    each) without a cloud call. One query for any number of recipients."""
    accounts = CloudAccount.objects.in_bulk({r.target_account_id for r in recipients if is_bound(r)})
    allowed = []
    for recipient in recipients:
        refusal = import_refusal(recipient, accounts.get(recipient.target_account_id)) if is_bound(recipient) else ""
        if not refusal:
            allowed.append(recipient)
        else:
            refuse_import(recipient, refusal, states=states)
    return allowed


def refuse_import(recipient: Recipient, message: str, *, states) -> bool:
    """Fail the recipient without calling the cloud, with one denied event (in the caller's
    transaction, or its own). False when the recipient was no longer in ``states``."""
    return import_failed(recipient, message, states=states, action="import.refused", outcome="denied",
                         details={"bound_account_id": recipient.bound_account_id,
                                  "bound_region": recipient.bound_region})
