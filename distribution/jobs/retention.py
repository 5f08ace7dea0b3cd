"""Retention's job: delete what a confirmed run still has to delete (services/retention_deletes.py).
Takes the run's public id; safe to run twice, or twice at once (each copy is claimed once)."""

from rq import get_current_job

from audit.context import job_context
from distribution.services import retention_deletes


def retention_delete_job(run_id: str) -> None:
    job = get_current_job()
    with job_context(job_id=job.id if job else f"retention-delete-{run_id}"):
        retention_deletes.retention_delete(run_id=run_id)
