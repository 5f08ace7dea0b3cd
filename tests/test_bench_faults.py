"""The production-defaults fault run, small form (`manage.py bench_faults --small`; issue 14's proof).

Two real `rqworker poll default --with-scheduler` processes on the test database, every portal
setting as shipped (pace 5 calls/s, sweeps 5-60 s, reconciler every 30 s with a 60 s grace, 30 s
read timeout, three attempts), against a sandbox that answers in 100 ms, throttles 30 % of OAPI
calls, loses 5 % of the answers and holds 10 % of the creates 75 s (longer than the grace and the
read timeout) before it applies them. 24 imports go into one account and 6 over two others; some shares are of one
OMI (two of them copied first), some of an OMI of their own. Every check of the run must hold:
every transfer completed, one successful CreateImage per recipient and per copy-first, one
CreateImageExportTask per export (the sandbox's `created()`), nothing FAILED, nothing in the cloud
under the portal's names that no row points to, the audit chain verifies. About five minutes;
the database server is never restarted (tests/test_fault_runs.py does that).
"""

import pytest

from bench import faults
from tests import workers

pytestmark = [pytest.mark.defaults_fault_run, pytest.mark.django_db(transaction=True)]


def test_at_the_shipped_settings_every_transfer_ends_once_through_throttling_lost_answers_and_held_creates(
        tmp_path):
    workers.flush()
    try:
        result = faults.run(faults.small(out_dir=tmp_path, logs_dir=tmp_path, yes=True), log=print)
    finally:
        workers.flush()
    report = faults.table(result)
    print(report)  # shown with -s, and with a failure's output

    # The workers ran at the shipped defaults: the run changes nothing of theirs.
    assert not [r for r in result["settings"] if r["where"] == "workers" and r["changed"]], report
    assert result["held_creates"] > 0, "no create was held: the run did not test what it is for"
    failed = [name for name, check in result["checks"].items() if not check["met"]]
    assert not failed, f"checks failed: {failed}\n{report}"
