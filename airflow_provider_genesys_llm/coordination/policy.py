"""The decisions of the shared gate, as pure functions of the state read from Postgres.

Kept free of I/O so that the rules (who gets the next slot, how far the limit falls after a
429 and how fast it grows back, how many requests the bucket allows) are tested directly and
every worker applies the very same arithmetic inside its transaction.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from .settings import PRIORITIES, Priority


def backfill_share(limit: int, min_backfill_share: float) -> int:
    """Slots backfill keeps while interactive work waits: at least one when the share is above 0."""
    return min(limit, math.ceil(limit * min_backfill_share)) if min_backfill_share > 0 else 0


def grant(
    limit: int,
    min_backfill_share: float,
    in_flight: Mapping[Priority, int],
    waiting: Mapping[Priority, int],
    mine: Mapping[Priority, int],
    requests_allowed: int,
) -> dict[Priority, int]:
    """How many of this process's waiters (`mine`, part of `waiting`) get a slot now.

    Interactive first, up to the limit minus the slots reserved for backfill demand; backfill
    only while no interactive work waits anywhere, or while it runs below its minimum share.
    """
    flying = {priority: in_flight.get(priority, 0) for priority in PRIORITIES}
    queued = {priority: waiting.get(priority, 0) for priority in PRIORITIES}
    left = {priority: mine.get(priority, 0) for priority in PRIORITIES}
    granted: dict[Priority, int] = {priority: 0 for priority in PRIORITIES}
    share = backfill_share(limit, min_backfill_share)
    budget = requests_allowed
    while budget > 0 and sum(flying.values()) < limit:
        reserved = min(share, flying["backfill"] + queued["backfill"])
        if left["interactive"] and flying["interactive"] < limit - reserved:
            chosen: Priority = "interactive"
        elif left["backfill"] and (queued["interactive"] == 0 or flying["backfill"] < share):
            chosen = "backfill"
        else:
            break
        flying[chosen] += 1
        queued[chosen] = max(0, queued[chosen] - 1)
        left[chosen] -= 1
        granted[chosen] += 1
        budget -= 1
    return granted


@dataclass(frozen=True)
class Aimd:
    """The shared adaptive limit: halve on a 429 (once per pause), +1 per quiet window."""

    ceiling: int
    window_seconds: float

    def recovered(self, limit: float, since_change: float) -> tuple[float, float]:
        """(new limit, seconds of the elapsed time used up): +1 per whole quiet window."""
        if limit >= self.ceiling:
            return float(self.ceiling), since_change
        steps = math.floor(since_change / self.window_seconds)
        return min(float(self.ceiling), limit + steps), steps * self.window_seconds

    def decreased(self, limit: float, already_paused: bool) -> float:
        """A 429 during an ongoing pause belongs to the same overload: it does not halve again."""
        return limit if already_paused else max(1.0, math.floor(limit / 2))

    @staticmethod
    def effective(limit: float) -> int:
        return max(1, math.floor(limit))


@dataclass(frozen=True)
class Bucket:
    """The shared request-rate token bucket, sized so no 60 s window ever exceeds the quota.

    A bucket of capacity B refilled at r per second lets B + 60 r requests through in a
    minute, so r is the quota minus the burst: a sliding-window gateway never sees more.
    """

    requests_per_minute: float

    @property
    def capacity(self) -> float:
        return float(max(1, math.floor(self.requests_per_minute / 60)))

    @property
    def rate(self) -> float:
        return max(self.requests_per_minute - self.capacity, self.requests_per_minute / 2) / 60.0

    def refilled(self, tokens: float, elapsed: float) -> float:
        return min(self.capacity, tokens + max(0.0, elapsed) * self.rate)

    def wait_for_one(self, tokens: float) -> float:
        return max(0.0, (1.0 - tokens) / self.rate)
