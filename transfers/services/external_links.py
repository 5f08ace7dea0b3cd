"""Manifest links across the portal's edge: revealing one to the source team (for external
recipients), and importing from a link that reached a team outside the portal. The pasted text
is checked by `transfers/link_checks.py`."""

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.utils import timezone

import outscale
from accounts import vault
from accounts.access import require
from accounts.keys import credentials_for
from accounts.models import CloudAccount
from accounts.roles import Capability
from accounts.selectors import TeamAccess
from audit import recorder
from audit.recorder import record
from transfers import errors, rules
from transfers.link_checks import MSG_UNSIGNED_REGION, link_fingerprint, validate_manifest_url
from transfers.models import Recipient, Share
from transfers.services.import_offers import import_begin
from transfers.services.share_state import share_refresh

UNSIGNED_PATH_LIFETIME = timedelta(days=7)
REASON_PASTED_LINK = "A pre-signed manifest link, pasted."
REASON_PASTED_PATH = ("A manifest path without a signature, pasted: the image's owner granted this account read on "
                      "the manifest and its snapshots (an object ACL).")


@dataclass(frozen=True)
class RevealedLink:
    url: str
    expires_at: datetime

    def __repr__(self):
        return f"RevealedLink(expires_at={self.expires_at.isoformat()})"


def link_reveal(*, access: TeamAccess, share: Share, recipient: Recipient) -> RevealedLink:
    """Pre-sign the manifest now, for the source team to hand to an external account. Audited."""
    require(access, Capability.REQUEST_SHARE, target=share)
    share = Share.objects.select_related("export__account__team").get(pk=share.pk)
    refusal = rules.link_refusal(access=access, share=share, recipient=recipient)
    if refusal:
        raise errors.ShareError(refusal)
    export = share.export
    with outscale.record_request_ids() as request_ids:
        creds = credentials_for(export.account, purpose="reveal link")
        link = outscale.presign_manifest(creds=creds, bucket=export.bucket, key=export.manifest_key,
                                         not_after=export.manifest_deadline)
    with recorder.atomic():  # the share is locked (share_refresh) after link.revealed is recorded
        # Handing the link over is all the portal can do for an external account.
        Recipient.objects.filter(pk=recipient.pk, state=Recipient.State.OFFERED).update(
            state=Recipient.State.COMPLETED, completed_at=timezone.now(), decided_by=access.user,
            decided_at=timezone.now())
        record(action="link.revealed", actor=access.user, team=access.team, target=share,
               cloud_request_ids=list(request_ids),
               details={"recipient": str(recipient.public_id), "fingerprint": link_fingerprint(link.url),
                        "expires_at": link.expires_at.isoformat()})
        share_refresh(share_id=share.pk)
    return RevealedLink(url=link.url, expires_at=link.expires_at)


def link_import_create(*, access: TeamAccess, account: CloudAccount, url: str, image_name: str,
                       description: str = "") -> Recipient:
    """Import an image into one of the team's accounts from a pasted manifest link."""
    require(access, Capability.ACCEPT_SHARE)
    if account.team_id != access.team.pk or not account.is_valid:
        raise errors.ShareError(errors.RECIPIENT_INVALID.format(label=account.label))
    link = validate_manifest_url(url)
    if not link.signed and link.region != account.region:
        raise errors.ShareError(MSG_UNSIGNED_REGION.format(region=link.region))
    try:
        outscale.validate_image_name(image_name)
    except ValueError as exc:
        raise errors.ShareError(str(exc)) from None
    if outscale.find_image_by_name(creds=credentials_for(account, purpose="check image name"),
                                   account_id=account.account_id, name=image_name):
        raise errors.ShareError(errors.NAME_TAKEN.format(name=image_name, label=account.label))
    with recorder.atomic():
        # An unsigned path never expires itself; the manifest behind it dies at most 7 days after its export.
        expires_at = link.expires_at or timezone.now() + UNSIGNED_PATH_LIFETIME
        method, reason = (Recipient.Method.LINK, REASON_PASTED_LINK) if link.signed \
            else (Recipient.Method.OBJECT_ACL, REASON_PASTED_PATH)
        recipient = Recipient(kind=Recipient.Kind.LINK, team=access.team, target_account=account,
                              state=Recipient.State.OFFERED, image_name=image_name, method=method,
                              method_reason=reason, link_fingerprint=link.fingerprint, link_expires_at=expires_at)
        recipient.link_sealed = vault.seal(link.url, team_id=access.team.public_id, object_id=recipient.public_id,
                                           field="link")
        recipient.save()
        record(action="link.import_requested", actor=access.user, team=access.team, target=recipient,
               details={"account": account.label, "image_name": image_name, "link_region": link.region,
                        "fingerprint": link.fingerprint, "link_expires_at": expires_at.isoformat(),
                        "link_form": link.form,
                        "description": description})
        import_begin(recipient=recipient, actor=access.user)
    return recipient


__all__ = ["RevealedLink", "link_import_create", "link_reveal", "share_refresh"]
