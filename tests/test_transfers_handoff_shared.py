"""A hand-off larger than one process's pace into one account is shared with another worker
process (issue 19: the creates of a burst waited on one process's allowance while the other
worker's went unused), and each import is still started exactly once, whoever claims it."""

import pytest

from audit.models import AuditEvent
from tests import workers
from tests.transfer_world import approve, make_transfer_world, request_share
from transfers.models import Export, Recipient, Share
from transfers.services import import_starts

pytestmark = pytest.mark.django_db(transaction=True)


def _rows(*accounts):
    return [Recipient(pk=pk, target_account_id=account) for pk, account in enumerate(accounts, start=1)]


def test_every_other_start_of_a_burst_too_big_for_one_process_goes_to_another():
    rows = _rows(7, 7, 9, 7, 7, 9, 7)  # five into account 7, two into account 9
    mine, others = import_starts.share_out(rows, per_second=2)
    assert [r.pk for r in mine] == [1, 3, 4, 6, 7]  # 7's first, third and fifth (1, 4, 7); 9's both
    assert [r.pk for r in others] == [2, 5]
    mine, others = import_starts.share_out(rows, per_second=5)
    assert len(mine) == 7 and others == []  # each account's starts fit in this process's second


def _shares_to_delta(world, cloud, n):
    world.dest.auto_accept_incoming = True
    world.dest.save()
    shares = [request_share(world, cloud, accounts=[world.delta], copy_name=f"web-copy-{k}") for k in range(n)]
    for share in shares:
        approve(world, share)
    return shares


def _started_by(shares):
    return list(AuditEvent.objects.filter(action="import.started", details__recipient__in=[
        str(pk) for pk in Recipient.objects.filter(share__in=shares).values_list("public_id", flat=True)])
        .values_list("request_id", flat=True))


def test_with_no_other_worker_free_the_sweep_starts_the_whole_burst_itself(flow, cloud, settings):
    """One worker (this process): the hand-off job waits behind the sweep that queued it, so the
    sweep starts the other half too once done with its own; the job then finds nothing to start."""
    settings.OMIPORTAL_OUTSCALE_CALLS_PER_SECOND = 2
    shares = _shares_to_delta(flow, cloud, 5)
    workers.run_jobs(until=lambda: all(Share.objects.get(pk=s.pk).state == Share.State.COMPLETED for s in shares),
                     timeout=60)
    assert Export.objects.filter(shares__in=shares).distinct().count() == 1
    assert cloud.counters("444455556666").get("CreateImage") == 5  # delta: once each
    started_by = _started_by(shares)
    assert len(started_by) == 5 and all(r.startswith("export-sweep-") for r in started_by), started_by
    assert set(Recipient.objects.filter(share__in=shares).values_list("start_tries", flat=True)) == {1}


def test_past_its_budget_the_sweep_leaves_the_other_half_to_the_job(flow, cloud, settings):
    """With the budget spent on its own starts, the sweep does not claim the other half back from
    the job it queued (only to give most of it back unstarted): the job starts all of them."""
    settings.OMIPORTAL_OUTSCALE_CALLS_PER_SECOND = 2
    settings.OMIPORTAL_SWEEP_BUDGET_SECONDS = 0
    shares = _shares_to_delta(flow, cloud, 5)
    workers.run_jobs(until=lambda: all(Share.objects.get(pk=s.pk).state == Share.State.COMPLETED for s in shares),
                     timeout=60)
    recipients = list(Recipient.objects.filter(share__in=shares).order_by("pk"))
    job_half = {str(r.public_id) for r in recipients[1::2]}
    by_sweep = set(AuditEvent.objects.filter(action="import.started", request_id__startswith="export-sweep-")
                   .values_list("details__recipient", flat=True))
    assert by_sweep and not by_sweep & job_half, (by_sweep, job_half)
    assert cloud.counters("444455556666").get("CreateImage") == 5
    assert {r.start_tries for r in recipients} == {1}


def test_two_worker_processes_share_a_burst_and_start_each_import_once(cloud):
    """Two real worker processes at one call a second per account each: the sweep that sees the
    export end starts every other import into delta, the other worker's hand-off job the rest, at
    the same time; both claim from the same rows, and each import is created once."""
    workers.flush()
    world = make_transfer_world(cloud)
    cloud.set_durations(export_seconds=0.2, import_seconds=0.5)
    shares = _shares_to_delta(world, cloud, 6)
    env = workers.worker_env(cloud, OMIPORTAL_SWEEP_MIN_SECONDS=0.2, OMIPORTAL_SWEEP_MAX_SECONDS=0.5,
                             OMIPORTAL_OUTSCALE_CALLS_PER_SECOND=1, OMIPORTAL_OUTSCALE_RETRY_BASE_DELAY=0.05)
    procs = [workers.start_worker(env), workers.start_worker(env)]
    try:
        workers.wait_for(lambda: Recipient.objects.filter(share__in=shares).exclude(image_id="").count() == 6, 90,
              "every import to start")
    finally:
        for proc in procs:
            workers.kill_tree(proc)
        workers.flush()
    assert cloud.counters("444455556666").get("CreateImage") == 6
    assert set(Recipient.objects.filter(share__in=shares).values_list("start_tries", flat=True)) == {1}
    started_by = _started_by(shares)
    assert len(started_by) == 6
    assert sum(r.startswith("export-sweep-") for r in started_by) >= 3, started_by  # its own half at least
    assert any(r.startswith("import-handoff-") for r in started_by), started_by  # the other worker's
