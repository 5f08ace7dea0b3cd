"""Every step ends, whatever the error (issue 14, item 3): a vault error, a refused audit write or a
bug inside a start or a sweep counts against its row, and after OMIPORTAL_STEP_MAX_ATTEMPTS the
transfer fails with one event and stops calling the cloud; the account's other rows go on. Failed
jobs leave Redis after OMIPORTAL_JOB_FAILURE_TTL_SECONDS. Accepting moves only an offered import.

Real sandbox over HTTP, real Redis, burst SimpleWorkers (tests/workers.py), real database commits;
the reconciler is ticked with its clock moved forward, as a worker's maintenance tick would."""

import contextlib
import time

import django_rq
import pytest
from django.db import DatabaseError, connection, transaction
from rq.job import Job
from rq.serializers import JSONSerializer

from audit.models import AuditEvent
from audit.verify import verify_chain
from omiportal.worker import PortalWorker
from tests import workers
from tests.transfer_world import access, approve, request_share
from transfers import errors, scheduling
from transfers.models import Export, Recipient, Share
from transfers.services import export_completes, exports, external_links, import_offers, reconcile
from transfers.services.requests import ExternalRecipient

pytestmark = pytest.mark.django_db(transaction=True)

ALPHA, DELTA = "111122223333", "444455556666"
LIMIT = 3


@pytest.fixture
def bounded_flow(flow, settings):
    settings.OMIPORTAL_STEP_MAX_ATTEMPTS = LIMIT
    settings.OMIPORTAL_RECONCILE_GRACE_SECONDS = 0.1  # a step is put back as soon as it is late
    return flow


def _calls(cloud, account_id: str, action: str) -> int:
    return cloud.counters(account_id).get(action, 0)


def _tick() -> None:
    """A worker's maintenance tick a little later: the reconciler puts back every late step, and
    the jobs it queued run. (Its job ids name the second, as a tick's would: a second apart.)"""
    time.sleep(0.35)
    reconcile.reconcile()
    workers.run_jobs()


def _tick_until(done, *, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, "the row never ended"
        _tick()


def _idle_ticks() -> None:
    for _ in range(4):
        _tick()


def _gave_up(error: str) -> str:
    return errors.STEP_GAVE_UP.format(attempts=LIMIT, error=error)


def _events(action: str, target_id) -> list[AuditEvent]:
    return list(AuditEvent.objects.filter(action=action, target_id=str(target_id)))


# --- an import start: keys the vault cannot open ----------------------------------------------------

def _pasted_link(flow, cloud) -> str:
    """A manifest link of alpha's export, as an external recipient would pass it on."""
    share = request_share(flow, cloud, accounts=[], externals=[ExternalRecipient(DELTA, "us-east-2")])
    approve(flow, share)
    workers.run_jobs(until=lambda: Share.objects.get(pk=share.pk).state == Share.State.READY)
    external = Recipient.objects.get(share=share)
    return external_links.link_reveal(access=access(flow.src_member, flow.source), share=share, recipient=external).url


def test_an_import_start_that_cannot_open_its_link_fails_after_the_bound_and_accept_cannot_restart_it(
        bounded_flow, cloud):
    flow = bounded_flow
    url = _pasted_link(flow, cloud)
    member = access(flow.dst_member, flow.dest)
    good = external_links.link_import_create(access=member, account=flow.delta, url=url, image_name="from-a-link")
    bad = external_links.link_import_create(access=member, account=flow.delta, url=url, image_name="from-a-link-too")
    # The bad one's sealed link is the good one's: it opens for no other row (the vault binds it).
    Recipient.objects.filter(pk=bad.pk).update(link_sealed=Recipient.objects.get(pk=good.pk).link_sealed)

    workers.run_jobs(until=lambda: Recipient.objects.get(pk=good.pk).state == Recipient.State.COMPLETED)
    workers.run_jobs()
    assert Recipient.objects.get(pk=bad.pk).step_errors == 1
    reads = _calls(cloud, DELTA, "ReadImages")

    _tick_until(lambda: Recipient.objects.get(pk=bad.pk).state == Recipient.State.FAILED)

    bad.refresh_from_db()
    assert (bad.state, bad.step_errors) == (Recipient.State.FAILED, LIMIT)
    assert bad.state_message == _gave_up("VaultError")
    assert bad.link_sealed == ""  # wiped, as any failed pasted link is
    (ended,) = _events("import.failed", bad.public_id)
    assert ended.details["reason"] == _gave_up("VaultError")
    assert "does not open" not in bad.state_message  # the error's class, never its text
    # The cloud: never a create for the bad row; one look-up by name per attempt after the first.
    assert _calls(cloud, DELTA, "CreateImage") == 1
    assert _calls(cloud, DELTA, "ReadImages") - reads == LIMIT - 1
    # Ended means ended: more ticks put nothing back and call nothing.
    before = cloud.counters(DELTA)
    _idle_ticks()
    assert cloud.counters(DELTA) == before and workers.pending_jobs() == 0

    # Accepting a failed pasted-link import is refused: it would skip the retry checks and start
    # an import whose link is gone, a loop again. Nothing moves, nothing is queued, the trail says so.
    with pytest.raises(errors.ShareConflict, match="not waiting for your team's answer"):
        import_offers.recipient_accept(access=member, recipient=bad)
    refused = AuditEvent.objects.get(action="import.accepted", outcome="denied", actor_id=flow.dst_member.pk)
    assert refused.details["state"] == "failed"
    assert workers.pending_jobs() == 0
    assert Recipient.objects.filter(pk=bad.pk, state=Recipient.State.FAILED, step_errors=LIMIT).exists()
    # And the retry's checks hold: the link was wiped, only a new link helps.
    with pytest.raises(errors.ShareError, match="expired"):
        import_offers.recipient_retry(access=member, recipient=bad)
    assert workers.pending_jobs() == 0
    assert verify_chain().ok


# --- an export start: a refused audit write ------------------------------------------------------------

@contextlib.contextmanager
def _audit_refused(action: str, target_id):
    """The trail refuses this action's events for this target (as a full disk or a broken trigger would)."""

    def refuse(execute, sql, params, many, context):
        if sql.startswith(f'INSERT INTO "{AuditEvent._meta.db_table}"') and action in str(params) \
                and str(target_id) in str(params):
            raise DatabaseError("injected: audit insert refused")
        return execute(sql, params, many, context)

    with connection.execute_wrapper(refuse):
        yield


def test_an_export_start_whose_event_is_refused_fails_after_the_bound_and_creates_one_task(bounded_flow, cloud):
    flow = bounded_flow
    good = request_share(flow, cloud, copy_name="db-copy", image="alpha-db-base")
    bad = request_share(flow, cloud, copy_name="web-copy")
    approve(flow, good)
    approve(flow, bad)
    bad_export = Export.objects.get(shares=bad)

    with _audit_refused("export.started", bad_export.public_id):
        workers.run_jobs(until=lambda: Share.objects.get(pk=good.pk).state == Share.State.READY)
        workers.run_jobs()
        assert Export.objects.get(pk=bad_export.pk).step_errors == 1
        _tick_until(lambda: Export.objects.get(pk=bad_export.pk).state == Export.State.FAILED)

    bad_export.refresh_from_db()
    assert (bad_export.state, bad_export.step_errors) == (Export.State.FAILED, LIMIT)
    assert bad_export.state_message == _gave_up("DatabaseError")
    assert "injected" not in bad_export.state_message
    (ended,) = _events("export.failed", bad_export.public_id)
    assert ended.details["reason"] == _gave_up("DatabaseError")
    assert _events("export.started", bad_export.public_id) == []
    share = Share.objects.get(pk=bad.pk)
    assert (share.state, share.state_message) == (Share.State.FAILED, _gave_up("DatabaseError"))
    # Each attempt after the first looked its task up: one task for each export, whatever the retries.
    assert _calls(cloud, ALPHA, "CreateImageExportTask") == 2
    before = cloud.counters(ALPHA)
    _idle_ticks()
    assert cloud.counters(ALPHA) == before
    assert Share.objects.get(pk=good.pk).state == Share.State.READY
    assert Export.objects.get(shares=good).step_errors == 0
    assert verify_chain().ok


# --- a sweep: a bug on one row ---------------------------------------------------------------------

def _a_bug_on_one_export(flow, cloud, monkeypatch, module, name, *, seen=lambda export: None):
    """Two exports of one account, with a bug in ``module.name`` for the first one only (``seen`` is
    told of every call); run until that export failed and the other's share is ready. Returns the
    failed export (as stored), its share and the other share."""
    cloud.set_durations(export_seconds=0.3)
    real, bad_images = getattr(module, name), []

    def buggy(*, export, **kwargs):
        seen(export)
        if export.source_image_id in bad_images:
            raise KeyError(f"a bug in {name} for one export")
        return real(export=export, **kwargs)

    monkeypatch.setattr(module, name, buggy)
    bad = request_share(flow, cloud, copy_name="web-copy")
    good = request_share(flow, cloud, copy_name="db-copy", image="alpha-db-base")
    bad_images.append(bad.source_image_id)
    approve(flow, bad)
    approve(flow, good)
    bad_export = Export.objects.get(shares=bad)

    # The sweeps come back to the bad row by themselves (its look is due again once the claim
    # lapses) and through the reconciler; each time it counts, until it ends.
    def settled():
        reconcile.reconcile()
        return Export.objects.get(pk=bad_export.pk).state == Export.State.FAILED and \
            Share.objects.get(pk=good.pk).state == Share.State.READY

    workers.run_jobs(until=settled, timeout=30)
    bad_export.refresh_from_db()
    return bad_export, bad, good


def test_a_bug_on_one_export_in_a_sweep_counts_against_it_and_the_accounts_other_exports_go_on(
        bounded_flow, cloud, settings, monkeypatch):
    bad_export, bad, good = _a_bug_on_one_export(bounded_flow, cloud, monkeypatch, exports, "export_complete")

    assert (bad_export.state, bad_export.step_errors) == (Export.State.FAILED, LIMIT)
    assert bad_export.state_message == _gave_up("KeyError")
    (ended,) = _events("export.failed", bad_export.public_id)
    assert ended.details["reason"] == _gave_up("KeyError")
    assert Share.objects.get(pk=bad.pk).state == Share.State.FAILED
    good_export = Export.objects.get(shares=good)
    assert (good_export.state, good_export.step_errors) == (Export.State.COMPLETED, 0)
    # Nothing is in flight any more: no look, no call.
    looks = _calls(cloud, ALPHA, "ReadImageExportTasks")
    _idle_ticks()
    assert _calls(cloud, ALPHA, "ReadImageExportTasks") == looks
    assert verify_chain().ok


def test_a_manifest_read_that_raises_counts_against_its_export_and_is_not_read_again_in_the_transaction(
        bounded_flow, cloud, settings, monkeypatch):
    """The completions of one look share a transaction, which makes no cloud call: a manifest
    whose read raised (a bug) is not read again inside it, but counted against its export."""
    reads = []
    bad_export, _, good = _a_bug_on_one_export(
        bounded_flow, cloud, monkeypatch, export_completes, "read_manifest",
        seen=lambda export: reads.append((export.pk, connection.in_atomic_block)))

    assert (bad_export.state, bad_export.step_errors) == (Export.State.FAILED, LIMIT)
    assert bad_export.state_message == _gave_up("ManifestNotRead")
    assert Export.objects.get(shares=good).state == Export.State.COMPLETED
    # Read once per look, on the sweep's threads, never inside the look's transaction.
    assert [pk for pk, _ in reads].count(bad_export.pk) == LIMIT
    assert not any(in_transaction for _, in_transaction in reads)
    assert verify_chain().ok


# --- failed jobs leave Redis ---------------------------------------------------------------------

def _expiry(queue, job_id: str) -> tuple[int, float]:
    """(TTL of the failed job's record, seconds until the failed registry lets it go)."""
    redis = queue.connection
    return redis.ttl(Job.key_for(job_id)), redis.zscore(queue.failed_job_registry.key, job_id) - time.time()


def test_a_failed_job_leaves_redis_within_the_failure_ttl(flow, settings):
    settings.OMIPORTAL_JOB_FAILURE_TTL_SECONDS = 600
    with transaction.atomic():  # enqueued on commit, as every service does
        scheduling.enqueue("transfers.jobs.notify_job", "no-such-email", [1], job_id="notify-broken")
    workers.run_jobs()
    queue = django_rq.get_queue("default")
    assert Job.fetch("notify-broken", connection=queue.connection, serializer=JSONSerializer).is_failed
    ttl, registered = _expiry(queue, "notify-broken")
    assert 0 < ttl <= 600 and 0 < registered <= 600


def test_the_portal_worker_bounds_the_failure_ttl_of_a_job_queued_without_one(flow, settings):
    settings.OMIPORTAL_JOB_FAILURE_TTL_SECONDS = 600
    queue = django_rq.get_queue("default")
    queue.enqueue("transfers.jobs.notify_job", "no-such-email", [1], job_id="notify-from-elsewhere")  # rq: a year
    PortalWorker([queue], connection=queue.connection).work(burst=True, logging_level="WARNING")
    ttl, registered = _expiry(queue, "notify-from-elsewhere")
    assert 0 < ttl <= 600 and 0 < registered <= 600


# --- accepting moves only an offered import -----------------------------------------------------

def test_accept_moves_only_an_offered_import_and_retry_only_a_failed_one(flow, cloud):
    share = request_share(flow, cloud)
    approve(flow, share)
    workers.run_jobs(until=lambda: Share.objects.get(pk=share.pk).state == Share.State.READY)
    member = access(flow.dst_member, flow.dest)
    recipient = Recipient.objects.get(share=share)

    with pytest.raises(errors.ShareConflict, match="Only a failed step can be retried"):
        import_offers.recipient_retry(access=member, recipient=recipient)
    assert AuditEvent.objects.filter(action="import.retried", outcome="denied").count() == 1

    cloud.faults.fail_import("web-copy", comment="disk image is corrupt")
    import_offers.recipient_accept(access=member, recipient=recipient)
    workers.run_jobs(until=lambda: Recipient.objects.get(pk=recipient.pk).state == Recipient.State.FAILED)
    workers.run_jobs()
    recipient.refresh_from_db()
    before = Recipient.objects.filter(pk=recipient.pk).values().get()

    with pytest.raises(errors.ShareConflict, match=r"not waiting for your team's answer \(it is failed\)"):
        import_offers.recipient_accept(access=member, recipient=recipient)
    assert Recipient.objects.filter(pk=recipient.pk).values().get() == before
    assert workers.pending_jobs() == 0
    (refused,) = AuditEvent.objects.filter(action="import.accepted", outcome="denied")
    assert (refused.actor_id, refused.details["state"]) == (flow.dst_member.pk, "failed")

    import_offers.recipient_retry(access=member, recipient=recipient)  # the way back, with its checks
    assert Recipient.objects.get(pk=recipient.pk).state == Recipient.State.IMPORTING
    assert verify_chain().ok
