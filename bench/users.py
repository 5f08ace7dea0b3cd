"""The simulated people's seeds (`Persona`: who signs in, to which team, with which shares) and
the percentiles every benchmark reports. Locust drives them (`bench/locustfile.py`, `bench/people.py`).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Persona:
    email: str
    password: str
    team_id: str
    role: str  # member or auditor
    share_ids: list[str] = field(default_factory=list)


def percentiles(values: list[float]) -> dict:
    if not values:
        return {"count": 0}
    ordered = sorted(values)

    def pick(q: float) -> float:
        return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]

    return {"count": len(ordered), "p50_ms": round(pick(0.50) * 1000, 1), "p95_ms": round(pick(0.95) * 1000, 1),
            "p99_ms": round(pick(0.99) * 1000, 1), "max_ms": round(ordered[-1] * 1000, 1)}
