"""The latest pointer's job: thin, takes an id, safe to run twice (services/latest.py)."""

from rq import get_current_job

from audit.context import job_context
from distribution.services import latest


def latest_move_job(entry_id: str) -> None:
    job = get_current_job()
    with job_context(job_id=job.id if job else latest.job_id(entry_id)):
        latest.latest_move(entry_id=entry_id)
