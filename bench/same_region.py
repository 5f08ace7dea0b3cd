"""The same-Region phase of `bench_transfers`: every transfer grant → copy → revoke (issue 16).

1. Seeds teams and accounts under the phase's own tag (bench.load.seed); recipient teams accept
   automatically.
2. Requests the transfers (bench.workloads.plan_same_region: a target of another team in the
   source's Region, an image the source owns) with the workers running, and waits until each
   request's pre-flight checks are recorded, as they are before an approver opens it.
3. Approves every share (eight at a time) with the workers running: each transfer's clock starts
   at its own approval (`Share.decided_at`), as a person's does. Each approval queues one grant;
   nothing else is waiting. (The export phase's clock is a resume of suspended workers instead:
   the rq worker notices a resume only at its next one-second check, which is not the portal's.)
4. Waits until every recipient is final, then until every launch grant is removed.
5. Reports, from the sandbox's counters and call log and the rows: OAPI calls per transfer by
   action and purpose (grant, revoke: UpdateImage Additions, Removals), export tasks created
   (goal 0), UpdateImage additions and removals per share (goal one each), the permissions left
   on the sources (goal none) and any seeded one taken away; end-to-end time (its approval → the
   recipient completed) against the cloud's own copy time (CreateImage → the copy available in
   the sandbox), its p50/p95 over the copy time (goal: within 2 s), and where that time went
   (approval → granted → CreateImage → available → seen by a look → completed → grant removed).
   The bench process's CPU includes the approvals. Where the first look at each copy goes
   depends on the portal's history of similar copies (transfers/services/copy_looks.py): the
   plan in force when the phase starts (None: too little history, the grid's looks) is reported
   too, so a run on an empty database is told apart from one on a database with earlier runs.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import asdict

from accounts.models import Team
from bench import load, workloads
from bench.measure import (
    PURPOSES,
    CallLog,
    bench_cpu,
    counters,
    counters_diff,
    spread,
    stats,
    summary,
    wait_final,
    worker_cpu,
)
from transfers.models import LaunchGrant, Recipient, Share
from transfers.services import copy_looks

GOAL_OVER_COPY_SECONDS = 2.0  # issue 16: done within the cloud's copy time plus 2 s
FINAL = (Recipient.State.COMPLETED, Recipient.State.FAILED, Recipient.State.CANCELLED, Recipient.State.EXPIRED)
OPEN_GRANTS = LaunchGrant.OPEN_STATES
# Where a transfer's time goes, in order: (name, from, to) over the per-transfer moments below.
STAGES = (("approval → granted", "approved", "granted"), ("granted → CreateImage", "granted", "created"),
          ("CreateImage → available (cloud)", "created", "ready"), ("available → seen", "ready", "seen"),
          ("seen → completed", "seen", "completed"), ("completed → grant removed", "completed", "revoked"))


def permissions(sandbox) -> dict[str, set[str]]:
    """Who may launch each OMI of the sandbox besides its owner (read in the sandbox itself)."""
    with sandbox.world.lock:
        return {i.image_id: set(i.permitted_accounts) for i in sandbox.world.images.values()}


def _wait_for_preflight(share_ids, timeout: float, procs, log) -> None:
    def done():
        waiting = Share.objects.filter(pk__in=share_ids, preflight_checked_at__isnull=True).count()
        waiting += Recipient.objects.filter(share_id__in=share_ids, preflight={}).count()
        return len(share_ids) * 2 - waiting

    wait_final(done, len(share_ids) * 2, timeout, procs, "same-Region pre-flight checks", log)


def run(o, sandbox, calls: CallLog, procs, *, tag: str, n: int, log) -> dict:
    """One same-Region phase of ``n`` transfers (``o``: bench.transfers.Options)."""
    seeded = load.seed(sandbox, tag=tag, users=20)
    Team.objects.filter(pk__in=[t.pk for t in seeded.teams]).update(auto_accept_incoming=True)
    seeded_permissions = permissions(sandbox)
    shares = load.request_and_approve(sandbox, seeded, tag=tag, transfers=n, log=log,
                                      plan=workloads.plan_same_region, approved=False)
    share_ids = [s.pk for s in shares]
    _wait_for_preflight(share_ids, o.timeout, procs, log)
    plans = first_look_plans(shares)
    log(f"  first look (from the portal's history of similar copies): {plans}")
    calls.clear()
    before, cpu0, bench0 = counters(sandbox), worker_cpu(procs), bench_cpu()
    started = time.time()
    load.approve_all(seeded, shares)
    log(f"  {n} shares approved in {time.time() - started:.1f}s")

    def final():
        return Recipient.objects.filter(share_id__in=share_ids, state__in=FINAL).count()

    copies_ended = wait_final(final, n, o.timeout, procs, "same-Region copies", log)
    grants = LaunchGrant.objects.filter(share_id__in=share_ids, keep=False)
    n_grants = grants.count()
    ended = wait_final(lambda: n_grants - grants.filter(state__in=OPEN_GRANTS).count(), n_grants,
                       max(10.0, o.timeout - (copies_ended - started)), procs, "same-Region grants removed", log)
    time.sleep(1.5)  # let the workers settle, as the export phase does
    after, cpu1, bench1 = counters(sandbox), worker_cpu(procs), bench_cpu()
    window = calls.window(started, ended + 1.5)
    result = _figures(o, sandbox, calls, shares, seeded_permissions, started=started, ended=ended,
                      copies_ended=copies_ended, calls_diff=counters_diff(before, after), cpu=cpu1 - cpu0,
                      bench_seconds=bench1 - bench0, window=window)
    result["first_look_plans"] = plans
    return result


def first_look_plans(shares) -> dict:
    """The first-look plan each source size gets as the phase starts (read as a worker reads it)."""
    copy_looks.forget()
    sizes = sorted({(s.source_facts or {}).get("size_gib") for s in shares}, key=str)
    return {str(size): (asdict(plan) if (plan := copy_looks.plan_for(size)) else None) for size in sizes}


def _figures(o, sandbox, calls: CallLog, shares, seeded_permissions, *, started, ended, copies_ended, calls_diff,
             cpu, bench_seconds, window) -> dict:
    share_ids = [s.pk for s in shares]
    n = len(shares)
    recipients = list(Recipient.objects.filter(share_id__in=share_ids).select_related("share"))
    grant_rows = {(g.share_id, g.grantee_account_id): g for g in LaunchGrant.objects.filter(share_id__in=share_ids)}
    completed = [r for r in recipients if r.state == Recipient.State.COMPLETED]
    moments, copy_seconds, over_copy, totals, trace = [], [], [], [], []
    for r in recipients:
        grant = grant_rows.get((r.share_id, r.bound_account_id))
        created = calls.created.get(r.image_id)
        approved = r.share.decided_at.timestamp() if r.share.decided_at else None
        m = {"approved": approved, "granted": grant.granted_at.timestamp() if grant and grant.granted_at else None,
             "created": created[0] if created else None, "ready": created[1] if created else None,
             "seen": calls.image_seen.get(r.image_id),
             "completed": r.completed_at.timestamp() if r.state == Recipient.State.COMPLETED and r.completed_at
             else None,
             "revoked": grant.revoked_at.timestamp() if grant and grant.revoked_at else None}
        moments.append(m)
        trace.append({"source": r.share.source_image_id, "target": r.bound_account_id, "method": r.method,
                      **{k: round(v - started, 3) if v is not None else None for k, v in m.items()}})
        if m["completed"] is not None and created and approved:
            copy = created[1] - created[0]
            copy_seconds.append(copy)
            totals.append(m["completed"] - approved)
            over_copy.append(m["completed"] - approved - copy)
    stages = {name: stats(m[b] - m[a] for m in moments if m[a] is not None and m[b] is not None)
              for name, a, b in STAGES}
    purposes = Counter(c[3] for c in window)
    after = permissions(sandbox)
    grantees = {g.grantee_account_id for g in grant_rows.values()}
    left = {i: sorted((after.get(i, set()) - seeded_permissions.get(i, set())) & grantees) for i in after}
    taken = {i: sorted(seeded_permissions[i] - after.get(i, set())) for i in seeded_permissions}
    result = summary(
        kind="same-region", n=n, completed=len(completed), failed=len(recipients) - len(completed), calls=calls_diff,
        cpu=cpu, bench_seconds=bench_seconds, started=started, ended=ended, window=spread(window),
        detection={"copy": stages["available → seen"]}, handoff=[m["created"] - m["granted"] for m in moments
                                                                 if m["created"] and m["granted"]],
        overhead=over_copy, totals=totals, exports=calls_diff.get("CreateImageExportTask", 0), log_calls=window)
    result.update({
        "methods": dict(Counter(r.method for r in recipients)),
        "recipient_states": dict(Counter(r.state for r in recipients)),
        "failures": dict(Counter(r.state_message[:160] for r in recipients
                                 if r.state != Recipient.State.COMPLETED).most_common(5)),
        "refused_by_the_cloud": dict(calls.refused),
        "export_rows": Share.objects.filter(pk__in=share_ids, export__isnull=False).count(),
        "copy_seconds": stats(copy_seconds),
        "end_to_end_seconds": stats(totals),
        "over_copy_seconds": stats(over_copy),
        "stages_seconds": stages,
        "copies_final_after_seconds": round(copies_ended - started, 1),
        "grants": {"rows": len(grant_rows), "states": dict(Counter(g.state for g in grant_rows.values())),
                   "additions": purposes.get("grant", 0), "removals": purposes.get("revoke", 0),
                   "additions_per_share": round(purposes.get("grant", 0) / max(1, n), 3),
                   "removals_per_share": round(purposes.get("revoke", 0) / max(1, n), 3)},
        "permissions_left": {i: ids for i, ids in left.items() if ids},
        "seeded_permissions_removed": {i: ids for i, ids in taken.items() if ids},
        # Each transfer's moments and each OAPI call, in seconds from the first approval: where the
        # time went, transfer by transfer (the stages above are their quantiles).
        "trace": {"transfers": sorted(trace, key=lambda t: t["approved"] or 0),
                  "calls": [(round(c[0] - started, 3), c[1], c[2], c[3]) for c in window]},
        "preflight": dict(Counter(f"{check.get('name')}: {check.get('status')}" for r in recipients
                                  for check in (r.preflight or {}).get("checks", []))),
    })
    return result


def goals(result: dict) -> dict:
    over = result["over_copy_seconds"]
    grants = result["grants"]
    n = result["transfers"]
    return {
        "all_completed": {"goal": "every transfer completed", "value": f"{result['completed']}/{n}",
                          "met": result["all_completed"]},
        "no_export": {"goal": "0 export tasks", "value": result["exports_created"],
                      "met": result["exports_created"] == 0 and result["export_rows"] == 0},
        # Shares of one image to one account share OUTSCALE's one permission: each grant adds it (at
        # most one addition per share), the last one done removes it (grant.released for the others),
        # so removals count the (image, account) pairs, not the shares. A share whose account the owner
        # had already granted outside the portal copies directly: no grant at all.
        "one_grant_one_removal": {
            "goal": "at most one UpdateImage addition per share, at most one removal per grant, every grant ended",
            "value": f"{grants['additions']} / {grants['removals']} for {n} shares; {grants['states']}",
            "met": grants["additions"] <= n and grants["removals"] <= sum(grants["states"].values())
            and set(grants["states"]) <= {LaunchGrant.State.REVOKED}},
        "no_permission_left": {"goal": "no recipient left in PermissionsToLaunch",
                               "value": result["permissions_left"] or "none", "met": not result["permissions_left"]},
        "within_copy_plus_2s": {
            "goal": f"end-to-end - copy time <= {GOAL_OVER_COPY_SECONDS:g} s (p95)",
            "value": f"p50 {over.get('p50')} s, p95 {over.get('p95')} s",
            "met": bool(over.get("count")) and over["p95"] <= GOAL_OVER_COPY_SECONDS},
    }


# --- the table ------------------------------------------------------------------------------------


def _q(d: dict, *keys: str) -> str:
    return " / ".join(f"{d[k]:.2f}" for k in keys) if d.get("count") else "-"


def table(entry: dict) -> str:
    """The same-Region phase beside the export path of the same run (when it ran)."""
    sr, export = entry["same_region"], entry.get("portal")
    cols = [("export path", export)] if export else []
    cols.append(("same Region", sr))
    rows = [("completed", lambda r: f"{r['completed']}/{r['transfers']}"),
            ("OAPI calls / transfer", lambda r: f"{r['oapi_calls_per_transfer']:.2f}")]
    actions = sorted({a for _, r in cols for a in r["oapi_calls_per_transfer_by_action"]})
    for a in actions:
        rows.append((f"  {a}", lambda r, a=a: f"{r['oapi_calls_per_transfer_by_action'].get(a, 0):.2f}"))
    for k in PURPOSES:
        rows.append((f"  by purpose: {k}", lambda r, k=k: f"{r['oapi_calls_per_transfer_by_purpose'].get(k, 0):.2f}"))
    rows += [("export tasks created", lambda r: str(r["exports_created"])),
             ("end-to-end p50 / p95 s", lambda r: _q(r["total_seconds"], "p50", "p95")),
             ("  minus cloud time p50/p95", lambda r: _q(r["overhead_seconds"], "p50", "p95")),
             ("worker CPU s / transfer", lambda r: f"{r['worker_cpu_seconds_per_transfer']:.3f}"),
             ("peak calls/s/account", lambda r: str(r["peak_calls_per_second_per_account"])),
             ("wall s", lambda r: f"{r['wall_seconds']:.0f}")]
    width = 32
    lines = [f"{entry['transfers']} transfers: same Region (grant → copy → revoke)"
             + (" beside the export path" if export else ""),
             f"{'':<{width}}" + "".join(f"{name:>14}" for name, _ in cols)]
    for label, fn in rows:
        lines.append(f"{label:<{width}}" + "".join(f"{fn(r):>14}" for _, r in cols))
    g = sr["grants"]
    lines += [f"same Region: UpdateImage additions / removals per share {g['additions_per_share']:.2f} / "
              f"{g['removals_per_share']:.2f}; grants {g['states']}; permissions left "
              f"{sr['permissions_left'] or 'none'}; seeded permissions taken away "
              f"{sr['seeded_permissions_removed'] or 'none'}",
              f"same Region: cloud copy time p50 {_q(sr['copy_seconds'], 'p50')} s; end-to-end minus copy time "
              f"p50 / p95 / max {_q(sr['over_copy_seconds'], 'p50', 'p95', 'max')} s; where it went (p50 / p95 s):"]
    for name, _, _ in STAGES:
        lines.append(f"  {name:<34}{_q(sr['stages_seconds'][name], 'p50', 'p95'):>16}")
    for size, plan in (sr.get("first_look_plans") or {}).items():
        lines.append(f"same Region: first look at a {size} GiB copy: " + (
            f"{plan['first']:.1f} s after its create, then every {plan['step']:.1f} s until {plan['last']:.1f} s "
            f"(from {plan['count']} similar copies, median {plan['expected']:.1f} s)" if plan
            else "on the grid (too few similar copies in the history)"))
    if sr["refused_by_the_cloud"] or sr["failures"]:
        lines.append(f"same Region: refused by the cloud {sr['refused_by_the_cloud']}; not completed {sr['failures']}")
    lines.append("goals (same Region): " + "; ".join(f"{k} {'met' if g['met'] else 'NOT met'} ({g['value']})"
                                                     for k, g in entry["same_region_goals"].items()))
    return "\n".join(lines)
