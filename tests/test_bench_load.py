"""The load benchmark's small form: Locust people against a live server, so the harness cannot rot.

Not timings: that every page kind is visited and answered, sign-ins work, the samples are split
and compared as the benchmark does, and the benchmark's web command is the README's.
"""

import http.client
import os
import re
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from accounts.models import Role
from bench import fill, load, people
from bench.users import Persona
from tests.workers import database_url
from transfers import scheduling

README = Path(__file__).resolve().parents[1] / "README.md"
PASSWORD = "people-who-think"  # noqa: S105 - a test's throwaway people
PAGE_KINDS = {"dashboard", "share_list", "share_detail", "progress_json", "inbox", "share_new", "audit_list"}


def test_the_benchmark_serves_the_portal_with_the_readmes_commands():
    readme = " ".join(README.read_text().split())  # the README wraps its lines
    assert " ".join(["gunicorn omiportal.wsgi --bind 0.0.0.0:8000", *load.GUNICORN]) in readme
    assert f"OMIPORTAL_WORKER_NICE={load.WORKER_NICE} python manage.py rqworker poll default --with-scheduler" in readme
    argv, differs = load.gunicorn_argv(load.Options(), 8123)
    assert argv[argv.index("omiportal.wsgi"):] == ["omiportal.wsgi", "--bind", "127.0.0.1:8123", *load.GUNICORN]
    assert differs == []
    argv, differs = load.gunicorn_argv(load.Options(web_workers=3), 8123)
    assert differs and "--workers 3" in differs[0] and argv[argv.index("--workers") + 1] == "3"
    argv, differs = load.gunicorn_argv(load.Options(web_class="gthread", web_threads=4, web_keep_alive=10), 8123)
    assert len(differs) == 3 and argv[-4:] == ["--threads", "4", "--keep-alive", "10"]
    assert argv[argv.index("--worker-class") + 1] == "gthread"


def test_sandbox_nice_renices_the_other_threads_and_the_threads_they_start_not_the_caller():
    """``--sandbox-nice``: the sandbox's threads (and each request thread they start later) give
    the CPU to the web tier; the bench's own thread, which starts Locust, keeps its nice."""
    go, seen = threading.Event(), {}

    def sandbox_like():
        go.wait()
        started = threading.Thread(target=lambda: seen.setdefault("started later", os.getpriority(
            os.PRIO_PROCESS, threading.get_native_id())))
        started.start()
        started.join()
        seen["running"] = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    mine = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    thread = threading.Thread(target=sandbox_like)
    thread.start()
    try:
        load.renice_other_threads(min(mine + 5, 19))
    finally:
        go.set()
        thread.join()
    assert seen == {"running": min(mine + 5, 19), "started later": min(mine + 5, 19)}
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == mine


def test_the_readmes_web_command_never_leaves_a_client_a_connection_it_is_about_to_close():
    """A client that kept an idle connection the server was closing got no answer to its next click
    (7 of 1,390 requests at gunicorn's 2 s keep-alive, with gthread). The README's sync workers say
    ``Connection: close`` with every answer, so a person's next click, however long the pause,
    goes out on a fresh connection."""
    port = load.free_port()
    server = subprocess.Popen([sys.executable, "-m", "gunicorn", "tests.wsgi_hello:app", "--bind",  # noqa: S603
                               f"127.0.0.1:{port}", *load.GUNICORN], cwd=README.parent,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                connection.request("GET", "/")
                break
            except ConnectionRefusedError:
                assert time.monotonic() < deadline, "gunicorn did not start"
                time.sleep(0.1)
        response = connection.getresponse()
        assert response.read() == b"ok"
        assert response.getheader("Connection") == "close"
        time.sleep(3)  # a person reads the page
        connection.request("GET", "/")
        assert connection.getresponse().read() == b"ok"
        connection.close()
    finally:
        server.terminate()
        server.wait(timeout=10)


@pytest.fixture
def personas(transactional_db, settings, tmp_path):
    settings.OMIPORTAL_AUDIT_CHECKPOINT_DIR = str(tmp_path)
    world = fill.ensure_world()
    fill.fill_shares(world, 30, log=lambda line: None)
    team = world.big
    share_ids = [public_id for public_id, _ in world.share_targets[team.pk]][:10]
    out = []
    for role in (Role.MEMBER, Role.AUDITOR):
        user = world.members[team.pk][role.value]
        user.set_password(PASSWORD)
        user.save(update_fields=["password"])
        out.append(Persona(email=user.email, password=PASSWORD, team_id=str(team.public_id), role=role.value,
                           share_ids=share_ids))
    return out


def test_three_people_who_think_visit_every_page_kind_without_an_error(live_server, personas, tmp_path):
    # Each phase is a number of clicks made once everyone has signed in (its seconds only a cap):
    # a phase of a few seconds could end, on a busy machine, before the sign-ins did.
    every_kind = len(PAGE_KINDS)  # the person alone visits the kinds in turn
    baseline = people.Phase("baseline", users=1, seconds=90, think=(0.05, 0.1), spawn_rate=1, clicks=every_kind)
    proc, path = people.start(baseline, base_url=live_server.url, people=personas, work_dir=tmp_path, env=None)
    _, alone = people.finish(proc, path, timeout=120)

    load_phase = people.Phase("load", users=3, seconds=90, think=(0.1, 0.3), spawn_rate=3, clicks=5)
    proc, path = people.start(load_phase, base_url=live_server.url, people=personas, work_dir=tmp_path, env=None)
    arriving, under = people.finish(proc, path, timeout=120)

    # Alone again after the load (bench_load: on the data the run left), as the baseline visits.
    proc, path = people.start(people.Phase("after", users=1, seconds=90, think=(0.05, 0.1), spawn_rate=1,
                                           clicks=every_kind),
                              base_url=live_server.url, people=personas, work_dir=tmp_path, env=None)
    _, alone_after = people.finish(proc, path, timeout=120)

    alone_kinds, under_kinds = people.summarize(alone), people.summarize(under)
    assert set(alone_kinds) >= PAGE_KINDS  # one person visits every kind in turn
    assert set(people.summarize(alone_after)) >= PAGE_KINDS
    assert {"login_form", "login"} <= set(people.summarize(arriving + alone))
    assert len(under_kinds) >= 3 and {"login", "login_form"}.isdisjoint(under_kinds)  # signed in while arriving
    # The phases ended by their clicks, not their caps: every person stopped after its own.
    assert len(alone) == len(alone_after) == every_kind
    # Five clicks each once all had signed in, and up to two that the first two began before the
    # last one arrived and that ended after (a visit to the inbox may accept offers too).
    assert len([s for s in under if s[0] != "accept"]) <= 3 * 5 + 2
    errors = [s for s in alone + arriving + under + alone_after if s[3]]
    assert errors == []
    rows = people.compare(alone_kinds, under_kinds, people.summarize(alone_after))
    assert {r["kind"] for r in rows} == set(under_kinds)
    for row in rows:
        assert row["errors"] == 0 and (row["ratio_p95"] is not None or row["kind"] not in PAGE_KINDS), row
        assert row["ratio_p95_after"] is not None or row["kind"] not in PAGE_KINDS, row
    assert all(re.search(rf"^{kind}\s+\d+", people.table(rows), re.M) for kind in under_kinds)
    assert "after p95" in people.table(rows)
    assert "after p95" not in people.table(people.compare(alone_kinds, under_kinds))


def test_a_groups_cpu_leaves_out_the_children_counted_in_another_group():
    # The web and the workers are children of the bench process: counted with it, the sandbox's
    # share of the cores was each run's web and workers again (read as "the sandbox used 1.4 cores").
    # The "bench" here is a process of its own that only sleeps: this test process has other
    # threads (and polls /proc), so its own CPU is no measure of a sleeping parent.
    spin = "import sys, time\nend = time.process_time() + 1.0\nwhile time.process_time() < end: pass\nsys.stdin.read()"
    parent_code = (
        "import subprocess, sys\n"
        f"child = subprocess.Popen([sys.executable, '-c', {spin!r}], stdin=subprocess.PIPE)\n"
        "print(child.pid, flush=True)\n"
        "sys.stdin.read()\n"
        "child.communicate(b'', timeout=10)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", parent_code], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        child_pid = int(parent.stdout.readline())
        groups = {"bench": [parent.pid], "child": [child_pid]}
        before = people.cpu_seconds(groups)
        while people.cpu_seconds(groups)["child"] - before["child"] < 0.8:
            time.sleep(0.05)
        after = people.cpu_seconds(groups)
    finally:
        parent.communicate(b"", timeout=10)
    assert after["child"] - before["child"] >= 0.8
    assert after["bench"] - before["bench"] < 0.5  # the parent sleeping, not its child's second


@pytest.mark.django_db(transaction=True)
def test_the_requests_background_jobs_run_before_the_baseline_and_the_transfers_steps_wait(settings, tmp_path):
    """The pre-flight checks and mails of the requests run in a burst worker of their own before
    the baseline (a deployment has run them by the time a request is approved); the transfers'
    steps stay queued for the load phase."""

    for name in (scheduling.BACKGROUND, "default"):
        scheduling.get_queue(name).empty()
    scheduling.enqueue("transfers.jobs.share_preflight_job", str(uuid.uuid4()), job_id=f"bg-{uuid.uuid4()}",
                       queue=scheduling.BACKGROUND)
    scheduling.enqueue("transfers.jobs.notify_job", "share_ready", [], job_id=f"bg-{uuid.uuid4()}",
                       queue=scheduling.BACKGROUND)
    step = f"step-{uuid.uuid4()}"
    scheduling.enqueue("transfers.jobs.export_start_job", str(uuid.uuid4()), job_id=step)
    env = {**os.environ, "OMIPORTAL_ENV_FILE": "", "DATABASE_URL": database_url(), "REDIS_URL": settings.REDIS_URL}
    said = []
    processes = load.Processes(env, tmp_path)
    drained = load.drain_background(processes, load.Options(worker_nice=0), log=said.append)
    assert drained["jobs"] == 2 and drained["left"] == 0, (drained, (tmp_path / "background-first.log").read_text())
    assert scheduling.get_queue(scheduling.BACKGROUND).count == 0
    assert step in scheduling.get_queue("default").get_job_ids()  # the export's start waits for the load phase
    assert "2 in" in said[0] and processes.dead() == []
    scheduling.get_queue("default").empty()


def test_the_verdict_after_the_run_names_the_kinds_it_could_not_measure():
    # accept has no request after the run (no offer is left): named, not counted as a miss.
    rows = people.compare(
        baseline={"inbox": _timing(20), "accept": _timing(20)},
        load={"inbox": _timing(38), "accept": _timing(30)},
        after={"inbox": _timing(20)})
    assert people.within_after(rows) == (True, ["accept"])
    rows = people.compare(baseline={"inbox": _timing(20)}, load={"inbox": _timing(41)}, after={"inbox": _timing(20)})
    assert people.within_after(rows) == (False, [])


def _timing(p95_ms: float) -> dict:
    return {"count": 50, "p50_ms": p95_ms / 2, "p95_ms": p95_ms, "p99_ms": p95_ms, "errors": 0}
