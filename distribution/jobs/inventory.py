"""The inventory's job: one account's refresh (services/inventory_refresh.py); takes an id, safe to run twice."""

from rq import get_current_job

from audit.context import job_context
from distribution.services import inventory_refresh


def inventory_refresh_job(account_id: str) -> None:
    job = get_current_job()
    with job_context(job_id=job.id if job else f"inventory-refresh-{account_id}"):
        inventory_refresh.inventory_refresh(account_id=account_id)
