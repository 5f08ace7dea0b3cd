"""The share page (and the inbox) shows an action's button exactly when its service takes the action.

One table: for each rule (transfers/rules.py) a few shares in the states that matter, and for
each a row of people across both teams and every role. Each person opens the page as their team
sees it, then tries the action the way its view does (the view's scoped fetch, then the service,
rolled back); the two answers must be the same.
"""

from datetime import timedelta

import pytest
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.http import Http404
from django.urls import reverse
from django.utils import timezone

from accounts.models import Role
from tests import factories
from tests.transfer_world import access, make_transfer_world, request_share
from transfers import selectors
from transfers.models import Export, Recipient, Share
from transfers.services import external_links, import_offers, reconcile
from transfers.services import requests as share_requests
from transfers.services.requests import ExternalRecipient

EXTERNAL = ExternalRecipient("999988887777", "us-west-1")
SOURCE_PEOPLE = ("src_member", "src_member_2", "src_approver", "src_admin", "src_auditor", "src_late_approver")
RECIPIENT_PEOPLE = ("dst_member", "dst_approver", "dst_admin", "dst_auditor")


@pytest.fixture
def w(cloud, db):
    w = make_transfer_world(cloud)
    for team, prefix in ((w.source, "src"), (w.dest, "dst")):
        w.__dict__[f"{prefix}_auditor"] = factories.add_member(
            team, factories.make_user(f"auditor@{prefix}.test"), Role.AUDITOR).user
    w.src_member_2 = factories.add_member(w.source, factories.make_user("member2@src.test")).user
    return w


# --- Shares in the states that matter -------------------------------------------------------------------


def _set(share, **fields):
    Share.objects.filter(pk=share.pk).update(**fields)
    return share


def _requested(w, cloud, *, requester=None):
    return request_share(w, cloud, externals=[EXTERNAL], requester=requester)


def _decided(w, cloud, state, **fields):
    """Approved by src_approver, then moved to ``state`` (no export yet)."""
    share = _requested(w, cloud)
    now = timezone.now()
    return _set(share, state=state, decided_by=w.src_approver, decided_at=now,
                **{"approval_expires_at": now + timedelta(days=30), **fields})


def _exported(w, cloud, state, recipients, *, export_state=Export.State.COMPLETED, deadline=timedelta(days=3),
              export_fields=None, **fields):
    """Approved, with an export of its own in ``export_state``; every recipient in ``recipients``."""
    share = _decided(w, cloud, state, **fields)
    now = timezone.now()
    done = export_state == Export.State.COMPLETED
    export = Export.objects.create(
        account=w.alpha, source_image_id=share.source_image_id, state=export_state, bucket=share.export_bucket,
        prefix=f"omiportal/{share.public_id}/", manifest_key=f"omiportal/{share.public_id}/manifest" if done else "",
        manifest_deadline=now + deadline if done else None, completed_at=now if done else None,
        **(export_fields or {}))
    _set(share, export=export)
    share.recipients.update(state=recipients, started_at=now)
    return share


def _recipient_failed(w, cloud, **kwargs):
    share = _exported(w, cloud, Share.State.FAILED, Recipient.State.FAILED, **kwargs)
    share.recipients.update(state_message="OUTSCALE could not import the image.")
    return share


S, R, E = Share.State, Recipient.State, Export.State
SHARES = {
    "requested": _requested,
    "requested by an approver": lambda w, cloud: _requested(w, cloud, requester=w.src_approver),
    "requested, past its deadline": lambda w, cloud: _set(
        _requested(w, cloud), approval_deadline=timezone.now() - timedelta(minutes=1)),
    "expired unanswered": lambda w, cloud: _set(_requested(w, cloud), state=S.EXPIRED),
    "approved": lambda w, cloud: _decided(w, cloud, S.APPROVED),
    "cancelled": lambda w, cloud: _set(_requested(w, cloud), state=S.CANCELLED),
    "rejected": lambda w, cloud: _decided(w, cloud, S.REJECTED),
    "exporting": lambda w, cloud: _exported(w, cloud, S.EXPORTING, R.WAITING, export_state=E.RUNNING),
    "export failed": lambda w, cloud: _exported(w, cloud, S.FAILED, R.WAITING, export_state=E.FAILED),
    "export failed, approval lapsed": lambda w, cloud: _exported(
        w, cloud, S.FAILED, R.WAITING, export_state=E.FAILED, approval_expires_at=timezone.now() - timedelta(days=1)),
    "expired": lambda w, cloud: _exported(w, cloud, S.EXPIRED, R.EXPIRED, deadline=-timedelta(minutes=1)),
    "ready": lambda w, cloud: _exported(w, cloud, S.READY, R.OFFERED),
    "ready, clean-up claimed": lambda w, cloud: _exported(
        w, cloud, S.READY, R.OFFERED, export_fields={"cleanup_claimed_at": timezone.now()}),
    "ready, past the link's deadline": lambda w, cloud: _exported(
        w, cloud, S.READY, R.OFFERED, deadline=-timedelta(minutes=1)),
    "importing": lambda w, cloud: _exported(w, cloud, S.IMPORTING, R.IMPORTING),
    "import failed": _recipient_failed,
    "import failed, past the link's deadline": lambda w, cloud: _recipient_failed(w, cloud,
                                                                                  deadline=-timedelta(minutes=1)),
    "import failed, files deleted": lambda w, cloud: _recipient_failed(
        w, cloud, export_fields={"cleaned_at": timezone.now()}),
    "declined": lambda w, cloud: _exported(w, cloud, S.COMPLETED, R.DECLINED),
    "completed": lambda w, cloud: _exported(w, cloud, S.COMPLETED, R.COMPLETED),
}


# --- Each action as its view takes it ---------------------------------------------------------------------


def _source_share(a, share):
    return selectors.share_get_for_source_team(access=a, public_id=share.public_id)


def _team_recipient(a, share):
    team_row = share.recipients.get(kind=Recipient.Kind.TEAM)
    return selectors.recipient_get_for_team(access=a, public_id=team_row.public_id)


def _reveal(a, share):
    found = _source_share(a, share)
    external = share.recipients.get(kind=Recipient.Kind.EXTERNAL)
    recipient = selectors.recipient_get_for_share(access=a, share=found, public_id=external.public_id)
    external_links.link_reveal(access=a, share=found, recipient=recipient)


ACTIONS = {
    "cancel": lambda a, share: share_requests.share_cancel(access=a, share=_source_share(a, share)),
    "reexport": lambda a, share: reconcile.share_reexport(access=a, share=_source_share(a, share)),
    "approve": lambda a, share: share_requests.share_approve(
        access=a, share=_source_share(a, share), digest=share.digest, verified_at=timezone.now()),
    "reject": lambda a, share: share_requests.share_reject(
        access=a, share=_source_share(a, share), digest=share.digest, verified_at=timezone.now()),
    "accept": lambda a, share: import_offers.recipient_accept(access=a, recipient=_team_recipient(a, share)),
    "decline": lambda a, share: import_offers.recipient_decline(access=a, recipient=_team_recipient(a, share),
                                                                reason=""),
    "retry": lambda a, share: import_offers.recipient_retry(access=a, recipient=_team_recipient(a, share)),
    "reveal": _reveal,
}


def _service_allows(action, a, share) -> bool:
    try:
        with transaction.atomic():
            ACTIONS[action](a, share)
            transaction.set_rollback(True)  # each person tries the same share
    except (ValidationError, PermissionDenied, Http404):
        return False
    return True


def _button(action, team, share) -> str:
    """The form action the page's button posts to."""
    ids = {"team_id": team.public_id}
    if action in ("cancel", "reexport", "approve", "reject"):
        return reverse(f"transfers:share-{action}", kwargs={**ids, "share_id": share.public_id})
    if action == "reveal":
        external = share.recipients.get(kind=Recipient.Kind.EXTERNAL)
        return reverse("transfers:share-reveal-link",
                       kwargs={**ids, "share_id": share.public_id, "recipient_id": external.public_id})
    team_row = share.recipients.get(kind=Recipient.Kind.TEAM)
    return reverse(f"transfers:recipient-{action}", kwargs={**ids, "recipient_id": team_row.public_id})


def _pages(client, user, team, share) -> list[str]:
    """The share page as ``user``'s team sees it, and its inbox (where offers are answered too)."""
    client.force_login(user)
    detail = client.get(reverse("transfers:share-detail", kwargs={"team_id": team.public_id,
                                                                  "share_id": share.public_id}))
    inbox = client.get(reverse("transfers:inbox", kwargs={"team_id": team.public_id}))
    assert inbox.status_code == 200 and detail.status_code in (200, 404)
    return [detail.content.decode() if detail.status_code == 200 else "", inbox.content.decode()]


REQUESTER, ADMIN = {"src_member"}, {"src_admin"}
DECIDERS = {"src_approver", "src_admin"}  # not the requester, nor the approver made after the request
SOURCE_TEAM = {"src_member", "src_member_2", "src_approver", "src_admin", "src_late_approver"}
RECIPIENT_TEAM = {"dst_member", "dst_approver", "dst_admin"}
NOBODY = set()

# (action, state of the share, who may): the page and the service must agree with this, and with each other.
TABLE = [
    ("cancel", "requested", REQUESTER | ADMIN),
    ("cancel", "approved", REQUESTER | ADMIN),
    ("cancel", "exporting", REQUESTER | ADMIN),  # its export, if no other share uses it, is cancelled too
    ("cancel", "ready", NOBODY),
    ("cancel", "expired unanswered", NOBODY),
    ("cancel", "cancelled", NOBODY),
    ("reexport", "export failed", SOURCE_TEAM),
    ("reexport", "expired", SOURCE_TEAM),
    ("reexport", "expired unanswered", NOBODY),  # never approved: the page offered it, the service refused
    ("reexport", "export failed, approval lapsed", NOBODY),  # likewise
    ("reexport", "completed", NOBODY),
    ("reexport", "exporting", NOBODY),
    ("approve", "requested", DECIDERS),
    ("approve", "requested by an approver", ADMIN),
    ("approve", "requested, past its deadline", NOBODY),  # likewise, until the reconciler expired it
    ("approve", "approved", NOBODY),
    ("approve", "rejected", NOBODY),
    ("reject", "requested", DECIDERS),
    ("reject", "requested, past its deadline", NOBODY),
    ("accept", "ready", RECIPIENT_TEAM),
    ("accept", "exporting", NOBODY),
    ("accept", "importing", NOBODY),
    ("accept", "import failed", NOBODY),
    ("accept", "declined", NOBODY),
    ("decline", "ready", RECIPIENT_TEAM),
    ("decline", "importing", NOBODY),
    ("decline", "declined", NOBODY),
    ("retry", "import failed", RECIPIENT_TEAM),
    ("retry", "import failed, past the link's deadline", NOBODY),  # likewise
    ("retry", "import failed, files deleted", NOBODY),  # likewise
    ("retry", "ready", NOBODY),
    ("retry", "completed", NOBODY),
    ("reveal", "ready", SOURCE_TEAM),
    ("reveal", "completed", SOURCE_TEAM),
    ("reveal", "ready, clean-up claimed", NOBODY),  # likewise
    ("reveal", "ready, past the link's deadline", NOBODY),
    ("reveal", "exporting", NOBODY),
]


@pytest.mark.parametrize(("action", "case", "expected"), TABLE, ids=[f"{a}-{c}" for a, c, _ in TABLE])
def test_the_page_offers_an_action_exactly_when_its_service_takes_it(w, cloud, client, action, case, expected):
    share = SHARES[case](w, cloud)
    # Made an approver after the request: no second pair of eyes for it (INS-04).
    w.src_late_approver = factories.add_member(w.source, factories.make_user("late@src.test"), Role.APPROVER).user
    share.refresh_from_db()
    shown, allowed = set(), set()
    for name in (*SOURCE_PEOPLE, *RECIPIENT_PEOPLE):
        user = getattr(w, name)
        team = w.source if name.startswith("src") else w.dest
        if any(_button(action, team, share) in page for page in _pages(client, user, team, share)):
            shown.add(name)
        if _service_allows(action, access(user, team), share):
            allowed.add(name)
    assert (shown, allowed) == (expected, expected)
    assert Share.objects.get(pk=share.pk).state == share.state  # every try was rolled back
