"""External delivery by object ACL (transfers/services/object_grants.py, object_revokes.py): an external
account of the source's Region that gave its OOS user ID is granted read on the manifest and the
snapshots it lists, imports from the plain OOS path with its own keys, and loses the read at the
deadline or when the files are deleted. Real sandbox over HTTP, real RQ jobs, real database."""

import threading
from datetime import timedelta

import pytest
from botocore.exceptions import ClientError
from django.db import connection
from django.utils import timezone

import outscale
from audit.models import AuditEvent
from audit.verify import verify_chain
from outscale.storage import ACL_PROBE_NAME
from tests import workers
from tests.fixtures_sandbox import gateway_for
from tests.transfer_world import approve, request_share
from transfers import errors
from transfers.models import Export, Recipient, Share
from transfers.services import object_grants, object_revokes, polling, reconcile
from transfers.services.cleanup import export_cleanup
from transfers.services.requests import ExternalRecipient

pytestmark = pytest.mark.django_db(transaction=True)

BETA, GAMMA, DELTA = "222233334444", "333344445555", "444455556666"


def beta_external(cloud, *, user_id=None):
    return ExternalRecipient(account_id=BETA, region="eu-west-2",
                             oos_user_id=user_id or cloud.account("beta")["canonical_id"])


def _recipient(share, account_id=BETA):
    return Recipient.objects.select_related("share__export").get(share=share, external_account_id=account_id)


def granted_share(flow, cloud, externals=None):
    share = request_share(flow, cloud, accounts=[], externals=externals or [beta_external(cloud)])
    approve(flow, share)
    workers.run_jobs(until=lambda: not Recipient.objects.filter(
        share=share, method=Recipient.Method.OBJECT_ACL, state__in=Recipient.OPEN_STATES).exists())
    return Share.objects.select_related("export").get(pk=share.pk)


def can_read(oos, name, bucket, key) -> bool:
    try:
        oos(name).get_object(Bucket=bucket, Key=key)["Body"].read()
    except ClientError as exc:
        assert exc.response["Error"]["Code"] == "AccessDenied"
        return False
    return True


def test_the_method_is_chosen_at_request_time_and_bound_in_the_digest(flow, cloud):
    share = request_share(flow, cloud, accounts=[], externals=[
        beta_external(cloud), ExternalRecipient(account_id=DELTA, region="us-east-2")])

    same_region, other = _recipient(share), _recipient(share, DELTA)
    assert same_region.method == Recipient.Method.OBJECT_ACL and "OOS user ID" in same_region.method_reason
    assert other.method != Recipient.Method.OBJECT_ACL
    assert same_region.external_oos_user_id == cloud.account("beta")["canonical_id"]
    before = share.digest
    Recipient.objects.filter(pk=same_region.pk).update(external_oos_user_id=cloud.account("gamma")["canonical_id"])
    from transfers.services.binding import current_digest  # the digest signs the id the grant will name

    assert current_digest(Share.objects.get(pk=share.pk)) != before


@pytest.mark.parametrize(
    ("external", "expected"),
    [
        pytest.param(ExternalRecipient(account_id=DELTA, region="us-east-2", oos_user_id="a" * 64),
                     "OOS_USER_ID_OTHER_REGION", id="another region"),
        pytest.param(ExternalRecipient(account_id=BETA, region="eu-west-2", oos_user_id="not one!"),
                     "OOS_USER_ID_INVALID", id="malformed"),
    ],
)
def test_a_request_refuses_an_oos_user_id_that_cannot_serve(flow, cloud, external, expected):
    from transfers.services import requests as share_requests

    with pytest.raises(errors.ShareError) as caught:
        request_share(flow, cloud, accounts=[], externals=[external])

    assert caught.value.messages == [getattr(share_requests, expected).format(
        account_id=external.account_id, region="eu-west-2")]
    assert not Share.objects.exists()


def test_the_external_account_is_granted_read_and_imports_from_the_plain_path(flow, cloud, oos, oapi):
    share = granted_share(flow, cloud)
    recipient, export = _recipient(share), share.export

    assert recipient.state == Recipient.State.COMPLETED and recipient.acl_granted_at is not None
    assert recipient.acl_removed_at is None and "granted" in recipient.state_message
    # The manifest and every snapshot it lists, to beta only; nothing outside the export.
    listed = [o["Key"] for o in oos("alpha").list_objects_v2(Bucket=export.bucket, Prefix=export.prefix)["Contents"]]
    assert export.manifest_key in listed and len(listed) >= 2
    assert not any(ACL_PROBE_NAME in key for key in listed)  # the probe is gone
    for key in listed:
        assert can_read(oos, "beta", export.bucket, key)
        assert not can_read(oos, "gamma", export.bucket, key)
    grants = oos("alpha").get_object_acl(Bucket=export.bucket, Key=export.manifest_key)["Grants"]
    readers = [g["Grantee"] for g in grants if g["Permission"] == "READ"]
    assert [(r["ID"], r["DisplayName"]) for r in readers] == [(recipient.external_oos_user_id, BETA)]

    event = AuditEvent.objects.get(action="link.acl_granted")
    assert event.outcome == "success" and event.cloud_request_ids
    assert event.details["account_id"] == BETA and event.details["objects"] == len(listed)
    assert "X-Amz" not in str(event.details) and "Signature" not in str(event.details)

    # The recipient's own keys import from the unsigned full path, as OUTSCALE's guide says.
    path = outscale.object_path(region="eu-west-2", bucket=export.bucket, key=export.manifest_key)
    assert "?" not in path
    beta = gateway_for(cloud, cloud.account("beta"))
    image = beta.CreateImage(FileLocation=path, ImageName="from-the-acl")["Image"]
    assert image["AccountId"] == BETA
    gamma = gateway_for(cloud, cloud.account("gamma"))
    with pytest.raises(Exception):  # noqa: B017, PT011 - the sandbox's 4074: no access to the object
        gamma.CreateImage(FileLocation=path, ImageName="not-granted")
    assert verify_chain().ok


def test_an_oos_user_id_of_another_account_gets_nothing(flow, cloud, oos):
    share = granted_share(flow, cloud, externals=[beta_external(cloud, user_id=cloud.account("gamma")["canonical_id"])])
    recipient, export = _recipient(share), share.export

    assert recipient.state == Recipient.State.FAILED and recipient.acl_granted_at is None
    assert recipient.state_message == object_grants.MSG_NOT_THEIR_ID.format(account=BETA, other=f"account {GAMMA}")
    keys = [o["Key"] for o in oos("alpha").list_objects_v2(Bucket=export.bucket, Prefix=export.prefix)["Contents"]]
    for key in keys:
        assert not can_read(oos, "gamma", export.bucket, key) and not can_read(oos, "beta", export.bucket, key)
    assert not any(ACL_PROBE_NAME in key for key in keys)  # the probe is gone
    event = AuditEvent.objects.get(action="link.acl_granted")
    assert event.outcome == "failed" and event.cloud_request_ids


def test_an_oos_user_id_nobody_has_is_refused_by_oos_and_said_so(flow, cloud):
    share = granted_share(flow, cloud, externals=[beta_external(cloud, user_id="f" * 64)])
    recipient = _recipient(share)

    assert recipient.state == Recipient.State.FAILED
    assert recipient.state_message.startswith(f"The read grant for account {BETA} could not be made:")


def test_the_grant_is_removed_once_the_manifest_is_dead_and_recorded_once(flow, cloud, oos):
    share = granted_share(flow, cloud)
    export = share.export
    Export.objects.filter(pk=export.pk).update(manifest_deadline=timezone.now() - timedelta(seconds=1))

    counts = reconcile.reconcile()
    assert counts["object_revokes"] == 1
    workers.run_jobs(until=lambda: _recipient(share).acl_removed_at is not None)

    assert not can_read(oos, "beta", export.bucket, export.manifest_key)
    assert AuditEvent.objects.filter(action="link.acl_removed", outcome="success").count() == 1
    event = AuditEvent.objects.get(action="link.acl_removed")
    assert event.cloud_request_ids and event.details["files_deleted"] is False
    # Again: nothing left to do, nothing recorded.
    object_revokes.object_grant_remove(recipient_id=_recipient(share).public_id)
    assert reconcile.reconcile()["object_revokes"] == 0
    assert AuditEvent.objects.filter(action="link.acl_removed").count() == 1


def test_the_clean_up_removes_the_grant_before_it_deletes_the_files(flow, cloud, oos):
    share = granted_share(flow, cloud)
    export = share.export
    Export.objects.filter(pk=export.pk).update(manifest_deadline=timezone.now() - timedelta(seconds=1))
    acl_writes = cloud.counters("111122223333", service="oos").get("PutObjectAcl", 0)

    export_cleanup(export_id=export.public_id)

    export.refresh_from_db()
    recipient = _recipient(share)
    assert export.cleaned_at is not None and recipient.acl_removed_at is not None
    actions = list(AuditEvent.objects.order_by("seq").values_list("action", flat=True))
    assert actions.index("link.acl_removed") < actions.index("export.cleaned")
    assert cloud.counters("111122223333", service="oos").get("PutObjectAcl", 0) > acl_writes


def test_a_grant_left_by_a_run_that_died_is_finished_once_its_lease_ran_out(flow, cloud, oos):
    # OOS throttles every write at first: the grant is put off, and its retry is lost with Redis.
    cloud.faults.configure(throttle_rate=1.0, oos=True, actions={"PutObject"})
    share = request_share(flow, cloud, accounts=[], externals=[beta_external(cloud)])
    approve(flow, share)
    workers.run_jobs(until=lambda: _recipient(share).state_message.startswith(polling.WAITING_PREFIX))
    workers.flush()
    cloud.faults.reset()
    recipient = _recipient(share)
    assert recipient.state == Recipient.State.OFFERED and recipient.acl_granted_at is None
    Recipient.objects.filter(pk=recipient.pk).update(next_poll_at=None)
    # A run claimed it and died after its cloud calls: the objects are readable, nothing recorded.
    export = recipient.share.export
    assert object_revokes.claim(recipient, object_grants.WAITING)
    creds = outscale.Credentials(cloud.account("alpha")["access_key"], cloud.account("alpha")["secret_key"],
                                 "eu-west-2")
    keys = outscale.manifest_object_keys(creds=creds, bucket=export.bucket, manifest_key=export.manifest_key,
                                         prefix=export.prefix).keys
    outscale.grant_object_read(creds=creds, bucket=export.bucket, keys=keys, user_id=recipient.external_oos_user_id)

    object_grants.object_grant(recipient_id=recipient.public_id)  # held: nothing happens
    assert _recipient(share).acl_granted_at is None
    assert reconcile.reconcile()["object_grants"] == 0  # the lease is not late yet

    Recipient.objects.filter(pk=recipient.pk).update(next_poll_at=timezone.now() - timedelta(hours=1))
    writes = cloud.counters("111122223333", service="oos").get("PutObjectAcl", 0)
    assert reconcile.reconcile()["object_grants"] == 1
    workers.run_jobs(until=lambda: _recipient(share).acl_granted_at is not None)

    assert AuditEvent.objects.filter(action="link.acl_granted").count() == 1
    # Only the probe's ACL was written again: the objects already granted were left as they were.
    assert cloud.counters("111122223333", service="oos").get("PutObjectAcl", 0) == writes + 1


def test_two_grants_on_one_export_at_once_both_hold(flow, cloud, oos):
    share = request_share(flow, cloud, accounts=[], externals=[
        beta_external(cloud),
        ExternalRecipient(account_id=GAMMA, region="eu-west-2", oos_user_id=cloud.account("gamma")["canonical_id"])])
    cloud.faults.configure(throttle_rate=1.0, oos=True, actions={"PutObject"})  # both grants wait
    approve(flow, share)
    workers.run_jobs(until=lambda: all(r.state_message.startswith(polling.WAITING_PREFIX)
                                       for r in Recipient.objects.filter(share=share)))
    workers.flush()
    cloud.faults.reset()
    Recipient.objects.filter(share=share).update(next_poll_at=None)
    pending = list(Recipient.objects.filter(share=share, acl_granted_at__isnull=True).values_list("public_id",
                                                                                                     flat=True))
    barrier = threading.Barrier(len(pending))

    def grant(public_id):
        try:
            barrier.wait(timeout=5)
            object_grants.object_grant(recipient_id=public_id)
        finally:
            connection.close()

    threads = [threading.Thread(target=grant, args=(public_id,)) for public_id in pending]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    export = Export.objects.get(shares=share)
    for name in ("beta", "gamma"):
        assert can_read(oos, name, export.bucket, export.manifest_key), name
    assert set(Recipient.objects.filter(share=share).values_list("state", flat=True)) == {"completed"}
