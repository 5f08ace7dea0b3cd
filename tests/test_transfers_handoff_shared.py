"""A large hand-off is shared with another worker (transfers/services/import_starts.py).

A release to hundreds of accounts ends with hundreds of creates, each into another account: no
account's pace bounds them, only how many creates one process has in flight, and the workers
other than the one whose sweep saw the export end sat idle (bench_transfers --workload
export-fleet). The sweep now claims half of a large burst, queues an `import_handoff` job for
the other half at once, and comes back for whatever of it the job has not claimed. The claims (a
conditional count of the attempt) keep each import to one create.
"""

import threading
import time

import pytest
from django.db import connections

from audit.context import job_context
from audit.models import AuditEvent
from audit.verify import verify_chain
from tests import workers
from tests.transfer_world import approve, request_share, sandbox_account
from transfers.models import Export, Recipient
from transfers.services import exports, import_starts

pytestmark = pytest.mark.django_db(transaction=True)

DELTA, EPSILON = "444455556666", "555566667777"
SHARES = 5  # each to delta and epsilon: ten imports, shared past four (two threads)


def _export_ended(flow, cloud, settings):
    """Five shares of one image to delta and epsilon, auto-accepted, one export that has just
    ended in the cloud; the queues empty."""
    settings.OMIPORTAL_SWEEP_CONCURRENCY = 2
    flow.dest.auto_accept_incoming = True
    flow.dest.save()
    epsilon = sandbox_account(cloud, flow.dest, "epsilon")
    cloud.set_durations(export_seconds=1000, import_seconds=1000)
    shares = [request_share(flow, cloud, accounts=[flow.delta, epsilon], copy_name=f"web-copy-{k}")
              for k in range(SHARES)]
    for share in shares:
        approve(flow, share)
    workers.run_jobs(until=lambda: Export.objects.filter(state=Export.State.RUNNING).exclude(task_id="").exists())
    export = Export.objects.get()
    with cloud.world.lock:
        task = cloud.world.tasks[export.task_id]
        task.started = time.monotonic() - task.duration
    Export.objects.filter(pk=export.pk).update(next_poll_at=export.created_at)
    workers.flush()
    return shares


def _creates(cloud):
    return sum(cloud.counters(account).get("CreateImage", 0) for account in (DELTA, EPSILON))


def _handoff_jobs():
    return [job for queue in workers.queues() for job in queue.get_jobs() if job.id.startswith("import-handoff-")]


def test_a_large_burst_queues_a_hand_off_job_at_once_and_the_sweep_alone_still_starts_it_all(flow, cloud,
                                                                                              settings):
    shares = _export_ended(flow, cloud, settings)
    assert import_starts.SHARE_FROM * settings.OMIPORTAL_SWEEP_CONCURRENCY == 4  # ten is more: shared

    exports.export_sweep(account_id=flow.alpha.public_id)

    # Alone (nobody took the job meanwhile), the sweep started all ten within its budget, and the
    # job it queued for another worker finds nothing left: each import created once.
    assert len(_handoff_jobs()) == 1
    recipients = Recipient.objects.filter(share__in=shares)
    assert recipients.count() == 10 and all(recipients.values_list("image_id", flat=True))
    import_starts.import_handoff(account_id=flow.alpha.public_id)  # the job, run by the other worker
    assert _creates(cloud) == 10
    assert set(recipients.values_list("start_tries", flat=True)) == {1}
    assert verify_chain().ok


def test_a_second_worker_takes_the_other_half_meanwhile_and_each_import_is_created_once(flow, cloud, settings):
    shares = _export_ended(flow, cloud, settings)
    # Creates take half a second: the sweep's half (five, two at a time) is still going when the
    # job arrives.
    cloud.faults.configure(hold_seconds=0.5, hold_actions={"CreateImage"})
    errors = []

    def sweep():
        try:
            with job_context(job_id="export-sweep-test"):
                exports.export_sweep(account_id=flow.alpha.public_id)
        except Exception as exc:  # reported below
            errors.append(exc)
        finally:
            connections.close_all()

    first = threading.Thread(target=sweep, name="sweep")
    first.start()
    deadline = time.monotonic() + 10
    while not _handoff_jobs():
        assert time.monotonic() < deadline, "the sweep queued no hand-off job for its burst of ten"
        time.sleep(0.02)
    with job_context(job_id="import-handoff-test"):  # the other worker, meanwhile
        import_starts.import_handoff(account_id=flow.alpha.public_id)
    first.join(timeout=30)
    assert not first.is_alive() and not errors, errors

    recipients = Recipient.objects.filter(share__in=shares)
    assert all(recipients.values_list("image_id", flat=True))
    assert _creates(cloud) == 10  # one create each, whichever took it
    assert set(recipients.values_list("start_tries", flat=True)) == {1}  # claimed once each
    started = AuditEvent.objects.filter(action="import.started").values_list("request_id", flat=True)
    by = {request_id: list(started).count(request_id) for request_id in set(started)}
    assert sum(by.values()) == 10 and set(by) == {"export-sweep-test", "import-handoff-test"}, by
    cloud.faults.configure(hold_seconds=0)
    assert verify_chain().ok


def test_a_backlog_is_claimed_a_chunk_at_a_time_by_jobs_that_queue_the_next_and_each_import_is_created_once(
        flow, cloud, settings, monkeypatch):
    # A release of 10,000 imports left each `import_handoff` job claiming, opening the keys of and
    # giving back the whole backlog to start the few hundred its budget allowed. Now a run claims
    # at most TAKE_PER_THREAD starts per thread at a time (here 1 × 2 threads), and queues a job
    # for what it has not claimed before starting its own.
    shares = _export_ended(flow, cloud, settings)
    monkeypatch.setattr(import_starts, "TAKE_PER_THREAD", 1)
    settings.OMIPORTAL_SWEEP_BUDGET_SECONDS = 0  # one chunk per run: every thread starts one import
    claimed = []
    claim = import_starts._claim

    def counted(recipients):
        recipients = list(recipients)
        claimed.append(len(recipients))
        return claim(recipients)

    monkeypatch.setattr(import_starts, "_claim", counted)

    exports.export_sweep(account_id=flow.alpha.public_id)
    recipients = Recipient.objects.filter(share__in=shares)
    assert 1 <= recipients.exclude(image_id="").count() <= 2  # of its one chunk, what its budget allowed
    assert _handoff_jobs()  # the rest queued for another worker at once

    workers.run_jobs(until=lambda: not recipients.filter(image_id="").exists() and not _handoff_jobs())

    assert max(claimed) <= 2 and sum(claimed) >= 10, claimed  # never the whole backlog at once
    assert _creates(cloud) == 10 and not recipients.filter(image_id="").exists()
    assert set(recipients.values_list("start_tries", flat=True)) == {1}  # each claimed and created once
    assert verify_chain().ok


def test_a_look_that_saw_many_exports_end_hands_the_first_ones_imports_to_another_worker_meanwhile(
        flow, cloud, settings, monkeypatch):
    """A release of 10,000 imports from ten exports that ended in one look waited 14 s, the ten
    completions written in one transaction, before its first create. The sweep now commits once
    it has offered HANDOFF_EARLY imports and queues a job for them: another worker starts them
    while it completes the rest."""
    from transfers.services import export_completes

    settings.OMIPORTAL_SWEEP_CONCURRENCY = 2
    flow.dest.auto_accept_incoming = True
    flow.dest.save()
    epsilon = sandbox_account(cloud, flow.dest, "epsilon")
    cloud.set_durations(export_seconds=1000, import_seconds=1000)
    shares = [request_share(flow, cloud, image=image, accounts=[flow.delta, epsilon], copy_name=f"copy-{k}")
              for k, image in enumerate(("alpha-web-2025.01", "alpha-db-base"))]
    for share in shares:
        approve(flow, share)
    workers.run_jobs(until=lambda: Export.objects.filter(state=Export.State.RUNNING).exclude(task_id="").count() == 2)
    with cloud.world.lock:
        for export in Export.objects.all():
            task = cloud.world.tasks[export.task_id]
            task.started = time.monotonic() - task.duration
    Export.objects.update(next_poll_at=Export.objects.order_by("created_at").first().created_at)
    workers.flush()
    monkeypatch.setattr(import_starts, "HANDOFF_EARLY", 2)  # one export's two imports
    seen, completed = {}, []

    def complete(**kwargs):
        if completed:  # the second export: another worker takes the hand-off job meanwhile
            def other_worker():
                try:
                    seen["completed"] = Export.objects.filter(state=Export.State.COMPLETED).count()
                    seen["jobs"] = len(_handoff_jobs())
                    with job_context(job_id="import-handoff-test"):
                        import_starts.import_handoff(account_id=flow.alpha.public_id)
                    seen["created"] = _creates(cloud)
                finally:
                    connections.close_all()

            thread = threading.Thread(target=other_worker)
            thread.start()
            thread.join(timeout=30)
        completed.append(kwargs["export"].pk)
        export_completes.export_complete(**kwargs)

    monkeypatch.setattr(exports, "export_complete", complete)
    exports.export_sweep(account_id=flow.alpha.public_id)

    # The first export was committed, and its job queued, before the second was completed; the
    # other worker created its two imports meanwhile.
    assert seen == {"completed": 1, "jobs": 1, "created": 2}, seen
    recipients = Recipient.objects.filter(share__in=shares)
    assert recipients.count() == 4 and all(recipients.values_list("image_id", flat=True))
    assert _creates(cloud) == 4  # the sweep started the other two, and none twice
    assert set(recipients.values_list("start_tries", flat=True)) == {1}
    assert verify_chain().ok


def test_a_hand_off_job_goes_ahead_of_the_sweeps_waiting_in_its_queue(flow, cloud, settings):
    # A release to 1,000 accounts left thousands of their sweeps waiting on the poll queue, and
    # each hand-off job behind them all. Sweeps come back at their own time; a hand-off's creates
    # are what people wait for.
    from django.db import transaction

    from transfers import scheduling

    with transaction.atomic():
        for k in range(3):
            scheduling.enqueue("transfers.jobs.import_sweep_job", str(flow.delta.public_id), queue="poll",
                               job_id=f"import-sweep-test-{k}")
        import_starts.handoff_later(flow.alpha)
        scheduling.enqueue("transfers.jobs.import_sweep_job", str(flow.delta.public_id), queue="poll",
                           job_id="import-sweep-test-3")
    (poll,) = [queue for queue in workers.queues() if queue.name == "poll"]
    ids = poll.get_job_ids()
    assert ids[0].startswith("import-handoff-") and ids[1:] == [f"import-sweep-test-{k}" for k in (0, 1, 2, 3)], ids
