"""A same-Region copy looked at around its expected end by a thread of the process that made it.

rq's scheduler moves a delayed job once a second, and keeps its time in whole seconds: a sweep
booked for a copy's expected end runs up to a second before or after it, so a copy of a few
seconds was seen up to a second after it ended. When a copy's first look (copy_looks.py) is at
most WATCH_AHEAD seconds after its create, the job that created it (the grant job, or the start
job of a direct copy) hands it to this process's watcher, a thread, and goes on: the watcher makes
the account's ordinary sweep (import_sweeps.import_sweep: claimed, leased, each end once) at the
planned time to the tenth of a second, then every ``fine`` step (at least WATCH_STEP_FLOOR) until
WATCH_SPAN seconds after the first look.

Why a thread and not the job: a job that waited for its copy kept one of the few workers from
the queue, so it had to give its worker away whenever another job waited, and its looks then
fell back to rq's second (at 19 transfers at once both workers were watching most of the time).
The thread takes no worker: no job ever waits for it, and it never waits for a job.

What it holds: no transaction and no lock while it waits (each look is a sweep with its own short
transactions), one database connection while it has copies to watch (closed when it has none,
and the thread ends), and no row: the copies stay as import_starts._started booked them.

A process killed while its thread watches loses nothing: rq's sweep was booked at the end of the
watch (import_starts._started), and the reconciler comes after that. A watch that stops (its span
over, its copies ended) books its account's next look through rq, as a sweep does; so does a look
that raised (logged), and the thread goes on with the other copies.
"""

import logging
import os
import threading
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.db import close_old_connections, connections
from django.utils import timezone

from accounts.keys import opened_once
from accounts.models import CloudAccount
from audit.context import job_context
from transfers.models import LaunchGrant, Recipient
from transfers.services import copy_looks, import_sweeps, polling
from transfers.services.import_ends import imports_tag_ahead

logger = logging.getLogger(__name__)

TOGETHER = timedelta(seconds=0.05)  # looks due this close to each other are one sweep per account
# A watched copy is tagged with its provenance (import_ends.imports_tag_ahead) this far into the time
# before its first look: the account's burst of creates is mostly over, the look still to come, and
# the look that sees it available then completes it without a call. Copies of one account due to be
# tagged within TAG_GATHER of each other are tagged together (one CreateTags per source).
TAG_PART = 0.5
TAG_GATHER = timedelta(seconds=1.0)
# While an account still has copies to create or grants to add (a burst), its pace (calls a second
# per account and process) is theirs: the watcher looks at it at most once a BUSY_STEP, as rq's
# sweeps would, not every fine step (four looks a second would leave the creates one call in five),
# and tags nothing ahead (a BUSY_STEP later, if still before the first look; else at the end).
BUSY_STEP = timedelta(seconds=1.0)


@dataclass
class _Watched:
    """One copy the thread looks at: its account (pk), when its next look is due, its plan's first
    look, and when its watch is over."""
    account: int
    due: datetime
    first: datetime
    until: datetime
    step: timedelta
    tag_at: datetime | None = None  # None: tagged (or tried), or not to be tagged ahead


class Watcher:
    """This process's watcher: copies handed over by ``add``, looked at by one thread, started
    when it has copies to watch and ended when it has none."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._copies: dict[int, _Watched] = {}  # recipient pk -> its watch
        self._thread: threading.Thread | None = None

    def add(self, copies: dict[int, _Watched]) -> None:
        with self._cond:
            for pk, watched in copies.items():
                mine = self._copies.get(pk)
                # Handed over twice (a job run twice): the earlier look stands.
                self._copies[pk] = watched if mine is None else mine
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="copy-watch", daemon=True)
                self._thread.start()
            self._cond.notify()

    def copies(self) -> set[int]:
        """The copies (pks) being watched now."""
        with self._cond:
            return set(self._copies)

    def wait_idle(self, timeout: float) -> bool:
        """Wait until the thread has no copy left and has ended (tests); False on timeout."""
        with self._cond:
            thread = self._thread
        if thread is not None:
            thread.join(timeout)
            return not thread.is_alive()
        return True

    def _run(self) -> None:
        me = threading.current_thread()
        try:
            while True:
                with self._cond:
                    if not self._copies:
                        self._thread = None  # a copy handed over from now on starts a new thread
                        return
                    wait, tag, due = self._next(timezone.now())
                    if wait > 0:
                        # Woken early by a copy handed over meanwhile: its look may be sooner.
                        self._cond.wait(wait)
                        continue
                if tag:
                    self._tag(*tag)
                    continue
                try:
                    self._look(due)
                except Exception:  # noqa: BLE001 - the database, say: rq's sweeps look at them instead
                    logger.exception("Could not watch %d copies; rq's sweep looks at them instead.", len(due))
                    self._drop(list(due))
        finally:
            connections.close_all()  # this thread's own connection
            with self._cond:
                if self._thread is me:  # ended by an error: the next copy handed over starts another
                    self._thread = None

    def _next(self, now: datetime) -> tuple[float, tuple | None, dict]:
        """(seconds to wait first, or the copies of one account to tag now (account, pks), or the
        copies due for a look now), under the lock. A tag comes before a look due at the same time."""
        at = min(w.due for w in self._copies.values())
        tag_at = min((w.tag_at for w in self._copies.values() if w.tag_at is not None), default=None)
        if tag_at is not None and tag_at < at:
            if tag_at > now:
                return (tag_at - now).total_seconds(), None, {}
            account = next(w.account for w in self._copies.values() if w.tag_at == tag_at)
            pks = [pk for pk, w in self._copies.items()
                   if w.account == account and w.tag_at is not None and w.tag_at <= tag_at + TAG_GATHER]
            for pk in pks:
                self._copies[pk].tag_at = None  # tried once: else tagged when seen available
            return 0.0, (account, pks), {}
        if at > now:
            return (at - now).total_seconds(), None, {}
        return 0.0, None, {pk: w for pk, w in self._copies.items() if w.due <= at + TOGETHER}

    def _tag(self, account_pk: int, pks: list[int]) -> None:
        """Tag these copies of one account ahead of their end (import_ends.imports_tag_ahead); while
        the account is busy, a BUSY_STEP later, if that is still before their first look."""
        try:
            if _busy([account_pk]):
                self._tag_later(pks)
                return
            account = CloudAccount.objects.select_related("team").get(pk=account_pk)
            rows = list(Recipient.objects.filter(pk__in=pks, state=Recipient.State.IMPORTING, image_id__gt="")
                        .select_related("share__source_account", "share__team", "team"))
            with opened_once(), job_context(job_id=f"copy-watch-{account.public_id}"):
                imports_tag_ahead(rows, account)
        except Exception:  # noqa: BLE001 - they are tagged when seen available, as any import
            logger.exception("Could not tag %d copies ahead; they are tagged when seen available.", len(pks))
        close_old_connections()

    def _tag_later(self, pks: list[int]) -> None:
        # The account's creates and grants go first; a copy whose first look comes before is tagged
        # when seen available.
        later = timezone.now() + BUSY_STEP
        with self._cond:
            for pk in pks:
                if pk in self._copies and later < self._copies[pk].first:
                    self._copies[pk].tag_at = later

    def _look(self, due: dict[int, _Watched]) -> None:
        """One sweep per account with a copy due; then each copy's next look, or its watch over."""
        accounts = CloudAccount.objects.in_bulk({w.account for w in due.values()})
        now = timezone.now()
        looked = dict(Recipient.objects.filter(pk__in=list(due), state=Recipient.State.IMPORTING)
                      .values_list("pk", "updated_at"))
        for account in sorted(accounts.values(), key=lambda a: a.pk):
            if all(looked[pk] > now - w.step for pk, w in due.items() if w.account == account.pk and pk in looked):
                # Each was looked at less than a step ago (by the watcher of another process, whose
                # copies share the account): this look would see what that one saw. The next is a
                # step after it (its booking, below); both watchers then come together, and the
                # second finds the rows claimed and makes no call.
                continue
            try:
                with copy_looks.watched(), job_context(job_id=f"copy-watch-{account.public_id}"):
                    import_sweeps.import_sweep(account_id=account.public_id)
            except Exception:  # noqa: BLE001 - rq's sweep, booked below, looks at them instead
                logger.exception("A watched look at %s raised; rq's sweep looks instead.", account.label)
                self._drop([pk for pk, w in due.items() if w.account == account.pk])
        now = timezone.now()
        pending = dict(Recipient.objects.filter(pk__in=list(due), state=Recipient.State.IMPORTING)
                       .values_list("pk", "next_poll_at"))
        busy = _busy(list(accounts))
        done = []
        with self._cond:
            for pk, w in due.items():
                if self._copies.get(pk) is not w:
                    continue  # dropped above
                nxt = pending.get(pk)
                if nxt is None:
                    done.append(pk)  # ended (seen by this look or another), or taken off its looks
                    continue
                # Its next look as the sweep booked it (the fine step, or its first look if this one
                # came early), but never later than a fine step from now or its first look: another
                # sweep may have booked it on rq's coarser step meanwhile. A look left to another
                # process's may find it not booked again yet: a step from now.
                w.due = max(now + w.step, w.first)
                if nxt > now:
                    w.due = min(nxt, w.due)
                if w.account in busy:
                    w.due = max(w.due, now + BUSY_STEP)
                if w.due > w.until:
                    done.append(pk)
        self._drop(done)
        close_old_connections()

    def _drop(self, pks) -> None:
        """These copies' watch is over: each account none of the others is watched in gets its
        next look booked through rq, as a sweep books it (the earliest row's)."""
        with self._cond:
            gone = [self._copies.pop(pk) for pk in pks if pk in self._copies]
            still = {w.account for w in self._copies.values()}
        _book({w.account for w in gone} - still)


_watcher = Watcher()


def watcher() -> Watcher:
    return _watcher


def _reset_after_fork() -> None:
    # A forked child (rq's fork-per-job worker) has none of the parent's threads: it starts its own.
    global _watcher
    _watcher = Watcher()


os.register_at_fork(after_in_child=_reset_after_fork)


def watch(*, recipient_ids) -> None:
    """Hand these copies (public ids; just started by this process) to the watcher, if their first
    look is near; returns at once."""
    try:
        copies = _to_watch(list(recipient_ids))
    except Exception:  # noqa: BLE001 - the looks then come from rq's sweeps, booked as a fallback
        logger.exception("Could not watch %d copies; rq's sweep looks at them instead.", len(recipient_ids))
        return
    if copies:
        _watcher.add(copies)


def _to_watch(recipient_ids: list) -> dict[int, _Watched]:
    rows = Recipient.objects.filter(public_id__in=recipient_ids, state=Recipient.State.IMPORTING, image_id__gt="",
                                    method__in=Recipient.COPY_METHODS, next_poll_at__isnull=False,
                                    started_at__isnull=False).select_related("share")
    now = timezone.now()
    copies = {}
    for recipient in rows:
        plan = copy_looks.plan_for_recipient(recipient)
        if plan is None or plan.first > copy_looks.WATCH_AHEAD:
            continue
        if recipient.next_poll_at > now + timedelta(seconds=copy_looks.WATCH_AHEAD):
            continue  # held by a lease or put off: not a look to make now
        started = recipient.started_at
        # Until a second before rq's fallback, which rq may run up to a second early.
        copies[recipient.pk] = _Watched(
            account=recipient.target_account_id, due=recipient.next_poll_at,
            first=started + timedelta(seconds=plan.first),
            until=started + timedelta(seconds=plan.first + copy_looks.WATCH_SPAN - 1),
            step=timedelta(seconds=plan.fine or plan.step),
            tag_at=started + timedelta(seconds=plan.first * TAG_PART))
    return copies


def _busy(account_pks) -> set[int]:
    """The accounts (pks) among these that still have copies to create or grants to add."""
    creating = Recipient.objects.filter(target_account__in=account_pks, state=Recipient.State.IMPORTING, image_id="",
                                        method__in=Recipient.COPY_METHODS).values_list("target_account", flat=True)
    granting = LaunchGrant.objects.filter(account__in=account_pks, state=LaunchGrant.State.GRANTING) \
        .values_list("account", flat=True)
    return set(creating.distinct()) | set(granting.distinct())


def _book(account_pks) -> None:
    """Each account's next look through rq, as a sweep books it (the earliest row's)."""
    if not account_pks:
        return
    try:
        for account in CloudAccount.objects.filter(pk__in=list(account_pks)):
            polling.schedule_next(Recipient, account, "import", import_sweeps.WATCHED, import_sweeps.WATCHABLE)
    except Exception:  # noqa: BLE001 - the sweep booked at each create is still there, then the reconciler
        logger.exception("Could not book the next look at %d accounts.", len(account_pks))
