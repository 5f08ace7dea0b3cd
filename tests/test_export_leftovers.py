"""What an export leaves behind, and its edges: clean-up against reuse (two real connections at the
dangerous points), a manifest whose deadline cannot be read, and copy-first images deleted once
their export is complete. Real sandbox over HTTP, real RQ jobs, real database commits."""

import threading
import time
from datetime import timedelta

import pytest
from django.db import connections
from django.utils import timezone

import outscale
from accounts.models import Team
from audit.models import AuditEvent
from audit.verify import verify_chain
from tests import workers
from tests.transfer_world import access, approve, request_share
from transfers import errors
from transfers.models import Export, Recipient, Share
from transfers.services import cleanup, export_completes, exports, import_offers, reconcile

pytestmark = pytest.mark.django_db(transaction=True)


def _state(share):
    return Share.objects.get(pk=share.pk).state


def _completed_share(flow, cloud, **kwargs) -> Share:
    """A completed share whose export's files are still in the bucket (its clean-up not run yet)."""
    Team.objects.filter(pk=flow.source.pk).update(cleanup_exports=False)
    share = request_share(flow, cloud, **kwargs)
    approve(flow, share)
    workers.run_jobs(until=lambda: _state(share) == Share.State.READY)
    for recipient in Recipient.objects.filter(share=share, kind="team", state="offered"):
        import_offers.recipient_accept(access=access(flow.dst_member, flow.dest), recipient=recipient)
    workers.run_jobs(until=lambda: _state(share) == Share.State.COMPLETED)
    workers.run_jobs()
    Team.objects.filter(pk=flow.source.pk).update(cleanup_exports=True)
    return share


def _objects(cloud, export) -> list[str]:
    bucket = cloud.world.bucket(export.account.region, export.bucket)
    return [key for key in bucket.objects if key.startswith(export.prefix)]


class _Thread(threading.Thread):
    """Runs ``func`` on its own database connection and keeps what it raised."""

    def __init__(self, func):
        super().__init__(daemon=True)
        self.func, self.error = func, None

    def run(self):
        try:
            self.func()
        except BaseException as exc:  # noqa: BLE001 - handed back to the test
            self.error = exc
        finally:
            connections.close_all()


# --- Clean-up against reuse ------------------------------------------------------------------------


def test_a_reuse_holding_the_export_makes_its_cleanup_give_up(flow, cloud, monkeypatch):
    """A new share reuses the export and has not committed yet when the clean-up runs: the clean-up
    waits for the export's row lock, then sees the share and deletes nothing."""
    first = _completed_share(flow, cloud)
    export = Export.objects.select_related("account").get(shares=first)
    assert _objects(cloud, export)
    second = request_share(flow, cloud, accounts=[flow.delta], copy_name="web-copy-2")  # by export
    held, release = threading.Event(), threading.Event()
    real_begin = exports.export_begin

    def begin_then_hold(*, share):
        real_begin(share=share)
        held.set()  # inside the approval's transaction, the export row locked
        release.wait(10)

    monkeypatch.setattr(exports, "export_begin", begin_then_hold)
    approving = _Thread(lambda: approve(flow, second))
    approving.start()
    assert held.wait(10)
    cleaning = _Thread(lambda: cleanup.export_cleanup(export_id=export.public_id))
    cleaning.start()
    cleaning.join(1.0)
    still_waiting = cleaning.is_alive()
    release.set()
    approving.join(10)
    cleaning.join(10)
    assert approving.error is None and cleaning.error is None
    assert still_waiting, "the clean-up did not wait for the reuse holding the export"
    export.refresh_from_db()
    assert Share.objects.get(pk=second.pk).export_id == export.pk
    assert export.cleanup_claimed_at is None and export.cleaned_at is None
    assert _objects(cloud, export), "the clean-up deleted the files of an export a share now uses"
    assert not AuditEvent.objects.filter(action="export.cleaned").exists()
    assert _state(second) == Share.State.READY


def test_an_export_claimed_for_cleanup_is_never_reused(flow, cloud, monkeypatch):
    """The clean-up is deleting the objects when a new share of the same image is approved: the
    share gets a new export instead of the one whose files are going."""
    first = _completed_share(flow, cloud)
    export = Export.objects.select_related("account").get(shares=first)
    second = request_share(flow, cloud, accounts=[flow.delta], copy_name="web-copy-2")  # by export
    deleting, release = threading.Event(), threading.Event()
    real_delete = outscale.delete_export_objects

    def hold_then_delete(**kwargs):
        deleting.set()
        release.wait(10)
        return real_delete(**kwargs)

    monkeypatch.setattr(outscale, "delete_export_objects", hold_then_delete)
    cleaning = _Thread(lambda: cleanup.export_cleanup(export_id=export.public_id))
    cleaning.start()
    assert deleting.wait(10)
    approve(flow, second)
    release.set()
    cleaning.join(10)
    assert cleaning.error is None
    second.refresh_from_db()
    export.refresh_from_db()
    assert second.export_id != export.pk, "a share reused an export whose files were being deleted"
    assert export.cleaned_at is not None and not _objects(cloud, export)
    workers.run_jobs(until=lambda: _state(second) == Share.State.READY)
    assert cloud.counters("111122223333").get("CreateImageExportTask") == 2
    assert verify_chain().ok


def test_a_failed_cleanup_keeps_its_claim_and_finishes_later(flow, cloud):
    first = _completed_share(flow, cloud)
    export = Export.objects.select_related("account").get(shares=first)
    cloud.faults.configure(error_rate=1.0, actions={"DeleteObjects"}, oos=True)
    cleanup.export_cleanup(export_id=export.public_id)
    export.refresh_from_db()
    assert export.cleanup_claimed_at is not None and export.cleaned_at is None
    assert AuditEvent.objects.filter(action="export.cleanup_failed").exists()
    # Claimed, so no share reuses it while its files may be half gone.
    second = request_share(flow, cloud, accounts=[flow.delta], copy_name="web-copy-2")  # by export
    approve(flow, second)
    assert Share.objects.get(pk=second.pk).export_id != export.pk
    cloud.faults.reset()
    reconcile.reconcile()
    workers.run_jobs(until=lambda: Export.objects.get(pk=export.pk).cleaned_at is not None)
    assert not _objects(cloud, export)


def test_the_reconcilers_clean_up_net_is_one_statement_however_many_exports_are_still_read(flow, cloud):
    # At 10,000 transfers the net checked each completed export in turn at every tick (three
    # queries and a transaction each) and took most of a worker's time; now SQL says which.
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    def ready(**kwargs):
        share = request_share(flow, cloud, **kwargs)
        approve(flow, share)
        workers.run_jobs(until=lambda: _state(share) == Share.State.READY)
        workers.run_jobs()
        return share

    def reconcile_queries() -> int:
        with CaptureQueriesContext(connection) as queries:
            reconcile.reconcile()
        return len(queries)

    web = ready()  # its import is offered, not taken: the export is still read
    reconcile.reconcile()  # the first tick books what every tick finds booked after (the inventory's checks)
    one = reconcile_queries()
    ready(image="alpha-db-base", copy_name="db-copy")
    reconcile.reconcile()
    assert reconcile_queries() == one
    assert not [j for q in workers.queues() for j in q.job_ids if j.startswith("export-cleanup-")]
    for recipient in Recipient.objects.filter(share=web, state="offered"):
        import_offers.recipient_decline(access=access(flow.dst_member, flow.dest), recipient=recipient,
                                        reason="not needed")
    Export.objects.filter(shares=web).update(manifest_deadline=timezone.now())  # no retry can come
    reconcile.reconcile()
    web_export = Export.objects.get(shares=web)
    assert [j for q in workers.queues() for j in q.job_ids if j.startswith("export-cleanup-")] == [
        f"export-cleanup-{web_export.public_id}"]


def test_a_sweeps_clean_up_check_is_one_statement_however_many_exports_ended(flow, cloud):
    # A sweep that completes imports of many exports (a release to hundreds of accounts: each
    # account's sweep ends shares of five exports) checked each export with two queries.
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    web = _completed_share(flow, cloud)
    db = _completed_share(flow, cloud, image="alpha-db-base", copy_name="db-copy")
    read = request_share(flow, cloud, image="alpha-legacy-broken", copy_name="broken-copy")
    ended = [Export.objects.get(shares=share).pk for share in (web, db)]
    still_read = Export.objects.create(account=flow.alpha, source_image_id=read.source_image_id,
                                       bucket=flow.alpha.export_bucket, state=Export.State.COMPLETED,
                                       manifest_deadline=timezone.now() + timedelta(days=7), prefix="omiportal/x/")
    Share.objects.filter(pk=read.pk).update(export=still_read, state=Share.State.READY)
    workers.flush()

    with CaptureQueriesContext(connection) as queries:
        cleanup.exports_cleanup_if_done(export_ids=[*ended, still_read.pk])

    assert len(queries) == 1, [q["sql"] for q in queries.captured_queries]
    queued = sorted(j for q in workers.queues() for j in q.job_ids if j.startswith("export-cleanup-"))
    assert queued == sorted(f"export-cleanup-{e.public_id}" for e in Export.objects.filter(pk__in=ended))


# --- A manifest whose deadline cannot be read ------------------------------------------------------


def _two_exports_ended(flow, cloud, settings, *, then):
    """Two exports of alpha (web's, db's) ended in the sandbox and due for one look; ``then(bucket,
    task)`` runs on web's, under the sandbox's lock, once its manifest is written."""
    settings.OMIPORTAL_SWEEP_MIN_SECONDS = 30  # nothing looks at the exports but the sweep the test runs
    settings.OMIPORTAL_SWEEP_MAX_SECONDS = 60
    web = request_share(flow, cloud)
    db = request_share(flow, cloud, image="alpha-db-base", copy_name="db-copy")
    approve(flow, web)
    approve(flow, db)
    workers.run_jobs(until=lambda: Export.objects.filter(account=flow.alpha, state="running").count() == 2)
    workers.flush()
    bad, good = Export.objects.get(shares=web), Export.objects.get(shares=db)
    time.sleep(0.4)  # the sandbox's exports take 0.3 s
    with cloud.world.lock:
        cloud.world.tick()  # both tasks complete and their manifests are written
        task = cloud.world.tasks[bad.task_id]
        assert task.state == "completed"
        then(cloud.world.bucket(flow.alpha.region, bad.bucket), task)
    Export.objects.filter(pk__in=[bad.pk, good.pk]).update(next_poll_at=timezone.now())
    return web, db, bad, good


@pytest.mark.parametrize("manifest", [b'{"Version": "1", "Snapshots": []}', b"this is not json"],
                         ids=["no-links", "not-json"])
def test_an_unreadable_manifest_deadline_falls_back_and_the_sweep_goes_on(flow, cloud, settings, manifest):
    def rewrite(bucket, task):
        cloud.oos.put_object(bucket, task.manifest_key, manifest, "application/json")

    web, db, bad, good = _two_exports_ended(flow, cloud, settings, then=rewrite)

    exports.export_sweep(account_id=flow.alpha.public_id)  # one sweep of the account

    bad_before_look = bad.updated_at
    bad.refresh_from_db()
    good.refresh_from_db()
    assert (bad.state, good.state) == ("completed", "completed")
    assert bad.manifest_deadline == bad_before_look + timedelta(days=7) - export_completes.MANIFEST_DEADLINE_MARGIN
    assert "could not be read" in bad.state_message
    assert good.state_message == "" and good.manifest_deadline > timezone.now() + timedelta(days=6)
    event = AuditEvent.objects.get(action="export.completed", target_id=str(bad.public_id))
    assert event.details["manifest_deadline_assumed"] is True and event.details["reason"]
    assert {_state(web), _state(db)} == {Share.State.READY}
    assert errors.MANIFEST_DEADLINE_ASSUMED.split("(")[0] in bad.state_message


@pytest.mark.parametrize("trouble", ["missing", "throttled"])
def test_a_look_reads_its_ended_exports_manifests_first_and_an_error_stays_with_its_export(
        flow, cloud, settings, trouble):
    # The manifests are read side by side before any export is completed (export_completes.py):
    # an error there still belongs to its export alone, and the other is offered in the same look.
    def remove(bucket, task):
        if trouble == "missing":
            del bucket.objects[task.manifest_key]

    web, db, bad, good = _two_exports_ended(flow, cloud, settings, then=remove)
    reads, real_read = [], export_completes.read_manifest

    def read(*, export, **kwargs):
        reads.append(export.pk)
        if trouble == "throttled" and export.pk == bad.pk:
            return export_completes.Manifest(error=outscale.RetryLater(
                "OUTSCALE is busy.", kind=outscale.RetryLater.THROTTLED, may_have_run=False))
        return real_read(export=export, **kwargs)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(export_completes, "read_manifest", read)
        exports.export_sweep(account_id=flow.alpha.public_id)  # one sweep of the account

    assert sorted(reads) == sorted([bad.pk, good.pk])  # each read once: the completions used them
    bad.refresh_from_db()
    good.refresh_from_db()
    assert good.state == "completed" and _state(db) == Share.State.READY
    if trouble == "missing":
        assert bad.state == "failed" and "does not exist" in bad.state_message
        assert _state(web) == Share.State.FAILED
    else:
        assert bad.state == "running" and bad.state_message.endswith("OUTSCALE is busy.")
        assert bad.next_poll_at > timezone.now()  # looked at again later
    assert verify_chain().ok


# --- Copy-first images ------------------------------------------------------------------------------


def test_a_copy_first_image_is_deleted_once_its_export_is_complete(flow, cloud):
    share = request_share(flow, cloud, image="Ubuntu-24.04-2025.01.15-0", copy_name="ubuntu-copy")
    approve(flow, share)
    workers.run_jobs(until=lambda: Export.objects.get(shares=share).copy_cleaned_at is not None)
    export = Export.objects.get(shares=share)
    assert export.state == "completed" and _state(share) == Share.State.READY
    assert export.copy_image_id not in cloud.world.images
    assert export.source_image_id in cloud.world.images  # the public image is not ours: untouched
    counters = cloud.counters("111122223333")
    assert counters.get("DeleteImage") == 1
    event = AuditEvent.objects.get(action="export.copy_deleted")
    assert event.cloud_request_ids and event.details["copy_image_id"] == export.copy_image_id

    # Twice: a second run does nothing; a run that lost the mark finds it gone and only marks it.
    cleanup.export_cleanup(export_id=export.public_id)
    assert cloud.counters("111122223333").get("DeleteImage") == 1
    Export.objects.filter(pk=export.pk).update(copy_cleaned_at=None)
    cleanup.export_cleanup(export_id=export.public_id)
    assert Export.objects.get(pk=export.pk).copy_cleaned_at is not None
    gone = AuditEvent.objects.filter(action="export.copy_deleted").order_by("seq").last()
    assert gone.details.get("already_gone") is True
    assert not AuditEvent.objects.filter(action="export.copy_delete_failed").exists()

    # The recipients still import from the exported files.
    for recipient in Recipient.objects.filter(share=share, kind="team"):
        import_offers.recipient_accept(access=access(flow.dst_member, flow.dest), recipient=recipient)
    workers.run_jobs(until=lambda: _state(share) == Share.State.COMPLETED)


def test_only_the_copy_the_export_recorded_is_ever_deleted(flow, cloud):
    share = _completed_share(flow, cloud)  # an owned image: no copy
    export = Export.objects.get(shares=share)
    assert not export.copy_image_id
    cleanup.export_cleanup(export_id=export.public_id)
    assert cloud.counters("111122223333").get("DeleteImage", 0) == 0
    assert export.source_image_id in cloud.world.images
    # Even a row pointing its copy at the source image deletes nothing.
    Export.objects.filter(pk=export.pk).update(copy_image_id=export.source_image_id)
    cleanup.export_copy_delete(export=Export.objects.select_related("account__team").get(pk=export.pk))
    assert export.source_image_id in cloud.world.images


def test_the_reconciler_deletes_a_copy_whose_deletion_was_lost(flow, cloud, settings):
    share = request_share(flow, cloud, image="Ubuntu-24.04-2025.01.15-0", copy_name="ubuntu-copy")
    approve(flow, share)
    cloud.faults.configure(throttle_rate=1.0, actions={"DeleteImage"})
    workers.run_jobs(until=lambda: _state(share) == Share.State.READY)
    workers.run_jobs()
    export = Export.objects.get(shares=share)
    assert export.copy_image_id in cloud.world.images and export.copy_cleaned_at is None
    cloud.faults.reset()
    later = timezone.now() + timedelta(seconds=settings.OMIPORTAL_RECONCILE_GRACE_SECONDS + 1)
    reconcile.reconcile(now=later)
    workers.run_jobs(until=lambda: Export.objects.get(pk=export.pk).copy_cleaned_at is not None)
    assert export.copy_image_id not in cloud.world.images
