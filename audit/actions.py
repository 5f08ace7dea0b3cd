"""Every action the portal writes to the audit trail, declared once.

An action names what happened, in dotted past tense (``share.approved``). ``recorder.record``
refuses a name that is not declared here, so every event in the trail has a meaning a reader can
look up; the review page's action filter and the README's table are made from this list.

A new action: declare it below (its meaning, in words a compliance officer reads; the kind of
target its events name; whether it is a denial), record it from the service, then rewrite the
README's table with ``.venv/bin/python tests/render_audit_actions.py``.

Outcomes: most actions are also recorded ``denied`` when the attempt was refused (a
self-approval is ``share.approved``, denied) and some ``failed`` when the cloud or a check said
no. A *denial* is an action whose every event is a refusal (``access.denied``): the recorder
refuses it with any other outcome.

Plain Python on purpose: the README's generator reads it without Django.
"""

import re
from typing import NamedTuple

# Irregular past participles allowed as the last word of an action.
_IRREGULAR = (
    "read|sent|set|reset|shown|run|rerun|begun|done|undone|seen|taken|given|held|made|lost|built|won|"
    "hidden|chosen|written|withdrawn|drawn|kept|left|put|cut|split|shut|spent|bound|found|paid|sold|"
    "told|got|brought|sought|torn|broken|frozen|spoken|stolen|driven|overridden|forgotten|forbidden|gone|led"
)
# Dotted, lowercase, at least two parts, and the last part contains a past-tense
# word: ``share.approved``, ``membership.role_changed``, ``auth.locked_out``, ``audit.read``.
ACTION_RE = re.compile(
    r"^(?:[a-z][a-z0-9_]*\.)+(?:[a-z0-9]+_)*(?:[a-z0-9]*ed|" + _IRREGULAR + r")(?:_[a-z0-9]+)*$"
)
ACTION_MAX_LENGTH = 64  # AuditEvent.action

# What an event is about: a model's label (``AuditTarget.type``, or ``_meta.label_lower``).
SHARE = "transfers.share"
RECIPIENT = "transfers.recipient"  # an import from a pasted link has no share
EXPORT = "transfers.export"
# Retention of a recipient team's copies of a family (distribution/services/retention*.py).
RETENTION_POLICY = "distribution.retentionpolicy"
RETENTION_RUN = "distribution.retentionrun"
RETENTION_COPY = "distribution.inventoryentry"
RETENTION_VERSION = "distribution.familyversion"
CLOUD_ACCOUNT = "accounts.cloudaccount"
TEAM = "accounts.team"
MEMBERSHIP = "accounts.membership"
USER = "accounts.user"
TRAIL = "audit.trail"
API_TOKEN = "api.apitoken"
WEBHOOK = "webhooks.webhookendpoint"
EVENT = "audit.auditevent"
CHECKPOINT = "audit.checkpoint"
FAMILY = "distribution.family"
FAMILY_VERSION = "distribution.familyversion"
SUBSCRIPTION = "distribution.subscription"
STANDING_APPROVAL = "distribution.standingapproval"
INVENTORY_ENTRY = "distribution.inventoryentry"  # a copy in a recipient account, as the inventory knows it
RECIPIENT_GROUP = "distribution.recipientgroup"
GROUP_MEMBER = "distribution.groupmember"
NONE = ""  # the event names no target (AuditEvent.target_type is blank)
ANY = "*"  # whatever was refused: a team, a share, an account (or nothing, for a page)


class Action(NamedTuple):
    name: str
    meaning: str
    targets: tuple[str, ...]  # the target types its events name (NONE: some name none)
    denial: bool = False  # every event of it is a refusal (outcome "denied")
    # Where the name is put together at run time rather than written out, for the test that
    # looks every declared name up in the source.
    built_in: str = ""


# The part of a name before its first dot, and what the review page calls the group.
GROUPS = {
    "share": "Shares",
    "export": "Exports",
    "import": "Imports",
    "link": "Links",
    "grant": "Launch permissions",
    "retention": "Retention of copies",
    "team": "Teams",
    "membership": "Members",
    "cloud_account": "Cloud accounts",
    "credential": "Cloud keys",
    "user": "People",
    "auth": "Sign-in",
    "twofactor": "Two-factor sign-in",
    "api_token": "API tokens",
    "webhook": "Webhooks",
    "family": "Image families",
    "family_version": "Family versions",
    "subscription": "Family subscriptions",
    "standing_approval": "Standing approvals",
    "latest": "Latest pointer",
    "inventory": "Inventory of copies",
    "recipient_group": "Recipient groups",
    "group_member": "Recipient group members",
    "access": "Refusals",
    "audit": "The audit trail",
}

_DECLARED = (
    # Shares: asking to copy an image, deciding, and how the share ends.
    Action("share.requested", "Someone asked to copy an image to other accounts (denied: the export "
           "bucket is not the account's).", (SHARE, CLOUD_ACCOUNT)),
    Action("share.approved", "An approver allowed a requested copy, or a family's standing approval did (the details "
           "name it and its signer) (denied: self-approval, a role or step-up check).", (SHARE,)),
    Action("share.rejected", "An approver refused a requested copy.", (SHARE,)),
    Action("share.cancelled", "The requester or an admin withdrew a share before its export finished (the "
           "details say whether its export was cancelled with it).", (SHARE,)),
    Action("share.expired", "A share ended unused: nobody decided in time, or its manifest link "
           "passed its 7-day deadline.", (SHARE,)),
    Action("share.preflight_checked", "The source side of a waiting share was checked with its account's keys "
           "before approval: OOS, the export bucket, the OMI quota, a dry run of the export (failed: a check found "
           "a problem).", (SHARE,)),
    Action("share.offered", "The copy was offered to its recipients: the export finished, or (same Region) "
           "the launch permission was granted, or the image can be copied directly.", (SHARE,)),
    Action("share.reexport_requested", "The source team asked for a fresh export of an expired or "
           "failed share.", (SHARE,)),
    Action("share.completed", "Every recipient's import ended and at least one succeeded.", (SHARE,),
           built_in="transfers/services/share_state.py: f\"share.{state}\" for a final state"),
    Action("share.failed", "Every recipient's import failed.", (SHARE,),
           built_in="transfers/services/share_state.py: f\"share.{state}\" for a final state"),
    # Exports: the image written to the source account's bucket.
    Action("export.requested", "An approved share needs a new export of its image.", (SHARE,)),
    Action("export.reused", "An approved share reuses an export of the same image still valid.", (SHARE,)),
    Action("export.copy_started", "A public or shared image is first being copied into the source "
           "account, the only way to export it.", (EXPORT,)),
    Action("export.copy_completed", "That copy is ready and its export starts.", (EXPORT,)),
    Action("export.started", "OUTSCALE accepted the export task.", (EXPORT,)),
    Action("export.completed", "The export finished: the manifest is in the bucket.", (EXPORT,)),
    Action("export.failed", "The export could not be made (denied: the bucket was refused).", (EXPORT,)),
    Action("export.cancelled", "Every share that needed an export still in flight was withdrawn, so the "
           "export was cancelled (DeleteExportTask; failed: OUTSCALE would not, and it ran to its end).",
           (EXPORT,)),
    Action("export.cleaned", "An export no share needs any more was deleted from the bucket.", (EXPORT,)),
    Action("export.cleanup_failed", "Deleting an unneeded export from the bucket failed.", (EXPORT,)),
    Action("export.copy_deleted", "The temporary copy made for an export was deleted.", (EXPORT,)),
    Action("export.copy_delete_failed", "Deleting that temporary copy failed.", (EXPORT,)),
    # Imports: the copy made in each recipient account.
    Action("import.preflight_checked", "A recipient team's job checked its account for a waiting share, with "
           "that account's own keys: the copy's name free, the OMI quota, a dry run of the copy (failed: a check "
           "found a problem).", (SHARE,)),
    Action("import.accepted", "A recipient team accepted an offered copy (denied: it was no longer "
           "offered).", (SHARE, RECIPIENT)),
    Action("import.auto_accepted", "An offered copy was accepted automatically: the recipient team "
           "accepts every incoming copy (a team setting).", (SHARE,)),
    Action("import.declined", "A recipient team declined an offered copy.", (SHARE, RECIPIENT)),
    Action("import.started", "OUTSCALE accepted the import (or, same Region, the copy) into the recipient "
           "account.", (SHARE, RECIPIENT)),
    Action("import.tagged", "A same-Region copy, still being made, was tagged with where it came from "
           "(CreateTags), so that the look that sees it available completes it without a call.", (SHARE, RECIPIENT)),
    Action("import.completed", "The image is available in the recipient account.", (SHARE, RECIPIENT)),
    Action("import.failed", "The import did not succeed; the reason is in the details.", (SHARE, RECIPIENT)),
    Action("import.expired", "A copy offered in the source's Region that nobody accepted before the approval's "
           "lifetime ended expired; its launch permission was then removed.", (SHARE,)),
    Action("import.refused", "The portal refused to start an import, before any cloud call: the "
           "target account changed since approval, or its keys are not validated.", (SHARE, RECIPIENT),
           denial=True),
    Action("import.retried", "A recipient team started a failed import again (denied: it could not be "
           "retried).", (SHARE, RECIPIENT)),
    # Launch permissions: the same-Region copy (granted, copied, removed) and "launch permission only".
    Action("grant.added", "The source account granted launch permission on the source image to the "
           "same-Region recipients' OUTSCALE accounts (UpdateImage: one call per share, or one for several "
           "shares of the same image granted together; each share records its own event with the call's "
           "RequestIds).", (SHARE,)),
    Action("grant.failed", "OUTSCALE refused the launch permission: the copies waiting for it failed.", (SHARE,)),
    Action("grant.removed", "The launch permission was taken back (UpdateImage Removals): the copies it "
           "served ended, the share ended, or the source team revoked it.", (SHARE,)),
    Action("grant.released", "A share was done with a launch permission that another share's grant still "
           "needs: no call; the permission goes with the last grant that needs it.", (SHARE,)),
    Action("grant.remove_failed", "OUTSCALE refused to take a launch permission back; the portal tries again "
           "later.", (SHARE,)),
    Action("grant.revoke_requested", "Someone of the source team revoked a launch permission (denied: it was "
           "not in place, or a copy by it was under way).", (SHARE,)),
    # Manifest links, for accounts outside the portal.
    Action("link.revealed", "The source team displayed a share's pre-signed manifest link (a bearer "
           "secret).", (SHARE,)),
    Action("link.import_requested", "A team pasted a manifest link to import an image from "
           "outside.", (RECIPIENT,)),
    Action("link.acl_granted", "An external account of the source's Region was granted read on an "
           "export's manifest and snapshots (an object ACL, instead of a link; failed: OOS refused, or the "
           "OOS user ID given is another account's).", (SHARE,)),
    Action("link.acl_removed", "That read was taken back: the manifest's deadline passed or its files were "
           "deleted (failed: OOS kept refusing, and the portal stopped trying).", (SHARE,)),
    # Retention (distribution/services/retention.py, retention_deletes.py): a recipient team's rule for a family's
    # copies; a run proposes copies, an approver who did not set the rule confirms, then each is deleted once.
    Action("retention.policy_created", "An approver or admin of a recipient team set a retention rule for a family's "
           "copies in the team's accounts (keep the last N versions, delete after end of life).", (RETENTION_POLICY,)),
    Action("retention.policy_changed", "A retention rule changed (the before/after are in the details); a run still "
           "waiting for confirmation under the old rule was cancelled with it.", (RETENTION_POLICY,)),
    Action("retention.end_of_life_set", "The source team set or cleared a family version's end-of-life date, after "
           "which recipient teams' retention may propose its copies.", (RETENTION_VERSION,)),
    Action("retention.proposed", "A retention run proposed copies to delete (by the reconciler's sweep, or someone's "
           "\"Propose now\"); nothing is deleted before an approver confirms.", (RETENTION_RUN,)),
    Action("retention.confirmed", "An approver of the recipient team confirmed a run: its copies are deleted "
           "(denied: they set the rule themselves, or their role came from that person or after the rule).",
           (RETENTION_RUN,)),
    Action("retention.cancelled", "A run waiting for confirmation was cancelled: by an approver, or because its "
           "rule changed.", (RETENTION_RUN,)),
    Action("retention.copy_deleted", "A proposed copy was deleted with its account's keys (DeleteImage), or found "
           "already gone (failed: OUTSCALE refused; the details say why).", (RETENTION_COPY,)),
    Action("retention.copy_kept", "A confirmed copy was kept after all: checked right before deleting, it was "
           "pinned, carried the latest tag, or was in use by a launch permission or a share.", (RETENTION_COPY,)),
    Action("retention.completed", "Every copy of a confirmed run was deleted, found gone, kept or failed.",
           (RETENTION_RUN,)),
    # Teams and their people.
    Action("team.created", "A team was created.", (TEAM,)),
    Action("team.settings_changed", "A team's settings changed (the before/after are in the "
           "details).", (TEAM,)),
    Action("membership.added", "A person was added to a team with a role.", (MEMBERSHIP,)),
    Action("membership.role_changed", "A member's role changed.", (MEMBERSHIP,)),
    Action("membership.removed", "A person was removed from a team.", (MEMBERSHIP,)),
    Action("membership.reinvited", "A member who never chose a password was sent a new invitation link.",
           (MEMBERSHIP,)),
    # Cloud accounts and their keys.
    Action("cloud_account.created", "A cloud account and its API keys were registered.", (CLOUD_ACCOUNT,)),
    Action("cloud_account.changed", "A cloud account's keys or settings changed (denied: transfers "
           "depend on it).", (CLOUD_ACCOUNT,)),
    Action("cloud_account.validated", "The account's keys were checked with OUTSCALE (failed: they "
           "were refused).", (CLOUD_ACCOUNT,)),
    Action("cloud_account.preflight_checked", "The account was checked for what would stop its exports or "
           "copies: OOS access, its export bucket, its OMI quota (failed: a check found a problem).",
           (CLOUD_ACCOUNT,)),
    Action("cloud_account.bucket_created", "An admin had the account's missing export bucket created with its "
           "keys (failed: it exists already, belongs to another account, or OUTSCALE refused).", (CLOUD_ACCOUNT,)),
    Action("cloud_account.ownership_confirmed", "A second admin or approver confirmed the account is "
           "the team's own (denied: not allowed to).", (CLOUD_ACCOUNT,)),
    Action("cloud_account.retired", "A used cloud account was retired and its keys wiped (denied: "
           "transfers in flight).", (CLOUD_ACCOUNT,)),
    Action("cloud_account.deleted", "A cloud account nothing had used was deleted.", (CLOUD_ACCOUNT,)),
    Action("credential.used", "A cloud account's stored keys were opened for calls to OUTSCALE (failed: "
           "they would not open).", (CLOUD_ACCOUNT,)),
    Action("credential.rotated", "A stored secret was re-encrypted under the active key (failed: it "
           "would not open).", (CLOUD_ACCOUNT, RECIPIENT, WEBHOOK)),
    # People and sign-in.
    Action("user.password_changed", "A person changed their password.", (USER,)),
    Action("user.password_reset", "A person set a new password from an emailed link.", (USER,)),
    Action("user.access_changed", "An operator changed a person's active, staff, superuser or "
           "compliance flag in the admin.", (USER,)),
    Action("auth.logged_in", "A person signed in.", (USER,)),
    Action("auth.logged_out", "A person signed out.", (USER,)),
    Action("auth.login_failed", "A sign-in failed (the person named, or a fingerprint of what was "
           "typed).", (USER, NONE)),
    Action("auth.locked_out", "Sign-in was locked after repeated failures (the person named, or a "
           "fingerprint).", (USER, NONE), denial=True),
    Action("twofactor.enrolled", "A person registered an authenticator device.", (USER,)),
    Action("twofactor.verified", "A person confirmed a two-factor code.", (USER,)),
    Action("twofactor.failed", "A wrong two-factor code was entered.", (USER,)),
    Action("twofactor.removed", "An authenticator device was removed, by its owner or an "
           "operator.", (USER,)),
    # API tokens (api/tokens.py). Each event an API request records also names its token under "via".
    Action("api_token.created", "Someone created an API token for a team (personal or the team's service "
           "token), with its role and expiry; the token itself is shown once and never recorded.", (API_TOKEN,)),
    Action("api_token.revoked", "An API token was revoked: by its owner or a team admin.", (API_TOKEN,)),
    # Webhook endpoints (webhooks/services.py). Deliveries are not events: each endpoint's delivery log has them.
    Action("webhook.created", "A team admin added a webhook endpoint (its host and events); its signing secret "
           "is shown once and never recorded.", (WEBHOOK,)),
    Action("webhook.changed", "A team admin changed a webhook endpoint's URL, description or events.", (WEBHOOK,)),
    Action("webhook.deleted", "A team admin deleted a webhook endpoint, with its messages and their log.", (WEBHOOK,)),
    Action("webhook.secret_rotated", "A team admin gave a webhook endpoint a new signing secret (the old one "
           "signs too for a while).", (WEBHOOK,)),
    Action("webhook.redelivery_requested", "A team admin asked for a webhook message to be sent again (same "
           "webhook-id, a new attempt).", (WEBHOOK,)),
    # Recipient groups (distribution/services/groups.py): named sets of accounts across teams, joined with the
    # consent of each account's own team. The group's team records its own acts, the account's team its answers.
    Action("recipient_group.created", "An approver or admin made a recipient group for the team's share requests "
           "and standing approvals.", (RECIPIENT_GROUP,)),
    Action("recipient_group.changed", "A recipient group's name or description changed (the before/after are in the "
           "details).", (RECIPIENT_GROUP,)),
    Action("recipient_group.deleted", "A recipient group was deleted with its invitations and members (denied: a "
           "standing approval names it).", (RECIPIENT_GROUP,)),
    Action("group_member.invited", "The group's team invited an account to join its recipient group; the account's "
           "own team answers.", (GROUP_MEMBER,)),
    Action("group_member.joined", "An approver or admin of the account's own team accepted the invitation (an "
           "account of the group's own team joins when invited; denied: the invitation was no longer "
           "waiting).", (GROUP_MEMBER,)),
    Action("group_member.declined", "An approver or admin of the account's own team declined the invitation "
           "(denied: it was no longer waiting).", (GROUP_MEMBER,)),
    Action("group_member.left", "The account's own team took it out of a recipient group (denied: it was not in "
           "it).", (GROUP_MEMBER,)),
    Action("group_member.removed", "The group's team took an account out of its recipient group, or withdrew its "
           "invitation.", (GROUP_MEMBER,)),
    # The latest pointer and the inventory of copies (distribution/services/latest.py, inventory.py): calls made with
    # the recipient account's own keys, in that account's team's trail.
    Action("latest.moved", "A family's latest tag moved to a new version's copy in a recipient account (CreateTags "
           "on it, DeleteTags on the previous latest copy; failed: the cloud refused the tags).", (INVENTORY_ENTRY,)),
    Action("latest.kept", "An older version's copy completed after a newer one: it got the family tag only, and the "
           "latest tag stayed on the newer copy (failed: the cloud refused the tag).", (INVENTORY_ENTRY,)),
    Action("inventory.refreshed", "A recipient account's copies were confirmed in the cloud with one tag-filtered "
           "ReadImages (counts in the details; failed: the account could not be read).", (CLOUD_ACCOUNT,)),
    Action("inventory.copy_lost", "A copy the portal made was found deleted, or failed, in its account.",
           (INVENTORY_ENTRY,)),
    Action("inventory.orphan_found", "An image tagged by the portal, but unknown to it, was found in a recipient "
           "account.", (INVENTORY_ENTRY,)),
    # Image families and their subscriptions (distribution/services/families.py, subscriptions.py, discovery.py).
    Action("family.declared", "Someone of the source team declared an image family: a source account and the "
           "name pattern or tag that finds its versions.", (FAMILY,)),
    Action("family.archived", "The source team archived a family: no more versions are looked for or "
           "shared.", (FAMILY,)),
    Action("family_version.found", "A sweep (or someone's scan) found a new available image of a family in its "
           "source account and gave it the next version number.", (FAMILY_VERSION,)),
    Action("family_version.shared", "A family's new version was shared automatically, under its standing approval "
           "(one share, every recipient it covers).", (FAMILY_VERSION,)),
    Action("family_version.waited", "A family's new version was not shared: no valid standing approval (or the "
           "share could not be asked for); the reason is in the details.", (FAMILY_VERSION,)),
    Action("family_version.skipped", "A family's version will not be shared: a newer version came before it was "
           "released, or the family was archived.", (FAMILY_VERSION,)),
    Action("subscription.created", "A recipient team subscribed a family with some of its accounts (a standing "
           "approval signed before does not cover them).", (SUBSCRIPTION,)),
    Action("subscription.changed", "A recipient team changed the accounts of its subscription: the family's "
           "standing approval stops until a new one is signed.", (SUBSCRIPTION,)),
    Action("subscription.ended", "A recipient team ended its subscription: its accounts receive no more "
           "versions.", (SUBSCRIPTION,)),
    # Standing approvals and automatic releases (distribution/services/approvals.py, releases.py).
    Action("standing_approval.signed", "An approver of the source team signed a family's standing approval: the "
           "exact recipient accounts (ids and Regions), an expiry and a maximum number of versions (denied: they "
           "declared the family or set up a subscription it covers, their role came from the declarer or after the "
           "family, no fresh two-factor code, or the list changed since the page was shown).",
           (STANDING_APPROVAL, FAMILY)),
    Action("standing_approval.stopped", "A standing approval stopped: an approver stopped it, a new one replaced "
           "it, what it covers changed (a subscription, a group member, an account re-keyed, moved or retired), its "
           "signer left the approvers, or the family was archived.", (STANDING_APPROVAL,)),
    Action("standing_approval.expired", "A standing approval reached its expiry: the family's next versions wait "
           "for a new signature.", (STANDING_APPROVAL,)),
    Action("standing_approval.exhausted", "A standing approval released its maximum number of versions: the "
           "family's next versions wait for a new signature.", (STANDING_APPROVAL,)),
    # Refusals and the trail itself.
    Action("access.denied", "Someone was refused a page or an action: a missing role, another team's "
           "object, a form without its CSRF token, too many requests.", (ANY,), denial=True),
    Action("audit.read", "Someone read the audit trail: a list of events or one event.", (TRAIL, EVENT)),
    Action("audit.exported", "Someone downloaded events of the audit trail (CSV or JSON Lines).", (TRAIL,)),
    Action("audit.checkpointed", "The chain's head was signed and stored outside the database.", (CHECKPOINT,)),
)

ACTIONS: dict[str, Action] = {action.name: action for action in _DECLARED}


def group_of(name: str) -> str:
    return name.split(".", 1)[0]


def grouped() -> list[tuple[str, str, list[Action]]]:
    """(prefix, group label, its actions) in declaration order, for the filter and the README."""
    groups: dict[str, list[Action]] = {}
    for action in ACTIONS.values():
        groups.setdefault(group_of(action.name), []).append(action)
    return [(prefix, GROUPS[prefix], members) for prefix, members in groups.items()]


def _check() -> None:
    # At import: a bad declaration fails every start, not the first event that uses it.
    if len(ACTIONS) != len(_DECLARED):
        raise ValueError("audit/actions.py declares an action twice.")
    for action in _DECLARED:
        if len(action.name) > ACTION_MAX_LENGTH or not ACTION_RE.match(action.name):
            raise ValueError(f"Audit action {action.name!r} must be dotted lowercase past tense.")
        if group_of(action.name) not in GROUPS:
            raise ValueError(f"Audit action {action.name!r} has no group in audit.actions.GROUPS.")
        if not action.meaning.strip() or "\n" in action.meaning:
            raise ValueError(f"Audit action {action.name!r} needs a one-line meaning.")
        if ANY in action.targets and len(action.targets) > 1:
            raise ValueError(f"Audit action {action.name!r}: ANY stands alone.")


_check()
