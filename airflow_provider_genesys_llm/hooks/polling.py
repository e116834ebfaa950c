"""The one polling loop: check, back off, stop at a wall-clock deadline.

The triggers (``triggers/_polling.py``) and the transcripts operator's analytics-job wait run it,
so every wait of the provider has the same backoff and the same bound. Plain asyncio, no Airflow.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")


def check_intervals(poll_interval: float, max_poll_interval: float) -> None:
    """Refuse intervals ``poll_until`` cannot use, when the task is built rather than when it waits."""
    if poll_interval <= 0:
        raise ValueError(f"poll_interval must be more than 0 seconds, got {poll_interval}")
    if max_poll_interval < poll_interval:
        raise ValueError(f"max_poll_interval ({max_poll_interval}) is below poll_interval ({poll_interval})")


async def poll_until(
    check: Callable[[], Awaitable[T | None]], *, deadline: float, poll_interval: float, max_poll_interval: float
) -> T | None:
    """Await ``check()`` until it returns a result; None once ``deadline`` (``time.time()`` epoch
    seconds: wall clock, since a serialized trigger may resume in another process) has passed.

    The first check runs at once; the waits between checks start at ``poll_interval`` and double
    up to ``max_poll_interval`` (see ``check_intervals``), and never run past the deadline. A check
    that starts before the deadline always runs to its end: bounding it is the caller's business.
    """
    interval = poll_interval
    while True:
        result = await check()
        if result is not None:
            return result
        left = deadline - time.time()
        if left <= 0:
            return None
        await asyncio.sleep(min(interval, left))
        interval = min(interval * 2, max_poll_interval)
