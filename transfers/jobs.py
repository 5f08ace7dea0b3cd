"""Background jobs: thin, like views. Each takes ids only, re-reads the database and calls one
service; each is safe to run twice. The start jobs run their step through ``bounded.run_step``:
whatever it raises counts against its row, and the row's transfer fails after
OMIPORTAL_STEP_MAX_ATTEMPTS instead of coming back for ever."""

from rq import get_current_job

from audit.context import job_context
from transfers import notifications, scheduling
from transfers.services import (
    bounded,
    cleanup,
    copy_watch,
    export_cancels,
    export_starts,
    exports,
    import_starts,
    import_sweeps,
    preflight,
    reconcile,
)
from transfers.services.grant_releases import grants_release
from transfers.services.grants import grants_add
from transfers.services.object_grants import OBJECT_GRANT, object_grant
from transfers.services.object_revokes import object_grant_remove


def _job_id(kind: str, object_id: str) -> str:
    job = get_current_job()
    return job.id if job else f"{kind}-{object_id}"


def export_start_job(export_id: str) -> None:
    with job_context(job_id=_job_id("export-start", export_id)):
        bounded.run_step(bounded.EXPORT_START, export_id, lambda: export_starts.export_start(export_id=export_id))


def export_cancel_job(export_id: str) -> None:
    with job_context(job_id=_job_id("export-cancel", export_id)):
        bounded.run_step(export_cancels.EXPORT_CANCEL, export_id,
                         lambda: export_cancels.export_cancel(export_id=export_id))


def share_preflight_job(share_id: str) -> None:
    with job_context(job_id=_job_id("share-preflight", share_id)):
        preflight.share_preflight(share_id=share_id)


def recipient_preflight_job(recipient_id: str) -> None:
    # The recipient team's own job: its keys, its trail (never the source team's request).
    with job_context(job_id=_job_id("recipient-preflight", recipient_id)):
        preflight.recipient_preflight(recipient_id=recipient_id)


def export_sweep_job(account_id: str) -> None:
    with job_context(job_id=_job_id("export-sweep", account_id)):
        scheduling.sweep_begins("export", account_id)
        exports.export_sweep(account_id=account_id)


def import_start_job(recipient_id: str) -> None:
    with job_context(job_id=_job_id("import-start", recipient_id)):
        bounded.run_step(bounded.IMPORT_START, recipient_id,
                         lambda: import_starts.import_start(recipient_id=recipient_id, watched=True))


def copy_watch_job(recipient_ids: list[str]) -> None:
    # Queued by an earlier version (the rest of a watch that gave its worker away): this process's
    # watcher takes the copies over (copy_watch.py).
    with job_context(job_id=_job_id("copy-watch", recipient_ids[0] if recipient_ids else "none")):
        copy_watch.watch(recipient_ids=recipient_ids)


def import_handoff_job(account_id: str) -> None:
    with job_context(job_id=_job_id("import-handoff", account_id)):
        import_starts.import_handoff(account_id=account_id)


def import_sweep_job(account_id: str) -> None:
    # Each sweep it runs opens its own audit context (the sweeps taken beside it stand for their jobs).
    import_sweeps.import_sweeps_due(job_id=_job_id("import-sweep", account_id), account_id=account_id)


def export_cleanup_job(export_id: str) -> None:
    with job_context(job_id=_job_id("export-cleanup", export_id)):
        cleanup.export_cleanup(export_id=export_id)


def object_grant_job(recipient_id: str) -> None:
    with job_context(job_id=_job_id("object-grant", recipient_id)):
        bounded.run_step(OBJECT_GRANT, recipient_id, lambda: object_grant(recipient_id=recipient_id))


def object_grant_remove_job(recipient_id: str) -> None:
    with job_context(job_id=_job_id("object-grant-remove", recipient_id)):
        object_grant_remove(recipient_id=recipient_id)


def grant_add_job(share_id: str) -> None:
    # Bounded inside: an error counts against the share's grant rows (grants.GRANT_ADD).
    with job_context(job_id=_job_id("grant-add", share_id)):
        grants_add(share_id=share_id)


def grant_release_job(share_id: str) -> None:
    with job_context(job_id=_job_id("grant-release", share_id)):
        grants_release(share_id=share_id)


def reconcile_job() -> None:
    with job_context(job_id=_job_id("reconcile", "all")):
        reconcile.reconcile()


def notify_job(kind: str, object_ids: list[int]) -> None:
    # A job queued before emails were batched carries a single id.
    with job_context(job_id=_job_id(f"notify-{kind}", "batch")):
        notifications.send(kind, [object_ids] if isinstance(object_ids, int) else object_ids)
