"""AccountPace: at most N calls in any window, in order, without holding the lock while waiting."""

import threading

from outscale.pace import AccountPace, forget_paces, pace_for


class FakeTime:
    def __init__(self):
        self.now = 100.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(round(seconds, 6))
        self.now += seconds


def test_calls_within_the_allowance_go_at_once():
    t = FakeTime()
    pace = AccountPace(3, clock=t.clock, sleep=t.sleep)
    assert [pace.acquire() for _ in range(3)] == [0, 0, 0]
    assert t.slept == []


def test_the_call_past_the_allowance_waits_for_the_first_to_leave_the_window():
    t = FakeTime()
    pace = AccountPace(3, clock=t.clock, sleep=t.sleep)
    for _ in range(3):
        pace.acquire()
    t.now += 0.25
    assert round(pace.acquire(), 6) == 0.75
    assert t.now == 101.0


def test_reserved_slots_queue_callers_in_order():
    # Callers that arrive together while the allowance is spent get successive windows, never
    # more than N in any one: the slots of seven calls at 2 per second.
    t = FakeTime()
    pace = AccountPace(2, clock=t.clock, sleep=lambda s: None)  # nobody's clock moves: all arrive at once
    waits = [round(pace.acquire(), 6) for _ in range(7)]
    assert waits == [0, 0, 1, 1, 2, 2, 3]


def test_a_quiet_spell_gives_the_full_allowance_back():
    t = FakeTime()
    pace = AccountPace(2, clock=t.clock, sleep=t.sleep)
    for _ in range(4):
        pace.acquire()
    t.now += 5
    assert [pace.acquire() for _ in range(2)] == [0, 0]


def test_one_pace_per_account_region_and_rate():
    forget_paces()
    assert pace_for("AK1", "eu-west-2", 5) is pace_for("AK1", "eu-west-2", 5)
    assert pace_for("AK1", "eu-west-2", 5) is not pace_for("AK2", "eu-west-2", 5)
    assert pace_for("AK1", "eu-west-2", 5) is not pace_for("AK1", "us-east-2", 5)
    assert pace_for("AK1", "eu-west-2", 5) is not pace_for("AK1", "eu-west-2", 10)
    forget_paces()


def test_threads_do_not_wait_on_each_others_sleep():
    # A caller sleeping for its slot does not hold the lock: one that finds a free slot (after
    # the window moved on) goes at once.
    t = FakeTime()
    entered, release = threading.Event(), threading.Event()

    def slow_sleep(seconds):
        entered.set()
        release.wait(5)

    pace = AccountPace(1, clock=t.clock, sleep=slow_sleep)
    pace.acquire()
    waiter = threading.Thread(target=pace.acquire)
    waiter.start()
    assert entered.wait(5)
    t.now += 10  # the waiter's slot (101.0) and more have passed
    assert pace.acquire() == 0
    release.set()
    waiter.join(5)
    assert not waiter.is_alive()


class SteppedTime:
    """A clock that moves only when the test says: sleepers wake when it reaches their time, so
    threads waiting in the pace are served by the slots they hold, not by how fast the machine
    starts a thread (a real-time form of the test below failed on a loaded CI machine)."""

    def __init__(self):
        self.now = 100.0
        self.moved = threading.Condition()

    def clock(self) -> float:
        with self.moved:
            return self.now

    def sleep(self, seconds: float) -> None:
        with self.moved:
            until = self.now + seconds
            assert self.moved.wait_for(lambda: self.now >= until, timeout=10), "the test never got there"

    def advance_to(self, when: float) -> None:
        with self.moved:
            self.now = when
            self.moved.notify_all()


def _until(predicate) -> None:
    for _ in range(2000):
        if predicate():
            return
        threading.Event().wait(0.005)
    raise AssertionError("timed out")


def test_a_look_takes_the_next_slot_before_a_queued_burst_of_creates():
    # Two calls a window: a burst of six creates takes this window and reserves the next two.
    # A look that arrives then (another thread) is served in the next window, with the one
    # create that keeps its slot there; the three others move one slot later.
    t = SteppedTime()
    pace = AccountPace(2, window=1.0, clock=t.clock, sleep=t.sleep)
    served, lock = [], threading.Lock()

    def call(name, kind):
        pace.acquire(kind)
        with lock:
            served.append(name)

    creates = [threading.Thread(target=call, args=(f"create-{k}", "write")) for k in range(6)]
    for thread in creates:
        thread.start()
    _until(lambda: len(served) == 2 and len(pace._slots) == 6)  # two went, four wait
    look = threading.Thread(target=call, args=("look", "look"))
    look.start()
    _until(lambda: len(pace._slots) == 7)
    t.advance_to(101.0)
    _until(lambda: len(served) == 4)
    assert all(name.startswith("create") for name in served[:2])
    assert "look" in served[2:4], served
    when = 101.0
    while len(served) < 7 and when < 300:  # a create whose slot moved sleeps on from where it woke
        when += 1
        t.advance_to(when)
        threading.Event().wait(0.01)
    for thread in [*creates, look]:
        thread.join(5)
    assert len(served) == 7 and "look" not in served[4:]


def test_a_look_keeps_the_total_within_the_allowance():
    # The look takes a write's slot and the writes move one slot later: still two per window.
    t = FakeTime()
    pace = AccountPace(2, clock=t.clock, sleep=lambda s: None)
    writes = [pace._reserve(t.now, "write") for _ in range(6)]
    look = pace._reserve(t.now, "look")
    times = sorted([*(w.at for w in writes), look.at])
    assert times == [100, 100, 101, 101, 102, 102, 103]
    assert look.at == 101 and [w.at for w in writes] == [100, 100, 101, 102, 102, 103]



def test_a_write_goes_before_queued_export_starts_and_the_total_stays_within_the_allowance():
    # A burst of six export starts (new work) holds the next slots; an import's create (a
    # hand-off: work in flight) that arrives then takes the first start's future slot, and the
    # starts move one slot later each: still two per window.
    t = FakeTime()
    pace = AccountPace(2, clock=t.clock, sleep=lambda s: None)
    starts = [pace._reserve(t.now, "start") for _ in range(6)]
    t.now += 0.5
    create = pace._reserve(t.now, "write")
    assert create.at == 101
    assert [s.at for s in starts] == [100, 100, 101, 102, 102, 103]
    look = pace._reserve(t.now, "look")  # a look still goes before both
    assert look.at == 101 and create.at == 102
    assert sorted(s.at for s in [*starts, create, look]) == [100, 100, 101, 101, 102, 102, 103, 103]


def test_a_start_lets_writes_pass_only_for_its_patience():
    # Without a bound, a stream of creates into the account could hold a start back past its
    # lease (polling.start_call_seconds counts the patience), and another run would make it again.
    from outscale.pace import START_PATIENCE

    t = FakeTime()
    pace = AccountPace(1, clock=t.clock, sleep=lambda s: None)
    pace._reserve(t.now, "write")  # the allowance of this second
    start = pace._reserve(t.now, "start")
    assert start.at == 101
    writes = []
    while t.now - 100 < START_PATIENCE:
        writes.append(pace._reserve(t.now, "write"))  # each passes the start
        t.now += 0.5
    passed_until = start.at
    assert passed_until > 101 + START_PATIENCE - 1
    late = pace._reserve(t.now, "write")  # past its patience: the write queues behind it
    assert late.at > start.at == passed_until
    look = pace._reserve(t.now, "look")  # a look still goes first: every slot after it moves one later
    assert look.at < passed_until and start.at == passed_until + 1


def test_export_starts_are_starts_reads_are_looks_other_calls_writes():
    from outscale.oapi import pace_kind

    assert pace_kind("CreateImageExportTask") == "start"
    assert [pace_kind(a) for a in ("ReadImages", "ReadImageExportTasks")] == ["look", "look"]
    assert [pace_kind(a) for a in ("CreateImage", "CreateTags", "UpdateImage")] == ["write"] * 3
