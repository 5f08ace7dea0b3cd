"""INS-01 and INS-04, tried as an insider would: an approval binds the recipients' real OUTSCALE
accounts and Regions and the source's export bucket, and nothing runs outside what was bound.

Real sandbox over HTTP, real RQ jobs, real PostgreSQL. A row "re-keyed behind the portal's back"
stands for what a team admin could do before (or through any path around the services' refusal).
"""

from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from accounts import services as account_services
from accounts import vault
from accounts.models import CloudAccount, Team
from audit.models import AuditEvent
from sandbox.world import Bucket
from tests import workers
from tests.transfer_world import access, approve, request_share
from transfers import errors
from transfers.models import Export, Recipient, Share
from transfers.services import binding, import_offers, reconcile
from transfers.services import requests as share_requests

pytestmark = pytest.mark.django_db(transaction=True)

ALPHA, DELTA, GAMMA, OUTSCALE_US = "111122223333", "444455556666", "333344445555", "900000000002"


def _state(share):
    return Share.objects.get(pk=share.pk).state


def _ready(share):
    return lambda: _state(share) == Share.State.READY


def _rekey_behind_the_portal(cloud, account, name, *, region=None):
    """Point ``account``'s row at the sandbox account ``name`` (keys, id, Region), validated."""
    entry = cloud.account(name)
    ids = {"team_id": account.team.public_id, "object_id": account.public_id}
    CloudAccount.objects.filter(pk=account.pk).update(
        access_key_sealed=vault.seal(entry["access_key"], field="access_key", **ids),
        secret_key_sealed=vault.seal(entry["secret_key"], field="secret_key", **ids),
        account_id=entry["account_id"], region=region or entry["region"], validation_status="valid")


def _create_images(cloud, *account_ids):
    return sum(cloud.counters(account_id).get("CreateImage", 0) for account_id in account_ids)


def _refused(recipient):
    return AuditEvent.objects.filter(action="import.refused", outcome="denied",
                                     details__recipient=str(recipient.public_id))


# --- INS-01: the recipient account changes after the approval ------------------------------------


def test_it_refuses_to_import_into_an_account_re_keyed_after_the_approval(flow, cloud):
    share = request_share(flow, cloud)
    approve(flow, share)
    workers.run_jobs(until=_ready(share))
    recipient = Recipient.objects.get(share=share)
    assert (recipient.bound_account_id, recipient.bound_region) == (DELTA, "us-east-2")

    # The recipient team's admin swaps delta's keys for another OUTSCALE account in the same Region.
    _rekey_behind_the_portal(cloud, flow.delta, "outscale-us-east-2")
    with pytest.raises(errors.ShareError) as info:
        import_offers.recipient_accept(access=access(flow.dst_member, flow.dest), recipient=recipient)

    message = errors.CHANGED_SINCE_APPROVAL.format(
        label="delta", what=f"now OUTSCALE account {OUTSCALE_US}, approved {DELTA}")
    assert info.value.messages == [message]
    recipient.refresh_from_db()
    assert (recipient.state, recipient.state_message) == (Recipient.State.FAILED, message)
    assert "A new approval is needed." in message
    assert _refused(recipient).count() == 1
    workers.run_jobs(until=lambda: workers.pending_jobs() == 0)
    assert _create_images(cloud, DELTA, OUTSCALE_US) == 0


def test_it_refuses_to_import_into_an_account_moved_to_another_region(flow, cloud):
    share = request_share(flow, cloud)
    approve(flow, share)
    workers.run_jobs(until=_ready(share))
    recipient = Recipient.objects.get(share=share)

    _rekey_behind_the_portal(cloud, flow.delta, "beta")  # beta's keys, eu-west-2
    with pytest.raises(errors.ShareError) as info:
        import_offers.recipient_accept(access=access(flow.dst_member, flow.dest), recipient=recipient)

    assert "now in Region eu-west-2, approved in us-east-2" in info.value.messages[0]
    assert Recipient.objects.get(pk=recipient.pk).state == Recipient.State.FAILED
    assert _refused(recipient).count() == 1
    assert _create_images(cloud, DELTA, "222233334444") == 0


def test_it_refuses_an_accepted_import_whose_account_changed_before_its_job_ran(flow, cloud):
    share = request_share(flow, cloud)
    approve(flow, share)
    workers.run_jobs(until=_ready(share))
    recipient = Recipient.objects.get(share=share)
    import_offers.recipient_accept(access=access(flow.dst_member, flow.dest), recipient=recipient)
    _rekey_behind_the_portal(cloud, flow.delta, "outscale-us-east-2")

    workers.run_jobs(until=lambda: Recipient.objects.get(pk=recipient.pk).state == Recipient.State.FAILED)

    assert "changed after the approval" in Recipient.objects.get(pk=recipient.pk).state_message
    assert _refused(recipient).count() == 1
    assert _create_images(cloud, DELTA, OUTSCALE_US) == 0


def test_it_refuses_the_auto_accepted_hand_off_into_a_re_keyed_account(flow, cloud):
    Team.objects.filter(pk=flow.dest.pk).update(auto_accept_incoming=True)
    share = request_share(flow, cloud, accounts=[flow.delta, flow.gamma])
    approve(flow, share)
    _rekey_behind_the_portal(cloud, flow.delta, "outscale-us-east-2")

    workers.run_jobs(until=lambda: _state(share) == Share.State.COMPLETED or
                     set(share.recipients.values_list("state", flat=True)) == {"failed", "completed"})

    delta_in = Recipient.objects.get(share=share, target_account=flow.delta)
    gamma_in = Recipient.objects.get(share=share, target_account=flow.gamma)
    assert delta_in.state == Recipient.State.FAILED and "changed after the approval" in delta_in.state_message
    assert gamma_in.state == Recipient.State.COMPLETED  # the unchanged account still gets its copy
    assert _refused(delta_in).count() == 1
    assert _create_images(cloud, DELTA, OUTSCALE_US) == 0


def test_it_refuses_a_retry_into_an_account_whose_keys_are_no_longer_validated(flow, cloud):
    share = request_share(flow, cloud)
    approve(flow, share)
    workers.run_jobs(until=_ready(share))
    cloud.faults.fail_import("web-copy", comment="disk image is corrupt")
    recipient = Recipient.objects.get(share=share)
    import_offers.recipient_accept(access=access(flow.dst_member, flow.dest), recipient=recipient)
    workers.run_jobs(until=lambda: Recipient.objects.get(pk=recipient.pk).state == Recipient.State.FAILED)
    CloudAccount.objects.filter(pk=flow.delta.pk).update(validation_status="invalid")
    recipient.refresh_from_db()

    with pytest.raises(errors.ShareError) as info:
        import_offers.recipient_retry(access=access(flow.dst_member, flow.dest), recipient=recipient)

    assert "its keys are not validated" in info.value.messages[0]
    assert _refused(recipient).count() == 1
    assert cloud.counters(DELTA).get("CreateImage") == 1  # the first, failed attempt only


def test_it_leaves_pasted_link_imports_alone(flow, cloud):
    recipient = Recipient(kind=Recipient.Kind.LINK, team=flow.dest, target_account=flow.delta)
    assert binding.import_refusal(recipient) == ""


# --- INS-01: keys and Region cannot change under transfers in flight ------------------------------


@pytest.mark.parametrize("change", [
    {"access_key": "SBXNEWNEWNEWNEWNEW01", "secret_key": "N" * 40},
    {"region": "eu-west-2"},
])
def test_it_refuses_to_re_key_or_move_a_recipient_account_with_a_transfer_in_flight(flow, cloud, change):
    request_share(flow, cloud)
    before = CloudAccount.objects.get(pk=flow.delta.pk)

    with pytest.raises(account_services.TeamError) as info:
        account_services.cloud_account_update(access=access(flow.dst_admin, flow.dest), account=flow.delta,
                                              **change)

    assert info.value.messages == [account_services.ACCOUNT_IN_FLIGHT_MESSAGE.format(label="delta", count=1)]
    after = CloudAccount.objects.get(pk=flow.delta.pk)
    assert (after.access_key_sealed, after.region, after.account_id, after.validation_status) == \
        (before.access_key_sealed, before.region, before.account_id, before.validation_status)
    event = AuditEvent.objects.get(action="cloud_account.changed")
    assert event.outcome == "denied" and event.details["reason"] == "transfers_in_flight"


def test_it_refuses_to_re_key_the_source_account_of_an_approved_share(flow, cloud):
    share = request_share(flow, cloud)
    approve(flow, share)
    with pytest.raises(account_services.TeamError):
        account_services.cloud_account_update(access=access(flow.src_admin, flow.source), account=flow.alpha,
                                              access_key="SBXNEWNEWNEWNEWNEW01", secret_key="N" * 40)
    assert CloudAccount.objects.get(pk=flow.alpha.pk).account_id == ALPHA
    assert AuditEvent.objects.filter(action="cloud_account.changed", outcome="denied").count() == 1


def test_it_re_keys_an_account_once_its_transfers_have_ended(flow, cloud):
    share = request_share(flow, cloud)
    share_requests.share_reject(access=access(flow.src_approver, flow.source), share=share, digest=share.digest)
    account = account_services.cloud_account_update(access=access(flow.dst_admin, flow.dest), account=flow.delta,
                                                    access_key="SBXNEWNEWNEWNEWNEW01", secret_key="N" * 40)
    assert account.account_id == "" and account.validation_status == "pending"


def test_an_in_flight_share_keeps_the_bucket_it_bound_when_the_account_changes_bucket(flow, cloud):
    share = request_share(flow, cloud)
    approve(flow, share)
    workers.run_jobs(until=_ready(share))
    # Allowed while in flight: the share keeps exporting to the bucket its approval bound.
    account_services.cloud_account_update(access=access(flow.src_admin, flow.source), account=flow.alpha,
                                          export_bucket="alpha-elsewhere")
    Export.objects.filter(shares=share).update(manifest_deadline=timezone.now() - timedelta(seconds=1))
    reconcile.reconcile()
    reconcile.share_reexport(access=access(flow.src_member, flow.source), share=Share.objects.get(pk=share.pk))
    workers.run_jobs(until=_ready(share))
    assert list(Export.objects.filter(account=flow.alpha).values_list("bucket", flat=True)) == ["alpha-exports"] * 2


# --- What the digest binds, and the approval of a request whose accounts moved ---------------------


def test_the_digest_binds_the_bucket_and_the_accounts_real_ids_and_regions(flow, cloud):
    share = request_share(flow, cloud)
    recipients = list(share.recipients.select_related("target_account"))
    original = share_requests.request_digest(share, recipients)
    assert original == share.digest

    share.export_bucket = "someone-elses"
    assert share_requests.request_digest(share, recipients) != original
    share.export_bucket = "alpha-exports"
    recipients[0].bound_account_id = OUTSCALE_US
    assert share_requests.request_digest(share, recipients) != original
    recipients[0].bound_account_id, recipients[0].bound_region = DELTA, "eu-west-2"
    assert share_requests.request_digest(share, recipients) != original
    recipients[0].bound_region = "us-east-2"
    share.source_account.account_id = GAMMA
    assert share_requests.request_digest(share, recipients) != original
    share.source_account.account_id, share.source_account.region = ALPHA, "us-east-2"
    assert share_requests.request_digest(share, recipients) != original


def test_it_refuses_to_approve_a_request_whose_recipient_was_re_keyed_since(flow, cloud):
    share = request_share(flow, cloud)
    _rekey_behind_the_portal(cloud, flow.delta, "outscale-us-east-2")

    with pytest.raises(errors.ShareConflict) as info:
        approve(flow, share)

    assert info.value.messages == [errors.CHANGED_SINCE_REQUEST.format(
        label="delta", what=f"now OUTSCALE account {OUTSCALE_US}, approved {DELTA}")]
    assert _state(share) == Share.State.REQUESTED and not Export.objects.exists()
    event = AuditEvent.objects.get(action="share.approved")
    assert event.outcome == "denied" and event.details["reason"] == "changed_since_request"


def test_it_still_approves_a_request_made_before_approvals_bound_accounts(flow, cloud):
    share = request_share(flow, cloud)
    # As the row looks when it was asked for before this change: no binding, the old digest.
    Share.objects.filter(pk=share.pk).update(export_bucket="")
    share.recipients.update(bound_account_id="", bound_region="")
    share.refresh_from_db()
    Share.objects.filter(pk=share.pk).update(digest=share_requests._legacy_digest(share))
    share.refresh_from_db()

    approve(flow, share)

    share.refresh_from_db()
    assert share.export_bucket == "alpha-exports" and share.approval_expires_at
    assert list(share.recipients.values_list("bound_account_id", "bound_region")) == [(DELTA, "us-east-2")]


# --- INS-04: the export bucket is the source account's own ---------------------------------------


@pytest.mark.parametrize(("bucket", "message"), [
    ("gamma-exports", errors.BUCKET_NOT_OWNED.format(bucket="gamma-exports", label="alpha")),
    ("nobody-has-this", errors.BUCKET_MISSING.format(bucket="nobody-has-this", label="alpha", region="eu-west-2")),
])
def test_it_refuses_a_request_whose_export_bucket_is_not_the_source_accounts(flow, cloud, bucket, message):
    CloudAccount.objects.filter(pk=flow.alpha.pk).update(export_bucket=bucket)
    flow.alpha.refresh_from_db()

    with pytest.raises(errors.ShareError) as info:
        request_share(flow, cloud)

    assert info.value.messages == [message]
    assert not Share.objects.exists()
    event = AuditEvent.objects.get(action="share.requested")
    assert event.outcome == "denied" and event.details["bucket"] == bucket
    assert cloud.counters(ALPHA).get("CreateImageExportTask", 0) == 0


def test_it_fails_the_export_when_the_bucket_changed_hands_before_it_started(flow, cloud):
    share = request_share(flow, cloud)
    approve(flow, share)  # the export job is queued, not run
    with cloud.world.lock:  # alpha's bucket is deleted, and gamma creates one of the same name
        del cloud.world.buckets[("eu-west-2", "alpha-exports")]
        cloud.world.buckets[("eu-west-2", "alpha-exports")] = Bucket("alpha-exports", "eu-west-2", GAMMA,
                                                                      timezone.now())

    workers.run_jobs(until=lambda: _state(share) == Share.State.FAILED)

    share.refresh_from_db()
    assert share.state_message.startswith("Nothing was exported: The export bucket alpha-exports belongs to another")
    event = AuditEvent.objects.get(action="export.failed")
    assert event.outcome == "denied" and event.details["bucket"] == "alpha-exports"
    counters = cloud.counters(ALPHA)
    assert counters.get("CreateImageExportTask", 0) == 0 and counters.get("CreateImage", 0) == 0


def test_the_approver_sees_the_bucket_and_the_recipients_real_accounts(flow, cloud, client):
    share = request_share(flow, cloud, accounts=[flow.delta, flow.gamma])
    client.force_login(flow.src_approver)
    url = reverse("transfers:share-detail", kwargs={"team_id": flow.source.public_id, "share_id": share.public_id})
    page = client.get(url).content.decode()
    assert "alpha-exports" in page
    for account_id, region in ((DELTA, "us-east-2"), (GAMMA, "eu-west-2")):
        assert account_id in page and region in page


# --- The approval's lifetime -----------------------------------------------------------------------


def test_an_approval_lasts_the_teams_lifetime_and_a_later_re_export_needs_a_new_one(flow, cloud):
    Team.objects.filter(pk=flow.source.pk).update(approval_lifetime_days=10)
    share = request_share(flow, cloud)
    approve(flow, share)
    share.refresh_from_db()
    assert share.approval_expires_at == share.decided_at + timedelta(days=10)
    workers.run_jobs(until=_ready(share))
    Export.objects.filter(shares=share).update(manifest_deadline=timezone.now() - timedelta(seconds=1))
    reconcile.reconcile()
    assert _state(share) == Share.State.EXPIRED
    Share.objects.filter(pk=share.pk).update(approval_expires_at=timezone.now() - timedelta(minutes=1))
    share.refresh_from_db()

    with pytest.raises(errors.ShareError) as info:
        reconcile.share_reexport(access=access(flow.src_member, flow.source), share=share)

    assert "a new approval is needed" in info.value.messages[0]
    assert _state(share) == Share.State.EXPIRED
    assert Export.objects.filter(account=flow.alpha).count() == 1
    event = AuditEvent.objects.get(action="share.reexport_requested")
    assert event.outcome == "denied" and event.details["reason"] == "approval_lapsed"


def test_the_approval_lifetime_is_a_team_setting_between_1_and_365_days(flow):
    admin = access(flow.src_admin, flow.source)
    team = account_services.team_settings_change(access=admin, approval_lifetime_days=90)
    assert team.approval_lifetime_days == 90
    assert AuditEvent.objects.get(action="team.settings_changed").details["after"] == {"approval_lifetime_days": 90}
    for bad in (0, 366):
        with pytest.raises(account_services.TeamError):
            account_services.team_settings_change(access=admin, approval_lifetime_days=bad)
    assert Team.objects.get(pk=flow.source.pk).approval_lifetime_days == 90
