"""Every step ends, whatever stops it.

OUTSCALE's answers are handled where they arrive: a throttled create is tried again up to
``polling.MAX_START_ATTEMPTS`` times, a refusal fails the transfer with the cloud's reason. Anything
else that escapes a step (keys the vault cannot open, an audit write refused, a bug) used to leave
its row in flight, and the reconciler put the step back every tick, for ever: each run opened keys,
wrote events and called the cloud again.

Now each such error counts against the row whose step raised it (``step_errors``, written in a
transaction of its own, so the step's rollback does not take the count with it). At
OMIPORTAL_STEP_MAX_ATTEMPTS the transfer fails as a cloud refusal fails it (an export with its
shares; an import FAILED, which a person can retry), with ``errors.STEP_GAVE_UP`` and one audit
event. The attempts in between only log: the error's class and where it was raised, never its
text (a database, vault or HTTP error may quote what it was given).

Start jobs go through ``run_step`` (transfers/jobs.py). A sweep wraps each row's handling in
``row_errors``, so one bad row does not hold back the account's others, and its account-wide part
(opening the keys, the one read) in ``rows_errors``: an error there counts against every row the
sweep claimed.
"""

import contextlib
import logging
import traceback
from collections.abc import Callable
from dataclasses import dataclass

from django.conf import settings
from django.db import transaction
from django.db.models import F, Q
from django.utils import timezone

from transfers import errors
from transfers.models import Export, Recipient
from transfers.services.export_ends import export_failed
from transfers.services.import_ends import import_failed

logger = logging.getLogger(__name__)

# The error of an attempt whose ending could not be written at the time (the next run ends it).
UNKNOWN_ERROR = "unknown"


class StepError(Exception):
    """What a start job that will be tried again leaves in rq's failed registry: the step, the row
    and the error's class, never the error's text."""


def _fail_export(export: Export, message: str) -> None:
    export_failed(export, message)


def _fail_import(recipient: Recipient, message: str) -> None:
    import_failed(recipient, message)


@dataclass(frozen=True)
class Step:
    name: str  # for the log: "import start of <id>"
    model: type
    current: Q  # the row is still at this step (a count or an ending never touches a row that moved on)
    related: tuple[str, ...]  # what ``fail`` reads
    fail: Callable  # fail(row, message): ends the transfer and records its one event
    claims: str = ""  # a start's attempt counter: each run that claims the row adds one


_EXPORT = ("account__team",)
_IMPORT = ("team", "share", "target_account")
EXPORT_START = Step("export start", Export,
                    Q(state=Export.State.STARTING) | Q(state=Export.State.COPYING, copy_image_id=""),
                    _EXPORT, _fail_export, claims="attempts")
EXPORT_LOOK = Step("export look", Export, Q(state__in=[Export.State.COPYING, Export.State.RUNNING]),
                   _EXPORT, _fail_export)
IMPORT_START = Step("import start", Recipient, Q(state=Recipient.State.IMPORTING, image_id=""), _IMPORT, _fail_import,
                    claims="start_tries")
IMPORT_LOOK = Step("import look", Recipient, Q(state=Recipient.State.IMPORTING) & ~Q(image_id=""), _IMPORT,
                   _fail_import)


def limit() -> int:
    return max(1, int(settings.OMIPORTAL_STEP_MAX_ATTEMPTS))


def _where(exc: BaseException) -> str:
    # Frames and source lines only: the message (and the locals) may hold a secret.
    return "".join(traceback.format_tb(exc.__traceback__))


def _end(step: Step, lookup: dict, attempts: int, error: str) -> bool:
    """Fail the row's transfer if it is still at ``step``; True if this call ended it."""
    with transaction.atomic():
        row = (step.model.objects.select_for_update(of=("self",)).select_related(*step.related)
               .filter(step.current, **lookup).first())
        if row is None:
            return False
        step.fail(row, errors.STEP_GAVE_UP.format(attempts=attempts, error=error))
    return True


def note_error(step: Step, lookup: dict, exc: Exception, *, held: Q | None = None) -> tuple[int, bool] | None:
    """Count ``exc`` against the row ``lookup`` finds, if it is still at ``step``, and end its
    transfer once the count reaches the limit. Returns (errors counted, ended), or None when the
    row had moved on (nothing counted). Raises if the database cannot take the count.

    ``held`` says the row is still as the failed run claimed it: that run is over, so its claim
    is let go (the reconciler puts the step back after its grace period), where a run that died
    would hold it until its lease ran out."""
    error = type(exc).__name__
    with transaction.atomic():
        rows = step.model.objects.filter(step.current, **lookup)
        if not rows.update(step_errors=F("step_errors") + 1):
            logger.warning("%s of %s raised %s after the row moved on; nothing counted.\n%s",
                           step.name, lookup, error, _where(exc))
            return None
        counted = rows.values_list("step_errors", flat=True).first() or 0
        if held is not None and counted < limit():
            rows.filter(held).update(next_poll_at=timezone.now())
    if counted < limit():
        logger.warning("%s of %s raised %s (attempt %d of %d); it will be tried again.\n%s",
                       step.name, lookup, error, counted, limit(), _where(exc))
        return counted, False
    ended = _end(step, lookup, counted, error)
    logger.error("%s of %s raised %s (attempt %d of %d); %s.\n%s", step.name, lookup, error, counted, limit(),
                 "its transfer failed" if ended else "the row had moved on", _where(exc))
    return counted, ended


def run_step(step: Step, public_id, func: Callable[[], None]) -> None:
    """Run a start job's step (``func``) for the row with this public id, bounded.

    An error is counted against the row (``note_error``). Until the limit the job fails with a
    ``StepError`` (rq keeps it for OMIPORTAL_JOB_FAILURE_TTL_SECONDS) and the reconciler puts the
    step back; at the limit the transfer fails and the job ends. A row found at the limit
    before its step runs is one whose ending could not be written then: it ends now, without
    running the step again (no more cloud calls).
    """
    lookup = {"public_id": public_id}
    row = step.model.objects.filter(step.current, **lookup).values("step_errors", step.claims).first()
    if row is not None and row["step_errors"] >= limit():
        _end(step, lookup, row["step_errors"], UNKNOWN_ERROR)
        return
    try:
        func()
    except Exception as exc:  # noqa: BLE001 - whatever it is, it counts against the row
        error = type(exc).__name__
        # Claimed by this run (the counter moved by exactly its one claim), and this run is over.
        held = Q(**{step.claims: row[step.claims] + 1}) if row is not None else None
        try:
            noted = note_error(step, lookup, exc, held=held)
        except Exception as counting:  # noqa: BLE001 - the database is away: the reconciler brings the step back
            logger.warning("%s of %s raised %s, and it could not be counted (%s).\n%s", step.name, public_id, error,
                           type(counting).__name__, _where(exc))
            raise StepError(f"{step.name} of {public_id}: {error}, not counted ({type(counting).__name__})") from None
        if noted is None or not noted[1]:
            attempt = f"attempt {noted[0]} of {limit()}" if noted else "the row had moved on"
            raise StepError(f"{step.name} of {public_id}: {error} ({attempt})") from None


def _noted_quietly(step: Step, row, exc: Exception) -> None:
    try:
        note_error(step, {"pk": row.pk}, exc)
    except Exception as counting:  # noqa: BLE001 - a sweep goes on; its rows come back through the reconciler
        logger.warning("%s of %s raised %s, and it could not be counted (%s).\n%s", step.name, row.pk,
                       type(exc).__name__, type(counting).__name__, _where(exc))


@contextlib.contextmanager
def row_errors(step: Step, row):
    """Around one row's handling inside a sweep: an error counts against that row alone, and the
    sweep goes on with the others."""
    try:
        yield
    except Exception as exc:  # noqa: BLE001 - counted against the row, see above
        _noted_quietly(step, row, exc)


@contextlib.contextmanager
def rows_errors(step: Step, rows):
    """Around a sweep's account-wide part (its keys, its one read): an error there stops the look
    at every row the sweep claimed, so it counts against each of them; the sweep then ends as if
    the look had been put off."""
    try:
        yield
    except Exception as exc:  # noqa: BLE001 - counted against the rows, see above
        for row in rows:
            _noted_quietly(step, row, exc)
