"""The settings a benchmark runs with, beside the ones that ship, and why each differs.

Every benchmark runs at the settings a deployment has, or prints each one it changes with its
reason (issue 14). The values are read where they act: in a process started with the workers'
environment (``worker_values``) or in this one (``process_values``); the shipped default in a
process started with the same environment minus the setting's variable, so a default that depends
on the database (``OMIPORTAL_SWEEP_CONCURRENCY``) is the one for this database.
"""

from __future__ import annotations

import json
import subprocess
import sys

from django.conf import settings

# The settings that decide how transfers run: pace, sweeps, the reconciler, the cloud client.
TRANSFER_SETTINGS = (
    "OMIPORTAL_OUTSCALE_CALLS_PER_SECOND",
    "OMIPORTAL_OUTSCALE_PACE_SHARED",
    "OMIPORTAL_SWEEP_MIN_SECONDS",
    "OMIPORTAL_SWEEP_MAX_SECONDS",
    "OMIPORTAL_SWEEP_GATHER_SECONDS",
    "OMIPORTAL_SWEEP_CONCURRENCY",
    "OMIPORTAL_SWEEP_BUDGET_SECONDS",
    "OMIPORTAL_RECONCILE_GRACE_SECONDS",
    "OMIPORTAL_RECONCILE_EVERY_SECONDS",
    "OMIPORTAL_OUTSCALE_CONNECT_TIMEOUT",
    "OMIPORTAL_OUTSCALE_READ_TIMEOUT",
    "OMIPORTAL_OUTSCALE_RETRY_ATTEMPTS",
    "OMIPORTAL_OUTSCALE_RETRY_BASE_DELAY",
    "OMIPORTAL_OUTSCALE_RETRY_MAX_DELAY",
    "OMIPORTAL_EXPORT_REUSE_MIN_HOURS",
    "OMIPORTAL_CREATE_SETTLE_SECONDS",
    "OMIPORTAL_STEP_MAX_ATTEMPTS",
    "OMIPORTAL_AUDIT_CHECKPOINT_EVERY_SECONDS",
    "OMIPORTAL_AUDIT_VERIFY_EVERY_SECONDS",
    "DATABASE_PREPARE_THRESHOLD",
)
# The variable each setting is read from, where it is not the setting's own name.
VARIABLE = {"DEBUG": "DJANGO_DEBUG"}

_READ = """
import json, sys
from django.conf import settings
print(json.dumps({name: getattr(settings, name, None) for name in sys.argv[1:]}, default=str))
"""


def _read(names, env: dict) -> dict:
    env = {**env, "DJANGO_SETTINGS_MODULE": "omiportal.settings"}
    out = subprocess.run([sys.executable, "-c", _READ, *names], env=env, cwd=settings.BASE_DIR,  # noqa: S603
                         capture_output=True, text=True, timeout=120)
    if out.returncode != 0:
        raise RuntimeError(f"could not read the settings in a child process: {out.stderr.strip()[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def shipped(names, env: dict) -> dict:
    """Each setting as a deployment with this environment, minus the settings' variables, has it."""
    variables = {VARIABLE.get(name, name) for name in names}
    return _read(names, {k: v for k, v in env.items() if k not in variables})


def worker_values(names, env: dict) -> dict:
    """Each setting as a process started with ``env`` (the workers' environment) has it."""
    return _read(names, env)


def process_values(names) -> dict:
    return {name: getattr(settings, name, None) for name in names}


def compare(values: dict, defaults: dict, reasons: dict, *, where: str) -> list[dict]:
    """Every setting with its value, its shipped default and, when they differ, why."""
    rows = []
    for name, value in values.items():
        default = defaults.get(name)
        changed = value != default
        rows.append({"setting": name, "where": where, "value": value, "default": default, "changed": changed,
                     "reason": (reasons.get(name) or "set in this run's environment") if changed else ""})
    return rows


def block(rows: list[dict]) -> str:
    """The printed "settings in force": the changed ones with their reason, then the rest."""
    changed = [r for r in rows if r["changed"]]
    lines = ["Settings in force" + (f" ({len(changed)} changed from the shipped defaults):" if changed
                                    else ": the shipped defaults")]
    for r in changed:
        lines.append(f"  CHANGED {r['setting']} = {r['value']} in the {r['where']} (shipped: {r['default']}): "
                     f"{r['reason']}")
    same = dict.fromkeys(f"{r['setting']}={r['value']}" for r in rows if not r["changed"])
    if same:
        lines.append("  at the shipped default: " + ", ".join(same))
    return "\n".join(lines)
