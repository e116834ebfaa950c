"""A circuit breaker per client, so a dead gateway costs seconds and a handful of requests.

Without it every call of a batch runs its own retry ladder against a gateway that cannot answer
(a 30-item batch took 562 s and 720 warnings). The breaker counts consecutive failures that say
"the gateway is unreachable or refuses us" (connection errors, timeouts, auth errors); at the
threshold it opens and every call fails at once with ``GatewayCircuitOpenError``. After the
cool-down one call at a time is let through as a probe: its success closes the breaker, its
failure opens it for another cool-down. Any other outcome (an answer, even an error answer)
proves the gateway reachable and resets the count.

One event loop drives a client, so the state needs no lock: nothing here awaits.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Literal

from .errors import (
    GatewayAuthError,
    GatewayCircuitOpenError,
    GatewayConnectionError,
    GatewayError,
    GatewayTimeoutError,
)

#: Outcomes that count towards opening the breaker.
BREAKER_FAILURES = (GatewayConnectionError, GatewayTimeoutError, GatewayAuthError)

State = Literal["closed", "open", "half_open"]


class CircuitBreaker:
    """Consecutive-failure breaker with a single half-open probe."""

    def __init__(self, threshold: int, cooldown: float) -> None:
        self.threshold = threshold
        self.cooldown = cooldown
        self.failures = 0
        self.opened_at: float | None = None
        self.last_failure: str | None = None
        self._probing = False
        #: Times the breaker opened; for stats and tests.
        self.trips = 0

    @property
    def state(self) -> State:
        if self.opened_at is None:
            return "closed"
        if self._probing or time.monotonic() - self.opened_at >= self.cooldown:
            return "half_open"
        return "open"

    def before_call(self) -> bool:
        """Raise ``GatewayCircuitOpenError`` while open; return True when this call is the probe."""
        if self.opened_at is None:
            return False
        remaining = self.opened_at + self.cooldown - time.monotonic()
        if remaining > 0 or self._probing:
            raise GatewayCircuitOpenError(
                f"circuit breaker open after {self.failures} consecutive gateway failures "
                f"(last: {self.last_failure}); calls fail at once for {max(remaining, 0.0):.1f}s more, "
                "then one probe call is let through",
                retry_after=max(remaining, 0.0),
            )
        self._probing = True
        return True

    def record(self, error: GatewayError | None, *, probe: bool) -> None:
        """Note how a call that passed ``before_call`` ended (``error=None``: it got an answer)."""
        if probe:
            self._probing = False
        if isinstance(error, BREAKER_FAILURES):
            self.failures += 1
            self.last_failure = type(error).__name__
            if probe or (self.opened_at is None and self.failures >= self.threshold):
                self.opened_at = time.monotonic()
                self.trips += 1
            return
        self.failures = 0
        self.opened_at = None

    def release(self, *, probe: bool) -> None:
        """A call ended without an outcome (cancelled): give the probe slot back, change nothing."""
        if probe:
            self._probing = False

    @contextmanager
    def guard(self) -> Iterator[None]:
        """Around one attempt: refuse it while open, record how it ended."""
        probe = self.before_call()
        try:
            yield
        except GatewayError as exc:
            self.record(exc, probe=probe)
            raise
        except BaseException:
            self.release(probe=probe)
            raise
        self.record(None, probe=probe)
