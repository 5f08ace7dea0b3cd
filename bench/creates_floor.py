"""The creates of a release alone: how soon this machine and the sandbox can answer them, with none
of the portal's own work. The floor under the fleet workload's hand-off.

The fleet workload's hand-off is the export's end seen → each recipient's `CreateImage` answered.
Part of it is the portal's (completions, claims, the write of the answers), the rest the creates
themselves, as many side by side as the workers have threads. This runs only that rest: the same
number of `CreateImage{FileLocation}` calls into the same number of accounts, from the same number
of processes with the same number of threads each (a worker's `OMIPORTAL_SWEEP_CONCURRENCY`),
through the portal's own cloud layer (`outscale`: the pace, the retries, one pre-signed manifest
link per create), with no database and nothing else to do. All processes start at one instant
and report when each of their creates was answered; the figures are counted from that instant.

No scheduler can hand a burst off faster than its creates can be answered: when this floor is
above a goal, the goal cannot be met on this machine, whatever the portal does.
"""

from __future__ import annotations

import json
import os
import queue
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime, timedelta

FLOOR_ACCOUNT_BASE = 710000000000  # clear of the fleet's accounts (workloads._FLEET_ACCOUNT_BASE)
PREFIX = "bench-floor/"


def _export(sandbox) -> dict:
    """An image of the sandbox's first account exported through the cloud layer: what every
    create's manifest link points at."""
    import outscale
    from outscale.credentials import Credentials

    owner = sandbox.account("alpha")
    creds = Credentials(owner["access_key"], owner["secret_key"], owner["region"])
    image = next(i["image_id"] for i in owner["images"] if i["kind"] == "owned")
    task = outscale.start_export(creds=creds, image_id=image, bucket=owner["bucket"], prefix=PREFIX)
    deadline = time.monotonic() + sandbox.durations["export_seconds"] + sandbox.durations["export_spread_seconds"] + 60
    while time.monotonic() < deadline:
        seen = outscale.read_export_tasks(creds=creds, task_ids=[task.task_id]).get(task.task_id)
        if seen is not None and seen.state == "completed":
            key = seen.manifest_key or outscale.find_manifest_key(creds=creds, bucket=owner["bucket"],
                                                                  prefix=seen.prefix or PREFIX).key
            return {"source": [owner["access_key"], owner["secret_key"], owner["region"]],
                    "bucket": owner["bucket"], "key": key}
        time.sleep(0.5)
    raise RuntimeError("the floor's export did not complete")


def run(sandbox, env: dict, *, processes: int, threads: int, accounts: int, creates: int, log=print) -> dict:
    """``creates`` imports into ``accounts`` new accounts (round robin), from ``processes`` child
    processes (started with ``env``, the workers' own) of ``threads`` threads each."""
    from bench import workloads
    from bench.measure import stats

    targets = workloads.seed_world_accounts(sandbox.world, count=accounts, prefix="floor", base=FLOOR_ACCOUNT_BASE)
    spec = {**_export(sandbox), "threads": threads,
            "creates": [[t["access_key"], t["secret_key"], t["region"], f"bench-floor-{i:06d}"]
                        for i, t in ((i, targets[i % accounts]) for i in range(creates))]}
    children, opened = [], sandbox.connections()["oapi"]
    with tempfile.TemporaryDirectory() as tmp:
        for k in range(processes):
            path = os.path.join(tmp, f"part-{k}.json")
            with open(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600), "w") as part:  # sandbox keys, still keys
                json.dump({**spec, "creates": spec["creates"][k::processes]}, part)
            children.append(subprocess.Popen(  # noqa: S603 - this interpreter, this module
                [sys.executable, "-c", "from bench import creates_floor; creates_floor.child()", path],
                env={**env, "DJANGO_SETTINGS_MODULE": "omiportal.settings"}, stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, text=True))
        for child in children:  # each has parsed the API spec and built its clients' layer
            if child.stdout.readline().strip() != "ready":
                raise RuntimeError("a floor process did not start")
        start_at = time.time() + 0.5
        for child in children:
            child.stdin.write(f"{start_at}\n")
            child.stdin.flush()
        answers = [json.loads(child.stdout.readline()) for child in children]
        for child in children:
            child.wait(30)
    done = sorted(t for answer in answers for t in answer["done"])
    errors = sum(answer["errors"] for answer in answers)
    result = {"creates": len(done), "errors": errors, "processes": processes, "threads": threads,
              "accounts": accounts, "answered_seconds": stats(done),
              "oapi_connections": sandbox.connections()["oapi"] - opened,
              "per_second": round(len(done) / done[-1], 1) if done and done[-1] > 0 else 0.0}
    answered = result["answered_seconds"]
    log(f"  the creates alone: {len(done)} answered ({errors} refused), p50/p95/max "
        f"{answered['p50']}/{answered['p95']}/{answered['max']} s, {result['per_second']}/s "
        f"({processes} processes × {threads} threads)")
    return result


def child() -> None:
    """One process of the floor: its share of the creates, side by side on its threads, from the
    instant the parent names; prints when each was answered (seconds from that instant)."""
    import django

    answer = os.fdopen(os.dup(1), "w")  # the parent reads this; anything else printed goes to stderr
    os.dup2(2, 1)
    django.setup()
    import outscale
    from outscale.credentials import Credentials

    with open(sys.argv[1]) as part:
        spec = json.load(part)
    outscale.warm_up()
    source = Credentials(*spec["source"])
    not_after = datetime.now(UTC) + timedelta(days=6)
    work: queue.SimpleQueue = queue.SimpleQueue()
    for item in spec["creates"]:
        work.put(item)
    done, errors, lock = [], [0], threading.Lock()

    def drain(start_at: float) -> None:
        while True:
            try:
                access_key, secret_key, region, name = work.get_nowait()
            except queue.Empty:
                return
            try:  # as the hand-off does: a link signed for each create, then the create
                link = outscale.presign_manifest(creds=source, bucket=spec["bucket"], key=spec["key"],
                                                 not_after=not_after)
                outscale.import_image(creds=Credentials(access_key, secret_key, region), file_location=link.url,
                                      name=name, description="bench_transfers: the creates alone")
                with lock:
                    done.append(round(time.time() - start_at, 4))
            except outscale.CloudError:
                with lock:
                    errors[0] += 1

    print("ready", file=answer, flush=True)
    start_at = float(sys.stdin.readline())
    while time.time() < start_at:
        time.sleep(0.001)
    pool = [threading.Thread(target=drain, args=(start_at,)) for _ in range(spec["threads"])]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    print(json.dumps({"done": done, "errors": errors[0]}), file=answer, flush=True)
