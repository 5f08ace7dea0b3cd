"""`make run`: set up and start everything for a local demo, in one terminal.

Runs migrations, starts the OUTSCALE sandbox, seeds demo teams (registering the
sandbox's accounts), then starts one RQ worker with its scheduler and the web
server. Ctrl-C stops them all.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

BASE_DIR = Path(__file__).resolve().parent.parent
VAR = BASE_DIR / "var"
MANAGE = [sys.executable, str(BASE_DIR / "manage.py")]
ADDRESS = os.environ.get("OMIPORTAL_RUN_ADDRESS", "127.0.0.1:8000")


def _manage(*args, env=None):
    subprocess.run([*MANAGE, *args], check=True, cwd=BASE_DIR, env=env)


def _start(name, args, env):
    print(f"» starting {name}", flush=True)
    return subprocess.Popen([*MANAGE, *args], cwd=BASE_DIR, env=env, start_new_session=True)


def _wait_for(path: Path, proc, timeout=60):
    deadline = time.monotonic() + timeout
    while not path.exists():
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"The sandbox did not start (see its output above); {path} never appeared.")
        time.sleep(0.2)


def main() -> None:
    VAR.mkdir(exist_ok=True)
    # Settings read no .env unless told to: this is the development flow that wants one.
    env = {"OMIPORTAL_ENV_FILE": ".env", **os.environ}
    procs = []
    try:
        _manage("migrate", "--noinput", env=env)
        describe_file = VAR / "sandbox.json"
        describe_file.unlink(missing_ok=True)
        sandbox = _start("the OUTSCALE sandbox", ["sandbox", "--base-port", "8700", "--export-seconds", "30",
                                                   "--import-seconds", "30", "--describe-file", str(describe_file)],
                         env)
        procs.append(sandbox)
        _wait_for(describe_file, sandbox)
        env["OMIPORTAL_OUTSCALE_ENDPOINTS"] = json.dumps(json.loads(describe_file.read_text())["regions"])
        _manage("seed_demo", "--sandbox", str(describe_file), env=env)
        procs.append(_start("a worker with its scheduler", ["rqworker", "poll", "default", "--with-scheduler"], env))
        procs.append(_start("the web server", ["runserver", ADDRESS, "--noreload"], env))
        print(f"\n  OMI Portal is up: http://{ADDRESS}/   (Ctrl-C stops everything)\n", flush=True)
        while all(p.poll() is None for p in procs):
            time.sleep(0.5)
        raise SystemExit("A component stopped; shutting down the others.")
    except KeyboardInterrupt:
        print("\nStopping…")
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


if __name__ == "__main__":
    main()
