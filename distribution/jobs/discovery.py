"""The discovery job: thin, an account's public id only, safe to run twice (the scan claims the
account's families, so a second run within the period reads nothing)."""

from rq import get_current_job

from audit.context import job_context
from distribution.services import discovery


def family_scan_job(account_id: str) -> None:
    job = get_current_job()
    with job_context(job_id=job.id if job else f"family-scan-{account_id}"):
        discovery.family_scan_account(account_id=account_id)
