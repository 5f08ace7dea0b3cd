"""The peer pattern, for `bench_transfers`: every transfer watched on its own.

This is how Terraform's and Packer's waiters work: one create, then a loop that reads that one
resource (`ReadImageExportTasks` / `ReadImages` filtered to its id) every interval until it is
final, then the next create. Here the loop is a chain of RQ jobs (`enqueue_in` between polls, so a
poll never blocks a worker), run by the same worker processes and against the same sandbox as the
portal's batched sweeps, so the two can be compared call for call.

A job takes one JSON dict (the transfer's spec plus what it learned so far), records its milestones
in a Redis hash (``omiportal-bench:peer:<run>:<index>``) and never writes the portal's tables,
apart from the audit events that opening an account's keys records, as the portal's own jobs do.
"""

from __future__ import annotations

import time
from datetime import timedelta

import django_rq
from django.conf import settings
from django.utils import timezone

import outscale
from accounts.keys import credentials_for
from accounts.models import CloudAccount

KEY = "omiportal-bench:peer:{run}:{index}"
QUEUE_START, QUEUE_POLL = "default", "poll"
RESULT_TTL = 0


def key(run: str, index: int) -> str:
    return KEY.format(run=run, index=index)


def _note(spec: dict, **fields) -> None:
    conn = django_rq.get_connection(QUEUE_POLL)
    conn.hset(key(spec["run"], spec["index"]), mapping={k: str(v) for k, v in fields.items()})
    conn.expire(key(spec["run"], spec["index"]), 86400)


def _interval() -> float:
    return float(settings.OMIPORTAL_SWEEP_MIN_SECONDS)


def _again(func: str, spec: dict, delay: float | None = None) -> None:
    queue = django_rq.get_queue(QUEUE_POLL)
    queue.enqueue_in(timedelta(seconds=_interval() if delay is None else delay), f"bench.peer.{func}",
                     spec, result_ttl=RESULT_TTL)


def enqueue_start(spec: dict) -> None:
    django_rq.get_queue(QUEUE_START).enqueue("bench.peer.peer_start_job", spec, result_ttl=RESULT_TTL)


def _account(pk: int):
    return CloudAccount.objects.get(pk=pk)


def _creds(pk: int, purpose: str):
    account = _account(pk)
    return account, credentials_for(account, purpose=purpose)


def _failed(spec: dict, step: str, exc) -> None:
    _note(spec, failed_at=time.time(), failed=f"{step}: {getattr(exc, 'user_message', exc)}"[:300])


def _guard(step: str, spec: dict, retry_func: str):
    """Run one step; a retryable cloud error polls again after the interval, as a waiter would."""
    class _Guard:
        def __enter__(self):
            return self

        def __exit__(self, exc_type, exc, tb):
            if exc is None:
                return False
            if isinstance(exc, outscale.CloudError):
                if exc.retryable:
                    _again(retry_func, spec)
                else:
                    _failed(spec, step, exc)
                return True
            return False

    return _Guard()


def _start_export(spec: dict, creds, image_id: str) -> None:
    account = _account(spec["source"])
    task = outscale.start_export(creds=creds, image_id=image_id, bucket=account.export_bucket,
                                 prefix=f"omiportal-peer/{spec['run']}/{spec['index']}/")
    spec["task_id"] = task.task_id
    _note(spec, task_id=task.task_id, export_sent_at=time.time())
    _again("peer_poll_export_job", spec)


def peer_start_job(spec: dict) -> None:
    """The first create: a copy (shared or public OMI) or the export task."""
    with _guard("start", spec, "peer_start_job"):
        account, creds = _creds(spec["source"], "start export")
        if spec.get("copy"):
            image = outscale.copy_image(creds=creds, source_image_id=spec["image_id"],
                                        name=f"{spec['name']}-copy", description="bench peer copy")
            spec["copy_id"] = image.image_id
            _note(spec, copy_id=image.image_id)
            _again("peer_poll_copy_job", spec)
        else:
            _start_export(spec, creds, spec["image_id"])


def peer_poll_copy_job(spec: dict) -> None:
    with _guard("copy", spec, "peer_poll_copy_job"):
        account, creds = _creds(spec["source"], "watch exports")
        image = outscale.read_images(creds=creds, account_id=account.account_id,
                                     image_ids=[spec["copy_id"]]).get(spec["copy_id"])
        if image is None or image.state in ("failed", "deleted"):
            _note(spec, failed_at=time.time(), failed=f"copy {image.state if image else 'missing'}")
        elif image.state == "available":
            _note(spec, copy_seen_at=time.time())
            _start_export(spec, creds, spec["copy_id"])
        else:
            _again("peer_poll_copy_job", spec)


def peer_poll_export_job(spec: dict) -> None:
    with _guard("export", spec, "peer_poll_export_job"):
        account, creds = _creds(spec["source"], "watch exports")
        task = outscale.read_export_tasks(creds=creds, task_ids=[spec["task_id"]]).get(spec["task_id"])
        if task is None or task.state in ("failed", "cancelled"):
            _note(spec, failed_at=time.time(), failed=f"export {task.state if task else 'missing'}")
            return
        if task.state != "completed":
            _again("peer_poll_export_job", spec)
            return
        seen = time.time()
        key_name = task.manifest_key or outscale.find_manifest_key(
            creds=creds, bucket=account.export_bucket, prefix=task.prefix).key
        link = outscale.presign_manifest(creds=creds, bucket=account.export_bucket, key=key_name,
                                         not_after=timezone.now() + timedelta(days=6))
        spec["url"] = link.url
        _note(spec, export_seen_at=seen)
        peer_import_job(spec)


def peer_import_job(spec: dict) -> None:
    """The second create: CreateImage from the manifest, with the recipient's keys."""
    with _guard("import", spec, "peer_import_job"):
        target, creds = _creds(spec["target"], "start import")
        image = outscale.import_image(creds=creds, file_location=spec["url"], name=spec["name"],
                                      description="bench peer import")
        spec.pop("url")
        spec["import_id"] = image.image_id
        _note(spec, import_id=image.image_id, import_sent_at=time.time())
        _again("peer_poll_import_job", spec)


def peer_poll_import_job(spec: dict) -> None:
    with _guard("import-poll", spec, "peer_poll_import_job"):
        target, creds = _creds(spec["target"], "watch imports")
        image = outscale.read_images(creds=creds, account_id=target.account_id,
                                     image_ids=[spec["import_id"]]).get(spec["import_id"])
        if image is None or image.state in ("failed", "deleted"):
            _note(spec, failed_at=time.time(), failed=f"import {image.state if image else 'missing'}")
        elif image.state == "available":
            _note(spec, done_at=time.time())
        else:
            _again("peer_poll_import_job", spec)
