"""A worker's share of the CPU below the web tier's, where the kernel actually weighs it.

A transfer waits minutes on the cloud anyway; a person waits on the page. On a host that serves
both, the workers should take the cores the web tier leaves. ``nice`` alone does not do that on
Linux: with autogroups on (``/proc/sys/kernel/sched_autogroup_enabled``, the default of most
distributions), the scheduler first shares the CPU equally between *sessions*, and nice only
orders the threads inside one. A worker started in a session of its own (by systemd, a
supervisor, ``setsid``, or a benchmark that starts it with ``start_new_session``) therefore gets
a full session's share at nice 10 as at nice 0: measured on 2 cores, four busy processes, two at
nice 10 in sessions of their own, got 50 % each. With the session's autogroup at nice 10 as well,
the two got 18 %.

So a worker that leads its own session lowers both: its threads (the ones it starts later
inherit it) and its session's autogroup, which holds only itself and its scheduler child. A
worker that shares a session (started from a shell beside the web server) lowers only its own
nice, which is what orders it against the processes of that session; the session's autogroup
holds others, which are not the worker's to slow down. Under a service manager with a CPU
controller (systemd's ``CPUWeight=``) the weight of each service's cgroup decides first: set it
there (README, "Production").
"""

import os
from pathlib import Path

AUTOGROUP = Path("/proc/self/autogroup")


def yield_cpu(nice: int, *, autogroup: Path = AUTOGROUP) -> list[str]:
    """Lower this process to ``nice`` (never raise it) and, if it leads its own session, its
    autogroup too. Returns what was done, in words, for the worker's start-up log."""
    done: list[str] = []
    if nice <= 0:
        return done
    if os.getpriority(os.PRIO_PROCESS, 0) < nice:
        os.setpriority(os.PRIO_PROCESS, 0, nice)
        done.append(f"nice {nice}")
    if os.getsid(0) != os.getpid():
        done.append("its session holds other processes: only its own nice orders it against them")
        return done
    try:
        current = int(autogroup.read_text().split("nice")[-1])
    except (OSError, ValueError):
        return done  # no autogroups here (another kernel, a CPU controller decides): nothing to lower
    if current < nice:
        try:
            autogroup.write_text(str(nice))
        except OSError as exc:
            done.append(f"its session's autogroup could not be lowered ({exc.strerror})")
        else:
            done.append(f"its session's autogroup at nice {nice}")
    return done
