"""Issue 18's fault mix: discovery, releases, imports, the latest tag and a retention run, for four
versions of a family, while the sandbox throttles calls and loses answers and a worker is killed
with SIGKILL in the middle of a job.

Platform publishes golden-web from alpha; Research subscribes with delta (us-east-2: by export) and
gamma (eu-west-2: by launch permission), its yes to every version's copy; a standing approval covers three
versions. Two real `manage.py rqworker` processes do the work. Each version is a new image in alpha,
found by discovery (the test's own scans and the workers' sweep, at once). While version 2's copies
are being tagged, the latest job's DeleteTags is held by OUTSCALE and the worker inside it is
killed; another takes its place. Version 4 comes after the approval is used up. Then Research keeps
the last version: its approver confirms the run and the older copies are deleted.

In the end: one FamilyVersion per image, one share per released version and none for the
others, every version shared or waiting with its reason, one copy per version and account, the
latest tag on exactly one copy per account (in the cloud and in the portal), exactly one
DeleteImage per deleted copy and none for the kept ones, and the audit chain intact.
"""

import contextlib
import time
from collections import Counter
from datetime import timedelta

import django_rq
import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone
from rq import Worker

from audit.verify import verify_chain
from distribution.models import (
    FAMILY_TAG,
    LATEST_TAG,
    Family,
    FamilyVersion,
    InventoryEntry,
    RetentionItem,
    RetentionRun,
    StandingApproval,
)
from distribution.services import approvals, discovery, retention, subscriptions
from sandbox import handlers
from sandbox import oapi as sandbox_oapi
from sandbox.faults import Decision
from tests import workers
from tests.inventory_world import source_image
from tests.transfer_world import access
from transfers.models import Recipient, Share

pytestmark = pytest.mark.django_db(transaction=True)

FAMILY = "golden-web"
ACCOUNTS = ("delta", "gamma")
# Shared by the workers and this process (its scans, signature and retention run).
PACE = {"OMIPORTAL_SWEEP_MIN_SECONDS": 0.2, "OMIPORTAL_SWEEP_MAX_SECONDS": 0.5,
        "OMIPORTAL_RECONCILE_GRACE_SECONDS": 1, "OMIPORTAL_RECONCILE_EVERY_SECONDS": 1,
        "OMIPORTAL_FAMILY_SCAN_SECONDS": 10,
        # A create whose answer was dropped is looked up again after this: the sandbox applies a
        # request before it drops the answer, never later (the default allows the real cloud two minutes).
        "OMIPORTAL_CREATE_SETTLE_SECONDS": 2}
WORKER_ENV = {**PACE, "OMIPORTAL_OUTSCALE_CONNECT_TIMEOUT": 1, "OMIPORTAL_OUTSCALE_READ_TIMEOUT": 5,
              "OMIPORTAL_OUTSCALE_RETRY_BASE_DELAY": 0.05, "OMIPORTAL_OUTSCALE_RETRY_MAX_DELAY": 0.2,
              "OMIPORTAL_OUTSCALE_CALLS_PER_SECOND": 100, "OMIPORTAL_SWEEP_BUDGET_SECONDS": 0.5,
              "OMIPORTAL_AUDIT_CHECKPOINT_EVERY_SECONDS": 0, "OMIPORTAL_AUDIT_VERIFY_EVERY_SECONDS": 0}
THROTTLE, LOST = 0.15, 0.05
# On top of the random mix, the first calls of these actions meet these faults, whatever the dice say.
FORCED = {"DeleteImage": [Decision(throttle_code="24"), Decision(lose_response="drop"), Decision(lose_response="500")],
          "CreateTags": [Decision(lose_response="500")], "DeleteTags": [Decision(lose_response="drop")]}
HOLD_S = 4  # the DeleteTags the killed worker is inside
STEP_S = 30  # for any one step to be reached


class Run:
    """The worker processes of the run, and what the sandbox saw."""

    def __init__(self, cloud, tmp_path):
        self.env = workers.worker_env(cloud, OMIPORTAL_AUDIT_CHECKPOINT_DIR=tmp_path / "worker-checkpoints",
                                      **WORKER_ENV)
        self.tmp_path, self.procs = tmp_path, []
        self.deletes: Counter = Counter()  # DeleteImage calls OUTSCALE ran, per image id
        self.held: list[str] = []  # actions held by OUTSCALE, in order
        self.faults: Counter = Counter()  # (fault, action) met by the portal's calls

    def start(self):
        with open(self.tmp_path / f"worker-{len(self.procs) + 1}.log", "wb") as log:
            self.procs.append(workers.start_worker(self.env, stdout=log))
        return self.procs[-1]

    def stop_all(self):
        for proc in self.procs:
            workers.kill_tree(proc)

    def logs(self) -> str:
        return "\n".join(f"--- {path.name}\n" + "\n".join(path.read_text(errors="replace").splitlines()[-15:])
                         for path in sorted(self.tmp_path.glob("worker-*.log")))


def _current_jobs() -> dict[int, str]:
    """Each live worker's pid and the job it is running (rq's own bookkeeping)."""
    return {w.pid: w.get_current_job_id() or "" for w in Worker.all(connection=django_rq.get_connection("default"))}


def _wait(predicate, what, run, timeout=STEP_S):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{_report()}\n{run.logs()}")
        time.sleep(0.1)


def _report() -> str:
    lines = [f"v{v.number} {v.state} {v.state_message!r} share={v.share_id}"
             for v in FamilyVersion.objects.order_by("number")]
    lines += [f"recipient {r.share.copy_name} -> {r.target_account.label}: {r.state} {r.state_message!r} "
              f"image={r.image_id!r} next look {r.next_poll_at} (now {timezone.now()})"
              for r in Recipient.objects.select_related("share", "target_account")]
    lines += [f"copy {e.image_id} {e.account.label} v{e.version.number if e.version else '?'} "
              f"tagged={e.family_tagged_at is not None} latest={e.is_latest} {e.cloud_state}"
              for e in InventoryEntry.objects.select_related("account", "version")]
    return "\n".join(lines)


def _worker_running(run, procs, prefix: str):
    """The worker process whose current job's id starts with ``prefix``."""
    deadline = time.monotonic() + HOLD_S
    while time.monotonic() < deadline:
        jobs = _current_jobs()
        for proc in procs:
            if jobs.get(proc.pid, "").startswith(prefix):
                return proc
        time.sleep(0.05)
    raise AssertionError(f"no worker was running a {prefix}* job: {_current_jobs()}\n{run.logs()}")


def _found(number: int) -> bool:
    return FamilyVersion.objects.filter(family__name=FAMILY, number=number).exists()


def _discover(w, run, number: int) -> None:
    """Look at alpha until version ``number`` is recorded: a look whose answer was lost or
    throttled past its retries fails, and the next one tries again (the workers' sweep looks too)."""
    deadline = time.monotonic() + STEP_S
    while not _found(number):
        discovery.family_scan_account(account_id=str(w.alpha.public_id), force=True)
        if time.monotonic() > deadline:
            raise AssertionError(f"version {number} was never found\n{_report()}\n{run.logs()}")
        time.sleep(0.1)


def _copies_tagged(number: int) -> bool:
    return InventoryEntry.objects.filter(version__number=number, family_tagged_at__isnull=False).count() \
        == len(ACCOUNTS)


def _latest_in_cloud(oapi, name) -> list[str]:
    return [i["ImageId"] for i in oapi(name).ReadImages(Filters={"Tags": [f"{LATEST_TAG}={FAMILY}"]})["Images"]]


@pytest.fixture
def run(flow, cloud, tmp_path, settings, monkeypatch):
    for name, value in PACE.items():
        setattr(settings, name, value)
    run = Run(cloud, tmp_path)
    real_delete, real_wait = sandbox_oapi.Oapi.DeleteImage, handlers.BaseHandler.wait

    def delete_counted(self, account, params):
        run.deletes[params.get("ImageId")] += 1  # under the world's lock: the action runs now
        return real_delete(self, account, params)

    def wait_noted(self, decision):
        if decision.hold:
            run.held.append(self.path)
        return real_wait(self, decision)

    real_decide, forced = cloud.faults.decide, {action: list(ds) for action, ds in FORCED.items()}

    def decide_forced(action, service="oapi"):
        with cloud.world.lock:
            decision = forced[action].pop(0) if service == "oapi" and forced.get(action) else None
        decision = decision or real_decide(action, service)
        fault = "throttled" if decision.throttle_code else "lost" if decision.lose_response else ""
        if fault:
            run.faults[fault, action] += 1
        return decision

    monkeypatch.setattr(sandbox_oapi.Oapi, "DeleteImage", delete_counted)
    monkeypatch.setattr(cloud.faults, "decide", decide_forced)
    monkeypatch.setattr(handlers.BaseHandler, "wait", wait_noted)
    try:
        yield run
    finally:
        run.stop_all()
        workers.flush()


def test_a_family_released_imported_tagged_and_retained_through_faults_and_a_killed_worker(flow, cloud, oapi, run):
    w = flow
    first, second = run.start(), run.start()  # their start-up overlaps the setting up
    family = Family.objects.create(team=w.source, source_account=w.alpha, name=FAMILY, match=Family.Match.NAME,
                                   name_pattern=f"{FAMILY}-*", created_by=w.src_member,
                                   last_scanned_at=timezone.now())
    subscriptions.subscription_create(access=access(w.dst_member, w.dest), family=family, accounts=[w.delta, w.gamma])
    terms = {"expires_at": (timezone.now() + timedelta(days=30)).replace(microsecond=0), "max_versions": 3}
    shown = approvals.standing_approval_preview(family=family, group=None, **terms)
    approval = approvals.standing_approval_sign(access=access(w.src_approver, w.source), family=family, group=None,
                                                digest=shown.digest, licence_confirmed=True, **terms)
    cloud.faults.configure(throttle_rate=THROTTLE, lost_response_rate=LOST, lost_response_mode="mixed")

    # --- Version 1: found, released, copied into both accounts, tagged latest. ------------------
    images = {1: source_image(cloud, f"{FAMILY}-2026.01")}
    _discover(w, run, 1)
    _wait(lambda: _copies_tagged(1), "version 1's copies, tagged", run)

    # --- Version 2: the worker inside the latest job's DeleteTags is killed. --------------------
    cloud.faults.configure(hold_seconds=HOLD_S, hold_rate=1.0, hold_actions={"DeleteTags"})
    images[2] = source_image(cloud, f"{FAMILY}-2026.02")
    _discover(w, run, 2)
    _wait(lambda: run.held, "a DeleteTags held by OUTSCALE", run)
    victim = _worker_running(run, (first, second), "latest-move-")
    workers.kill_tree(victim)  # SIGKILL, inside the held call
    cloud.faults.configure(hold_seconds=0)
    run.start()
    assert victim.poll() is not None

    # --- Version 3, then version 4 after the approval released its three. -----------------------
    images[3] = source_image(cloud, f"{FAMILY}-2026.03")
    _discover(w, run, 3)
    _wait(lambda: FamilyVersion.objects.get(number=3).state != FamilyVersion.State.FOUND, "version 3's release", run)
    images[4] = source_image(cloud, f"{FAMILY}-2026.04")
    _discover(w, run, 4)
    _wait(lambda: FamilyVersion.objects.get(number=4).state == FamilyVersion.State.WAITING, "version 4 to wait", run)
    _wait(lambda: all(_copies_tagged(n) for n in (1, 2, 3)), "every copy, tagged", run)

    # --- Retention: keep the last version; Research's approver confirms what its admin set. -----
    policy = retention.policy_set(access=access(w.dst_admin, w.dest), family=family, keep_last=1,
                                  delete_after_end_of_life=False)
    with contextlib.suppress(ValidationError):  # the workers' sweep may have proposed it first
        retention.retention_propose(policy=policy, access=access(w.dst_approver, w.dest))
    proposed = RetentionRun.objects.get(policy=policy, state=RetentionRun.State.PROPOSED)
    retention.run_confirm(access=access(w.dst_approver, w.dest), run=proposed)
    _wait(lambda: RetentionRun.objects.get(pk=proposed.pk).state == RetentionRun.State.DONE, "the run to end", run)
    cloud.faults.reset()

    # --- What the portal recorded, and what OUTSCALE did. ---------------------------------------
    versions = {v.number: v for v in FamilyVersion.objects.filter(family=family)}
    assert sorted(versions) == [1, 2, 3, 4]
    assert {n: v.image_id for n, v in versions.items()} == images  # one version per image
    for n in (1, 2, 3):
        assert versions[n].state == FamilyVersion.State.SHARED and versions[n].approval_id == approval.pk
        assert Share.objects.filter(source_image_id=images[n]).count() == 1  # one share per version
        assert sorted(Recipient.objects.filter(share=versions[n].share, state="completed")
                      .values_list("target_account__label", flat=True)) == list(ACCOUNTS)
    assert versions[4].state == FamilyVersion.State.WAITING and versions[4].share is None
    assert versions[4].state_message == (f"Standing approval {approval.pk} ended (All its 3 versions were "
                                         f"released): a new signature releases this version.")
    assert not Share.objects.filter(source_image_id=images[4]).exists()
    assert Share.objects.count() == 3
    assert StandingApproval.objects.get(pk=approval.pk).versions_used == 3
    for name in ACCOUNTS:  # one copy per version and account, whatever was retried
        account = getattr(w, name)
        assert cloud.created(account.account_id)["CreateImage"] == {f"{FAMILY}-v{n}": 1 for n in (1, 2, 3)}
        newest = InventoryEntry.objects.get(account=account, version__number=3)
        assert list(InventoryEntry.objects.filter(account=account, family=family, is_latest=True)) == [newest]
        assert _latest_in_cloud(oapi, name) == [newest.image_id]
        tagged = oapi(name).ReadImages(Filters={"Tags": [f"{FAMILY_TAG}={FAMILY}"]})["Images"]
        assert [i["ImageId"] for i in tagged] == [newest.image_id]  # the older copies are gone
    items = list(RetentionItem.objects.filter(run=proposed).select_related("entry__version"))
    assert sorted((i.entry.account.label, i.entry.version.number) for i in items) == [
        ("delta", 1), ("delta", 2), ("gamma", 1), ("gamma", 2)]
    assert {i.state for i in items} <= {RetentionItem.State.DELETED, RetentionItem.State.GONE}
    # Exactly one DeleteImage per deleted copy (a lost answer is looked up, never sent again), none for the rest.
    assert run.deletes == Counter({i.entry.image_id: 1 for i in items})
    for name in ACCOUNTS:
        assert cloud.counters(getattr(w, name).account_id).get("DeleteImage") == 2
    assert verify_chain().ok
    # The mix did meet the portal's calls: the forced faults, and throttling all along.
    met = Counter(fault for fault, _ in run.faults.elements())
    assert met["throttled"] >= 5 and met["lost"] >= 4, run.faults
    assert run.faults["throttled", "DeleteImage"] and run.faults["lost", "DeleteImage"] == 2
