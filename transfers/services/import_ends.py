"""A recipient's life, 4 of 4: the end. An import ends COMPLETED, once a look saw its OMI
available (tagged with where it came from, many in one call, then recorded, many together), or FAILED: the cloud
said no, its step gave up (bounded.py), or the portal refused it before any cloud call
(``import.refused``, binding.py). Each end is one conditional update and one audit event; the
share's state follows and an email is queued.

Before: import_sweeps.py (the look that sees an import end) and import_starts.py (a create the
cloud refused). A declined offer ends where it is answered, in import_offers.py. The words are defined
in transfers/services/__init__.py.
"""

import logging
from collections import defaultdict

from django.utils import timezone

import outscale
from accounts.keys import credentials_for
from audit import recorder
from audit.recorder import record
from transfers import events, notifications
from transfers.models import Recipient
from transfers.services import copy_facts, polling
from transfers.services.share_state import share_refresh, shares_refresh

logger = logging.getLogger(__name__)


def share_target(recipient: Recipient):
    """What a recipient's audit events are about: its share, or itself when it came from a pasted link."""
    return recipient.share if recipient.share_id else recipient


def import_failed(recipient: Recipient, message: str, request_ids=(), *, states=(Recipient.State.IMPORTING,),
                  action: str = "import.failed", outcome: str = "failed", details: dict | None = None) -> bool:
    """End the import FAILED with ``message`` and one event (``import.refused``/denied when the
    portal refused it before any cloud call). False when it was no longer in ``states``."""
    now = timezone.now()
    with recorder.atomic():  # the share is locked (share_refresh) after the event is recorded
        if not Recipient.objects.filter(pk=recipient.pk, state__in=states).update(
                state=Recipient.State.FAILED, state_message=message[:500], next_poll_at=None, link_sealed="",
                completed_at=now, updated_at=now):
            return False
        recipient.state, recipient.state_message = Recipient.State.FAILED, message[:500]
        record(action=action, outcome=outcome, actor=None, team=recipient.team,
               target=share_target(recipient), cloud_request_ids=list(request_ids),
               details={"recipient": str(recipient.public_id), "reason": message, **(details or {})})
        share_refresh(share_id=recipient.share_id)
        events.emit("import.failed", [recipient.pk])
        notifications.later("import_ended", [recipient.pk])
    return True


def imports_complete(tagged: list[tuple[Recipient, dict, list]], read_ids) -> None:
    """Record these imports' completions and refresh their shares, in one transaction."""
    with recorder.atomic():
        done = [recipient for recipient, tags, request_ids in tagged
                if _complete(recipient, tags, [*read_ids, *request_ids])]
        shares_refresh(share_ids={recipient.share_id for recipient in done if recipient.share_id})
        events.emit("import.completed", [recipient.pk for recipient in done])
        notifications.later("import_ended", [recipient.pk for recipient in done])


RECIPIENT_TAG = "omiportal:recipient"  # on every copy the portal makes (distribution's inventory lists by it)
TAG_BATCH = 200  # image ids per CreateTags


def provenance_tags(recipient: Recipient, account) -> dict[str, str]:
    """The tags of a copy made in ``account`` (the recipient's target account): where it came from
    (the source account, and the source's tags on its team's allowlist, which the provenance tags
    always override), and the portal account it was made for.

    Equal for every copy from one source account into one account (when the sources carry equal
    tags), so the copies a look sees available together are tagged in one ``CreateTags`` (which
    gives all its ids the same tags), whatever image each came from. The source image is not a
    tag: a value per image would cost a call per image. It is written beside the portal's mark in
    the copy's Description, at the create (import_starts.py), and the portal holds it with which
    share and recipient a copy belongs to (the recipient's image id); the copy's
    ``import.completed`` event records the image id and these tags."""
    tags = {RECIPIENT_TAG: str(account.public_id)}
    if recipient.share_id:
        share = recipient.share
        tags = {**copy_facts.carried_tags(share), **tags}
        tags["omiportal:source-account"] = share.source_account.account_id
    return tags


def _batches(recipients: list[Recipient], account) -> list[tuple[dict, list[Recipient]]]:
    """The recipients by equal provenance tags, up to TAG_BATCH to a call."""
    groups: dict[tuple, list[Recipient]] = defaultdict(list)
    for recipient in recipients:
        groups[tuple(sorted(provenance_tags(recipient, account).items()))].append(recipient)
    return [(dict(key), rows[k:k + TAG_BATCH]) for key, rows in groups.items()
            for k in range(0, len(rows), TAG_BATCH)]


def imports_tag(recipients: list[Recipient], account, creds, tagged: list, *, images=None) -> None:
    """Tag these available copies (all in ``account``) with their provenance, one ``CreateTags``
    per set of equal tags (up to TAG_BATCH ids), side by side, and add each to ``tagged`` with the
    tags it got (unless the cloud asks us to come back later: those wait for the next look).

    A copy whose image, as the look read it (``images``), carries its tags already (tagged while
    it was being made, ``imports_tag_ahead``) is added without a call."""
    untagged = []
    for recipient in recipients:
        image = (images or {}).get(recipient.image_id)
        tags = provenance_tags(recipient, account)
        if image is not None and tags.items() <= dict(image.facts.tags).items():
            tagged.append((recipient, tags, []))
        else:
            untagged.append(recipient)
    batches = _batches(untagged, account)

    from transfers.services import bounded  # bounded.py imports this module: not at the top

    def tag(batch):
        tags, rows = batch
        with bounded.rows_errors(bounded.IMPORT_LOOK, rows):
            _tag(rows, tags, creds, tagged)

    polling.run_each(tag, batches, what="tag imports")


def imports_tag_ahead(recipients: list[Recipient], account) -> None:
    """Tag these copies (all in ``account``, still being made) with their provenance now, while
    the account has calls to spare, so that the look that sees one available completes it at once
    (``imports_tag`` finds its tags on the image): one ``CreateTags`` per set of equal tags, and
    each copy's ``import.tagged`` with the call's RequestIds. CreateTags sets tags, so a repeat
    changes nothing; a copy whose tagging fails here is tagged when it is seen available."""
    if not recipients:
        return
    creds = credentials_for(account, purpose="tag imports")
    for tags, rows in _batches(recipients, account):
        with outscale.record_request_ids() as request_ids:
            try:
                outscale.tag_resources(creds=creds, resource_ids=[r.image_id for r in rows], tags=tags)
            except outscale.CloudError as exc:
                logger.info("Tagging %d copies ahead failed (%s); they are tagged when seen available.", len(rows),
                            exc.user_message)
                continue
        with recorder.atomic():
            for row in rows:
                record(action="import.tagged", actor=None, team=row.team, target=share_target(row),
                       cloud_request_ids=list(request_ids),
                       details={"recipient": str(row.public_id), "image_id": row.image_id, "tags": tags})


def _tag(rows: list[Recipient], tags: dict, creds, tagged: list) -> None:
    with outscale.record_request_ids() as request_ids:
        try:
            outscale.tag_resources(creds=creds, resource_ids=[r.image_id for r in rows], tags=tags)
        except outscale.CloudError as exc:
            if exc.retryable:
                polling.postpone(rows, exc.user_message)
                return
            if len(rows) > 1:  # one image the cloud refuses must not leave the others untagged
                for row in rows:
                    _tag([row], tags, creds, tagged)
                return
            # The copy exists and works; a missing tag is worth a note, not a failure.
            tags = {"note": f"tagging failed: {exc.user_message}"}
    for row in rows:
        tagged.append((row, tags, list(request_ids)))  # list.append is atomic: threads share it


def _complete(recipient: Recipient, tags: dict, request_ids: list) -> bool:
    """IMPORTING → COMPLETED, in the caller's transaction (which then refreshes the shares);
    False if it was no longer importing. ``recipient.warnings``: how the copy differs from its
    source (copy_facts.copy_warnings, set by the look that saw it available), kept and recorded."""
    now = timezone.now()
    warnings = list(recipient.warnings or [])
    if not Recipient.objects.filter(pk=recipient.pk, state=Recipient.State.IMPORTING).update(
            state=Recipient.State.COMPLETED, completed_at=now, next_poll_at=None, state_message="", updated_at=now,
            warnings=warnings):
        return False
    record(action="import.completed", actor=None, team=recipient.team, target=share_target(recipient),
           cloud_request_ids=request_ids,
           details={"recipient": str(recipient.public_id), "image_id": recipient.image_id, "tags": tags,
                    "warnings": warnings})
    return True
