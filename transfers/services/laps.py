"""Where a hand-off's time goes inside the sweep that makes it, logged for operators and for
`bench_transfers`, which reads the lines back from the workers' logs.

The hand-off (an export seen complete, then its imports' creates) is what a burst of transfers
waits on. From outside, the sandbox sees the look and the creates; in between lie the portal's
own steps, which only the worker can time: the claim of the rows, the look itself, the manifests,
the completions (one transaction with their audit events), the claim of the imports, the starts
(cloud creates, paced, side by side), and the write of what the cloud answered.
"""

from __future__ import annotations

import json
import logging
import time

logger = logging.getLogger(__name__)

MARK = "hand-off laps "  # what bench_transfers looks for in the workers' logs
# The parts a sweep that hands off times, in their order (first_start_done overlaps the starts).
PARTS = ("claim", "look", "manifests", "completions", "import_claim", "first_start_done", "starts", "written")


class Laps:
    """Seconds spent in each named part of one sweep, each part timed from the end of the last."""

    def __init__(self) -> None:
        self._began = self._last = time.monotonic()
        self.seconds: dict[str, float] = {}

    def lap(self, name: str) -> None:
        now = time.monotonic()
        self.seconds[name] = self.seconds.get(name, 0.0) + now - self._last
        self._last = now

    def first(self, name: str) -> None:
        """Note when ``name`` first happened, from the sweep's start (from any thread)."""
        self.seconds.setdefault(name, time.monotonic() - self._began)

    def log(self, *, account_label: str, imports: int) -> None:
        laps = {name: round(seconds, 4) for name, seconds in self.seconds.items()}
        logger.info("Account %s: %d import(s) handed off; %s%s", account_label, imports, MARK,
                    json.dumps({"imports": imports, "at": round(time.time(), 3), **laps}))


def parse(line: str) -> dict | None:
    """The laps a log line carries, or None."""
    _, found, rest = line.partition(MARK)
    if not found:
        return None
    try:
        return json.loads(rest)
    except ValueError:
        return None
