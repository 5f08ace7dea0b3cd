"""Webhook jobs: thin, ids only, safe to run twice (the claim in delivery.py sends at most once)."""

from rq import get_current_job

from audit.context import job_context
from webhooks import delivery


def webhook_deliver_job(delivery_id: str) -> str:
    job = get_current_job()
    with job_context(job_id=job.id if job else f"webhook-deliver-{delivery_id}"):
        return delivery.webhook_deliver(delivery_id=delivery_id)
