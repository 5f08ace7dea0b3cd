"""The fault run on more than one host (`bench_faults --hosts 2 --skew 5`; issue 19).

A "host" is a process group with a state directory of its own (OMIPORTAL_VAR_DIR), a host id of
its own (OMIPORTAL_HOST_ID: the machine's name is the same for all of them here, and a worker must
not take another host's live scheduler for dead), and, for every host after the first, a clock
skewed by libfaketime (LD_PRELOAD: the worker's time(), gettimeofday() and clock_gettime(REALTIME)
read ``skew`` seconds off, alternately ahead and behind; monotonic clocks move by the same constant,
which changes no interval). All
hosts share PostgreSQL, Redis and the audit checkpoint store: a bucket in the sandbox's OOS,
written with a signing key generated for the run, every ``checkpoint_every`` seconds.

What the run adds to the one-host checks (bench/faults.py):

- ``checkpoints_verify_from_every_host``: `manage.py audit_verify` run as each host (its
  environment, its clock, its state directory) verifies the chain and every checkpoint in the
  shared store, and the store holds at least one checkpoint;
- ``a_host_directory_is_caught``: the same verification with the checkpoints in that host's own
  directory (what OMIPORTAL_AUDIT_CHECKPOINT_DIR gives each host when nobody shares it) fails,
  since the trail's `audit.checkpointed` events name checkpoints that directory does not hold
  (production refuses the setting outright: omiportal.E013);
- with ``kill``, a worker of the first host is killed with SIGKILL (with its scheduler) once
  imports are under way, and another started in its place: its rows come back by their leases.
"""

from __future__ import annotations

import base64
import contextlib
import glob
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, NoEncryption, PrivateFormat

from bench import load

CHECKPOINT_ACCOUNT = "gamma"  # a recipient account: nothing else writes to its bucket
NO_FAKETIME = "libfaketime is not installed (Debian: apt-get install faketime; .ci/run installs it)"


def libfaketime() -> str:
    found = sorted(path for pattern in ("/usr/lib/*/faketime", "/usr/lib/faketime", "/usr/local/lib/faketime")
                   for path in glob.glob(f"{pattern}/libfaketimeMT.so.1"))
    if not found:
        raise RuntimeError(NO_FAKETIME)
    return found[0]


def skews(hosts: int, skew: float) -> list[float]:
    """The clock offset of each host: the first on time, then ahead, behind, ahead..."""
    return [0.0] + [skew if k % 2 else -skew for k in range(1, hosts)]


def workers_per_host(workers: int, hosts: int) -> int:
    return max(1, math.ceil(workers / hosts))


def signing_key() -> str:
    raw = Ed25519PrivateKey.generate().private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
    return base64.b64encode(raw).decode()


def checkpoint_settings(sandbox, *, tag: str, key: str, every: int) -> dict:
    """The shared checkpoint store: a bucket of the sandbox's OOS, a prefix of the run's own."""
    entry = sandbox.account(CHECKPOINT_ACCOUNT)
    return {"OMIPORTAL_AUDIT_SIGNING_KEY": key, "OMIPORTAL_AUDIT_CHECKPOINT_BUCKET": entry["bucket"],
            "OMIPORTAL_AUDIT_CHECKPOINT_REGION": entry["region"],
            "OMIPORTAL_AUDIT_CHECKPOINT_ACCESS_KEY": entry["access_key"],
            "OMIPORTAL_AUDIT_CHECKPOINT_SECRET_KEY": entry["secret_key"],
            "OMIPORTAL_AUDIT_CHECKPOINT_PREFIX": f"audit-checkpoints-{tag}/",
            "OMIPORTAL_AUDIT_CHECKPOINT_EVERY_SECONDS": str(every)}


def host_env(env: dict, log_dir: Path, *, host: int, tag: str, skew: float) -> dict:
    var_dir = log_dir / f"host-{host}" / "var"
    var_dir.mkdir(parents=True, exist_ok=True)
    out = {**env, "OMIPORTAL_VAR_DIR": str(var_dir), "OMIPORTAL_HOST_ID": f"faults-{tag}-host-{host}",
           "OMIPORTAL_AUDIT_CHECKPOINT_DIR": str(var_dir / "audit-checkpoints")}
    if skew:
        # The monotonic clocks move by the same constant (intervals unchanged): left unfaked
        # (FAKETIME_DONT_FAKE_MONOTONIC=1), libfaketime 0.9.10 makes every time.sleep() of Python 3.11
        # fail with EINVAL (it sleeps with clock_nanosleep on an absolute monotonic time).
        out.update({"LD_PRELOAD": libfaketime(), "FAKETIME": f"{skew:+g}s"})
    return out


class HostProcesses(load.Processes):
    """Worker processes, each started with the environment of its host."""

    def __init__(self, envs: list[dict], log_dir: Path):
        super().__init__(envs[0], log_dir)
        self.envs = envs
        self.host_of: dict[int, int] = {}  # pid -> host number (1-based)

    def start_on(self, host: int, name: str, argv: list[str]) -> subprocess.Popen:
        self.env = self.envs[host - 1]
        try:
            proc = self.start(name, argv)
        finally:
            self.env = self.envs[0]
        self.host_of[proc.pid] = host
        return proc

    def kill(self, proc: subprocess.Popen) -> None:
        """SIGKILL a worker and its scheduler (a forked child), as the OOM killer would."""
        with contextlib.suppress(psutil.NoSuchProcess):
            for child in psutil.Process(proc.pid).children(recursive=True):
                with contextlib.suppress(psutil.NoSuchProcess):
                    child.send_signal(signal.SIGKILL)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)
        self.procs = [(name, p) for name, p in self.procs if p is not proc]  # not reported as died


EARLIER_CHECKPOINTS = (
    "The audit trail of {name!r} already records {count} checkpoint(s), signed into an earlier run's sandbox "
    "bucket, which went with it: every host would rightly report them missing. The multi-host run needs a "
    "database whose trail has none: drop and create it (e.g. dropdb bench && createdb bench).")


def check_no_earlier_checkpoints() -> None:
    from django.db import connection

    from audit import checkpoints
    from audit.models import AuditEvent

    count = AuditEvent.objects.filter(action=checkpoints.ACTION).count()
    if count:
        raise load.Refused(EARLIER_CHECKPOINTS.format(name=connection.settings_dict.get("NAME"), count=count))


def wait_for_checkpoint(*, every: int, log) -> float:
    """Wait until the shared store holds a checkpoint of the chain as it stands now; returns the wait.

    The checkpoint job goes out on the default queue once per ``every`` seconds; under load it can
    wait there behind the transfers' own jobs until after the last transfer ended. Checking the
    checkpoints before one exists would test the queue's timing, not the store (an empty store
    fails the check): so the run waits for the event, bounded so a job that never runs fails."""
    from audit import checkpoints
    from audit.models import AuditChainHead

    head = AuditChainHead.objects.filter(pk=AuditChainHead.SINGLETON_ID).values_list("seq", flat=True).first() or 0
    began = time.monotonic()
    deadline = began + max(120.0, 20.0 * every)
    while True:
        stored = checkpoints.load_all()
        if stored and stored[-1].seq >= head:
            waited = time.monotonic() - began
            log(f"  checkpoint #{stored[-1].number} covers the trail through event {head} (waited {waited:.1f}s)")
            return round(waited, 1)
        if time.monotonic() > deadline:
            log(f"  !! no checkpoint covered event {head} within {deadline - began:.0f}s")
            return round(time.monotonic() - began, 1)
        time.sleep(0.5)


def current_job(proc: subprocess.Popen) -> str | None:
    """The job a worker process is running (rq's own record), unless it is the reconciler."""
    import django_rq
    from rq import Worker

    with contextlib.suppress(Exception):
        for worker in Worker.all(connection=django_rq.get_connection("default")):
            if worker.pid == proc.pid:
                job = worker.get_current_job_id()
                return job if job and not job.startswith("reconcile") else None
    return None


def jobs_by_host(procs: HostProcesses) -> dict:
    """Jobs each host's live workers have run (rq's counts; a killed worker's are gone with it)."""
    import django_rq
    from rq import Worker

    done: dict[str, int] = {}
    with contextlib.suppress(Exception):
        for worker in Worker.all(connection=django_rq.get_connection("default")):
            host = procs.host_of.get(worker.pid)
            if host is not None:
                done[f"host-{host}"] = done.get(f"host-{host}", 0) + worker.successful_job_count
    return dict(sorted(done.items()))


def verify_as(env: dict, **changes) -> dict:
    """`manage.py audit_verify` in a process with a host's environment (and ``changes``; None
    removes a variable): its exit status and last lines."""
    env = {**env, **{k: v for k, v in changes.items() if v is not None}}
    for name, value in changes.items():
        if value is None:
            env.pop(name, None)
    out = subprocess.run([sys.executable, str(load.BASE_DIR / "manage.py"), "audit_verify"], env=env,  # noqa: S603
                         cwd=load.BASE_DIR, capture_output=True, text=True, timeout=300)
    text = (out.stdout + out.stderr).strip().splitlines()
    return {"exit": out.returncode, "output": text[-3:]}


_OFFSET = """
import django, json
django.setup()
from django.utils import timezone
from omiportal import clock
timezone.now()
print(json.dumps(round(clock.offset(), 3)))
"""


def clock_offset(env: dict) -> float | None:
    """How far the host's own clock is from the database's, as the host measures it
    (omiportal/clock.py): about minus its skew."""
    out = subprocess.run([sys.executable, "-c", _OFFSET], env={**env, "DJANGO_SETTINGS_MODULE": "omiportal.settings"},  # noqa: S603
                         cwd=load.BASE_DIR, capture_output=True, text=True, timeout=120)
    if out.returncode != 0:
        return None
    return float(out.stdout.strip().splitlines()[-1])
