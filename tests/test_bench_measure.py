"""The benchmarks' own arithmetic: the hand-off's pace floor (bench.measure.pace_floor), its
parts, and the cores busy while it ran (bench.cores)."""

from bench import cores
from bench.measure import handoff_by_account, handoff_parts, handoff_windows, pace_floor, waited_behind


def test_the_pace_floor_serves_each_accounts_ends_in_the_order_seen_at_its_pace():
    # Twelve ends of one account seen by one look, at 5 calls a second: five go at once, five a
    # second later, the last two a second after that.
    waits = pace_floor([(10.0, "r1")] * 12, per_second=5)
    assert sorted(waits) == [0.0] * 5 + [1.0] * 5 + [2.0] * 2
    # Another account's ends do not wait for these; an end seen after the window waits for nothing.
    assert pace_floor([(10.0, "r1")] * 6 + [(10.0, "r2")], per_second=5).count(0.0) == 6
    assert pace_floor([(10.0, "r1")] * 5 + [(11.5, "r1")], per_second=5) == [0.0] * 6


def test_the_hand_off_parts_report_the_floor_beside_the_waits_measured():
    # One look saw three ends of r1 at t=0; their creates went at 0.2, 0.4 and 0.6.
    ends = [(0.0, 0.2, "r1"), (0.0, 0.4, "r1"), (0.0, 0.6, "r1")]
    parts = handoff_parts(ends, per_second=2, processes=2)
    assert parts["to_first_create"]["max"] == 0.2 and parts["in_line"]["max"] == 0.4
    assert parts["creates_per_look_and_account"]["max"] == 3
    assert parts["floor"]["max"] == 1.0  # the third waits a window at the account's 2 a second
    assert parts["pace_shared"] and "floor_2_processes" not in parts  # shared: no other allowance to borrow
    # Each process pacing itself: the floor is still one process's, and every process's is shown.
    per_process = handoff_parts(ends, per_second=2, processes=2, shared=False)
    assert per_process["floor"]["max"] == 1.0
    assert per_process["floor_2_processes"]["max"] == 0.0  # four a second take all three at once


def test_the_creates_that_waited_in_line_report_what_their_account_received_before_them():
    # One look saw two ends into r1 at t=0: the first create went at 0.2, the second at 1.2,
    # after a tag and the first create in r1, and a create into r2 that is not r1's.
    ends = [(0.0, 0.2, "r1"), (0.0, 1.2, "r1")]
    calls = [(0.2, "r1", "CreateImage", "create"), (0.9, "r1", "CreateTags", "tag"),
             (1.0, "r2", "CreateImage", "create"), (1.2, "r1", "CreateImage", "create")]
    behind = waited_behind(ends, calls)
    assert behind["creates"] == 1  # only the second waited half a second or more
    # Its own call at 1.2 is not before it; the create at 0.2 and the tag are.
    assert behind["calls_in_the_second_before"] == {"CreateImage": 1.0, "CreateTags": 1.0}
    assert waited_behind(ends[:1], calls) == {"creates": 0, "least_seconds": 0.5, "calls_in_the_second_before": {}}


def test_the_hand_off_is_reported_per_recipient_account_the_busiest_first():
    ends = [(0.0, 0.2, "r2"), (0.0, 0.3, "r1"), (0.0, 1.4, "r1"), (1.0, 1.5, "r1")]
    by = handoff_by_account(ends)
    assert list(by) == ["r1", "r2"]  # three imports into r1, one into r2
    assert by["r1"]["count"] == 3 and by["r1"]["max"] == 1.4 and by["r2"]["max"] == 0.2


def test_the_cores_busy_during_hand_offs_count_only_their_windows():
    # Two looks: one at t=0 whose creates went until 1.5, one at 1.0 until 2.0 (one span, 0-2),
    # and one at 10 until 10.5. Samples of cumulative CPU seconds every half second.
    windows = handoff_windows([(0.0, 0.5, "r1"), (0.0, 1.5, "r2"), (1.0, 2.0, "r1"), (10.0, 10.5, "r1")])
    assert windows == [(0.0, 1.5), (1.0, 2.0), (10.0, 10.5)]
    assert cores.merge(windows) == [(0.0, 2.0), (10.0, 10.5)]
    creates = handoff_windows([(0.0, 0.5, "r1"), (0.0, 1.5, "r2"), (1.0, 2.0, "r1")], creates_only=True)
    assert creates == [(0.5, 1.5), (2.0, 2.0)]  # from each look's first create to its last

    def at(t, machine, workers):
        return (t, machine, {"workers": workers, "sandbox_and_bench": machine - workers, "postgresql": 0.0,
                             "redis": 0.0})
    # The machine busy 2 cores in both windows and idle in between; the workers 0.5 of them.
    samples = [at(0.0, 0, 0), at(1.0, 2, 0.5), at(2.0, 4, 1.0), at(6.0, 4, 1.0), at(10.0, 4, 1.0),
               at(10.5, 5, 1.25)]
    busy = cores.in_windows(samples, windows, cores=2)
    assert busy["seconds"] == 2.5 and busy["machine_cores"] == 2.0
    assert busy["workers_cores"] == 0.5 and busy["sandbox_and_bench_cores"] == 1.5
    # A window the samples do not enclose is left out; none at all gives nothing.
    assert cores.in_windows(samples, [(11.0, 12.0)], cores=2) == {}
