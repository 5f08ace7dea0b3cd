"""How each recipient gets its copy: the fastest method that keeps every control, chosen at request
time, stored on the recipient (method, method_reason) and bound in the digest the approver signs.

| recipient | source image | method |
| --- | --- | --- |
| portal account in the source's Region | owned | LAUNCH_PERMISSION: granted, copied, revoked |
| the same, "launch permission only" | owned | PERMISSION_ONLY: granted, no copy |
| portal account in the source's Region | public, or shared with it | DIRECT: it copies the image itself |
| portal account in the source's Region | shared with the source only | EXPORT (the source copies first) |
| portal account in another Region | any | EXPORT |
| external account | any | LINK (or OBJECT_ACL, external delivery) |

OUTSCALE copies within a Region only (CreateImage{SourceImageId, SourceRegionName}) and only an OMI
the copying account can see: its own, a public one, or one whose owner granted it launch
permission (UpdateImage PermissionsToLaunch). Across Regions the only way is the export.
"""

import outscale
from accounts.keys import credentials_for
from accounts.models import CloudAccount
from transfers import errors
from transfers.models import LaunchGrant, Recipient

M = Recipient.Method

REASON_LAUNCH_PERMISSION = "Same Region as the source: copied by launch permission, no export."
REASON_PERMISSION_ONLY = ("Launch permission only, as asked: the account may launch the source image until the "
                          "source team revokes it; no copy is made.")
REASON_PUBLIC = "The image is public in {region}: the account copies it directly, no export."
REASON_SHARED_VISIBLE = "The image is shared with this account too: it copies it directly, no export."
REASON_OWN_ACCOUNT = "The same OUTSCALE account as the source: it copies the image directly, no export."
REASON_ALREADY_GRANTED = ("The source account already lets this account launch the image (a permission given outside "
                          "the portal): it copies it directly; the portal grants and removes nothing.")
PERMISSION_ONLY_ALREADY = ("{account} may already launch {image}: its owner granted it outside the portal. "
                           "Launch permission only has nothing to add.")
REASON_SHARED_HIDDEN = ("Same Region, but the image is shared with the source account only: the source copies it "
                        "first and exports it.")
REASON_OTHER_REGION = ("In {region}, not the source's Region ({source_region}): OUTSCALE copies across Regions "
                       "only by export and import.")
REASON_EXTERNAL = "An account outside the portal: it receives the export's manifest link."

PERMISSION_ONLY_NEEDS_OWNED = ("Launch permission only applies to an image the source account owns; {image} is "
                               "{relation}. Share it without that option.")
PERMISSION_ONLY_NEEDS_RECIPIENT = ("Launch permission only needs at least one recipient account of the portal in "
                                   "{region}, the source's Region.")


def _same_region_team(source: CloudAccount, recipient: Recipient) -> bool:
    return recipient.kind == Recipient.Kind.TEAM and recipient.bound_region == source.region


def check_permission_only(*, source: CloudAccount, image, accounts: list[CloudAccount]) -> None:
    """"Launch permission only" grants the source image itself: the account must own it, and some
    recipient must be a portal account of its Region (the others, if any, get their copy as usual)."""
    relation = str(image.relation)
    if relation != "owned":
        raise errors.ShareError(PERMISSION_ONLY_NEEDS_OWNED.format(image=image.name, relation=relation))
    if not any(a.region == source.region for a in accounts):
        raise errors.ShareError(PERMISSION_ONLY_NEEDS_RECIPIENT.format(region=source.region))


def shared_with(*, source: CloudAccount, image, accounts: list[CloudAccount]) -> set[str]:
    """The OUTSCALE accounts a shared source image is shared with, as the source's keys are shown
    them (one ReadImages), when a portal recipient of its Region could copy it directly; empty
    otherwise (no call). An account not shown is served by export, as before."""
    if str(image.relation) != "shared" or not any(a.region == source.region for a in accounts):
        return set()
    try:
        return set(outscale.launch_permissions(creds=credentials_for(source, purpose="check who can see the image"),
                                               image_id=image.image_id).account_ids)
    except outscale.CloudError:
        return set()


def recipients_choose(*, source: CloudAccount, image, recipients: list[Recipient], permission_only: bool,
                      visible: set[str]) -> None:
    """Set ``method`` and ``method_reason`` on each (unsaved) recipient; ``image`` is the source's
    ImageSummary, ``visible`` what ``shared_with`` found."""
    # A permission the owner gave outside the portal is not the portal's to take back: such an
    # account copies directly (the revoke would otherwise remove it at the end).
    granted = set(getattr(image, "launch_account_ids", ()) or ()) - _held_by_portal(image.image_id)
    for r in recipients:
        if permission_only and r.bound_account_id in granted and _same_region_team(source, r):
            raise errors.ShareError(PERMISSION_ONLY_ALREADY.format(account=r.bound_account_id, image=image.name))
        r.method, r.method_reason = _choose(source, str(image.relation), r, permission_only, visible | granted)


def _choose(source: CloudAccount, relation: str, r: Recipient, permission_only: bool,
            visible: set[str]) -> tuple[str, str]:
    if r.kind == Recipient.Kind.EXTERNAL:
        return M.LINK, REASON_EXTERNAL
    if not _same_region_team(source, r):
        return M.EXPORT, REASON_OTHER_REGION.format(region=r.bound_region, source_region=source.region)
    if r.bound_account_id == source.account_id:
        return M.DIRECT, REASON_OWN_ACCOUNT
    if relation == "owned" and r.bound_account_id in visible:
        return M.DIRECT, REASON_ALREADY_GRANTED
    if relation == "owned":
        return (M.PERMISSION_ONLY, REASON_PERMISSION_ONLY) if permission_only \
            else (M.LAUNCH_PERMISSION, REASON_LAUNCH_PERMISSION)
    if relation == "public":
        return M.DIRECT, REASON_PUBLIC.format(region=source.region)
    if r.bound_account_id in visible:
        return M.DIRECT, REASON_SHARED_VISIBLE
    return M.EXPORT, REASON_SHARED_HIDDEN


def _held_by_portal(image_id: str) -> set[str]:
    """Accounts whose launch permission on the image the portal gave (for another share) and will take back."""
    return set(LaunchGrant.objects.filter(image_id=image_id, state__in=LaunchGrant.OPEN_STATES)
               .values_list("grantee_account_id", flat=True))


def needs_export(recipients) -> bool:
    return any(r.method in Recipient.EXPORT_METHODS for r in recipients)
