"""The rules of requesting and deciding, enforced by the services (no jobs run here)."""

from datetime import timedelta

import pytest
from django.db import IntegrityError, transaction
from django.utils import timezone

from audit.models import AuditEvent
from tests.transfer_world import access, approve, confirm_own, make_transfer_world, request_share, sandbox_account
from transfers import errors
from transfers.models import Export, Recipient, Share
from transfers.services import requests as share_requests
from transfers.services.requests import ExternalRecipient


@pytest.fixture
def w(cloud, db):
    return make_transfer_world(cloud)


def test_a_cross_team_share_waits_for_an_approver(w, cloud):
    share = request_share(w, cloud)
    assert share.state == "requested" and share.approval_required
    assert share.approval_deadline > timezone.now() + timedelta(days=6)
    assert list(share.recipients.values_list("state", flat=True)) == ["waiting"]
    event = AuditEvent.objects.get(action="share.requested")
    assert event.details["licence_confirmed"] is True and event.details["approval_required"] is True


def test_a_copy_between_own_accounts_needs_no_approval_unless_the_team_asks(w, cloud):
    # Own only once confirmed by a second person, and only with the team's setting turned off (INS-02;
    # tests/test_insider_approvals.py tries the other cases).
    own = confirm_own(w, sandbox_account(cloud, w.source, "epsilon"))
    share = request_share(w, cloud, accounts=[own], copy_name="own-copy")
    assert share.state == "exporting" and not share.approval_required
    w.source.require_approval_for_own_accounts = True
    w.source.save()
    share = request_share(w, cloud, accounts=[own], copy_name="own-copy-2")
    assert share.state == "requested"


def test_an_external_recipient_needs_approval(w, cloud):
    share = request_share(w, cloud, accounts=[], externals=[ExternalRecipient("999988887777", "us-west-1")])
    assert share.approval_required


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"accounts": []}, errors.NO_RECIPIENT),
    ({"copy_name": "x"}, "3"),
    ({"copy_name": "bad name!"}, "letters"),
])
def test_bad_requests_are_explained_and_change_nothing(w, cloud, kwargs, message):
    with pytest.raises(errors.ShareError) as info:
        request_share(w, cloud, **kwargs)
    assert message in " ".join(info.value.messages)
    assert not Share.objects.exists()


def test_the_source_account_cannot_be_a_recipient(w, cloud):
    with pytest.raises(errors.ShareError, match="source account cannot"):
        request_share(w, cloud, accounts=[w.alpha])


def test_an_account_that_refuses_shares_cannot_be_picked(w, cloud):
    w.delta.accepts_incoming_shares = False
    w.delta.save()
    with pytest.raises(errors.ShareError, match="does not accept images"):
        request_share(w, cloud)


def test_an_external_account_id_must_be_twelve_digits(w, cloud):
    with pytest.raises(errors.ShareError, match="12 digits"):
        request_share(w, cloud, accounts=[], externals=[ExternalRecipient("1234", "us-west-1")])


def test_an_image_that_no_longer_exists_is_refused(w, cloud):
    image = next(i for i in cloud.world.images.values() if i.name == "alpha-web-2025.01")
    image.state = "deleted"
    with pytest.raises(errors.ShareError, match="no longer available"):
        request_share(w, cloud)


def test_a_copy_name_taken_in_an_own_recipient_account_is_refused(w, cloud):
    # Only the team's own accounts are looked at (with its own keys); another team's account is the
    # other team's business, found when its import starts (tests/test_insider_trail.py, INS-09).
    epsilon = sandbox_account(cloud, w.source, "epsilon")
    with pytest.raises(errors.ShareError, match="already exists in epsilon"):
        request_share(w, cloud, accounts=[epsilon], copy_name="epsilon-secure-base")


def test_the_licence_must_be_confirmed(w, cloud):
    with pytest.raises(errors.ShareError, match="licences"):
        share_requests.share_request(
            access=access(w.src_member, w.source), source_account=w.alpha, image_id="ami-x", accounts=[w.delta],
            externals=[], copy_name="web-copy", description="", reason="r", licence_confirmed=False)


def test_a_requester_cannot_approve_their_own_request(w, cloud):
    share = request_share(w, cloud, requester=w.src_approver)
    with pytest.raises(errors.ShareError, match=errors.SELF_APPROVAL):
        approve(w, share, approver=w.src_approver)
    assert Share.objects.get(pk=share.pk).state == "requested"
    assert AuditEvent.objects.filter(action="share.approved", outcome="denied").exists()


def test_the_database_refuses_a_self_approval_written_directly(w, cloud):
    share = request_share(w, cloud)
    with pytest.raises(IntegrityError), transaction.atomic():
        Share.objects.filter(pk=share.pk).update(decided_by=share.requested_by)


def test_a_member_cannot_approve(w, cloud):
    from django.core.exceptions import PermissionDenied

    share = request_share(w, cloud, requester=w.src_admin)
    with pytest.raises(PermissionDenied):
        approve(w, share, approver=w.src_member)


def test_only_one_of_two_approvals_wins(w, cloud):
    share = request_share(w, cloud)
    stale_copy = Share.objects.get(pk=share.pk)
    approve(w, share)
    with pytest.raises(errors.ShareConflict, match="no longer waiting"):
        share_requests.share_approve(access=access(w.src_admin, w.source), share=stale_copy,
                                     digest=stale_copy.digest)
    assert AuditEvent.objects.filter(action="share.approved", outcome="success").count() == 1
    assert Share.objects.get(pk=share.pk).decided_by == w.src_approver


def test_an_approval_applies_only_to_what_the_approver_saw(w, cloud):
    share = request_share(w, cloud)
    with pytest.raises(errors.ShareConflict, match="changed after you opened it"):
        share_requests.share_approve(access=access(w.src_approver, w.source), share=share, digest="0" * 64)
    assert Share.objects.get(pk=share.pk).state == "requested"


def test_a_request_left_waiting_expires_and_cannot_be_approved(w, cloud):
    share = request_share(w, cloud)
    later = timezone.now() + timedelta(days=8)
    assert share_requests.share_expire_stale(now=later) == 1
    share.refresh_from_db()
    assert share.state == "expired"
    assert set(share.recipients.values_list("state", flat=True)) == {"expired"}
    with pytest.raises(errors.ShareConflict, match="no longer waiting"):
        approve(w, share)


def test_a_rejection_closes_the_share(w, cloud):
    share = request_share(w, cloud)
    share_requests.share_reject(access=access(w.src_approver, w.source), share=share, digest=share.digest,
                                comment="not this one")
    share.refresh_from_db()
    assert share.state == "rejected" and share.decision_comment == "not this one"
    assert set(Recipient.objects.filter(share=share).values_list("state", flat=True)) == {"cancelled"}


def test_the_requester_can_cancel_before_the_export_starts(w, cloud):
    share = request_share(w, cloud)
    share_requests.share_cancel(access=access(w.src_member, w.source), share=share)
    assert Share.objects.get(pk=share.pk).state == "cancelled"
    with pytest.raises(errors.ShareConflict, match="can be cancelled"):
        share_requests.share_cancel(access=access(w.src_member, w.source), share=share)


def test_a_share_whose_export_has_ended_cannot_be_cancelled(w, cloud):
    # While the export is in flight, withdrawing cancels it (tests/test_export_cancel.py); once it
    # has completed and the copy is offered, the share can no longer be withdrawn.
    share = request_share(w, cloud)
    approve(w, share)
    share.refresh_from_db()
    Export.objects.filter(pk=share.export_id).update(state=Export.State.COMPLETED)
    Share.objects.filter(pk=share.pk).update(state=Share.State.READY)
    with pytest.raises(errors.ShareConflict):
        share_requests.share_cancel(access=access(w.src_member, w.source), share=share)
    assert Share.objects.get(pk=share.pk).state == Share.State.READY
