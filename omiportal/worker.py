"""The portal's RQ worker: parses the OAPI spec once before forking, and runs the
reconciler on every maintenance tick, so a flushed Redis never strands a transfer."""

import contextlib
import logging
import time

import django_rq
from django.conf import settings
from rq import Worker
from rq.serializers import JSONSerializer

logger = logging.getLogger(__name__)


def ensure_reconcile_enqueued() -> None:
    """Enqueue the reconciler for this tick unless another worker already did.

    The job id names the tick slot: a failed or killed run only blocks its own slot (rq keeps
    a failed job's record, and a unique enqueue with that id would be refused), so the safety
    net is back on the next tick.
    """
    from rq.exceptions import DuplicateJobError

    slot = int(time.time() // max(1.0, settings.OMIPORTAL_RECONCILE_EVERY_SECONDS))
    with contextlib.suppress(DuplicateJobError):
        django_rq.get_queue("poll").enqueue("transfers.jobs.reconcile_job", job_id=f"reconcile-{slot}", unique=True,
                                            result_ttl=0, failure_ttl=300)


class PortalWorker(Worker):
    def __init__(self, *args, **kwargs):
        kwargs.setdefault("maintenance_interval", int(settings.OMIPORTAL_RECONCILE_EVERY_SECONDS))
        # Jobs carry ids only, as JSON; rqworker's default (pickle) would also run whatever
        # a pickled payload placed in Redis asks for.
        kwargs["serializer"] = JSONSerializer
        super().__init__(*args, **kwargs)
        from omiportal import outscale

        outscale.warm_up()  # forked job processes inherit the parsed spec

    @property
    def dequeue_timeout(self) -> int:
        # An idle worker wakes at least once a maintenance interval, so the reconciler
        # keeps running even when no job arrives (rq would otherwise block ~7 minutes).
        return max(1, min(super().dequeue_timeout, int(self.maintenance_interval)))

    def run_maintenance_tasks(self):
        super().run_maintenance_tasks()
        try:
            ensure_reconcile_enqueued()
        except Exception:  # noqa: BLE001 - a broken tick must not stop the worker; the next one retries
            logger.exception("Could not enqueue the reconciler")
        try:  # audit checkpoint and verification jobs, each at most once per its interval
            from omiportal.audit.jobs import ensure_audit_jobs_enqueued

            ensure_audit_jobs_enqueued()
        except Exception:  # noqa: BLE001 - as above: the next tick retries
            logger.exception("Could not enqueue the audit jobs")
