"""The retry policy every gateway call shares.

Retryable errors say so themselves (``GatewayError.retryable``); this module only decides how
long to wait: what the gateway asked for (``Retry-After``) when it asked, otherwise exponential
backoff with jitter. Attempts and total time are both bounded, and a wait that would overrun the
deadline stops the retries instead of sleeping past it.
"""

from __future__ import annotations

import logging

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    stop_before_delay,
    wait_random_exponential,
)

from .config import GatewayConfig
from .errors import GatewayError

log = logging.getLogger(__name__)


def is_retryable(exc: BaseException) -> bool:
    return isinstance(exc, GatewayError) and exc.retryable


class WaitRetryAfterOrBackoff:
    """Honour the gateway's ``retry_after`` when an error carries one; otherwise back off."""

    def __init__(self, initial: float, maximum: float) -> None:
        self._backoff = wait_random_exponential(multiplier=initial, max=maximum)

    def __call__(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        retry_after = getattr(exc, "retry_after", None)
        if retry_after is not None:
            return float(retry_after)
        return self._backoff(state)


def _log_retry(state: RetryCallState) -> None:
    exc = state.outcome.exception() if state.outcome else None
    wait = state.next_action.sleep if state.next_action else 0.0
    log.warning(
        "gateway attempt %d failed with %s; retrying in %.2fs",
        state.attempt_number,
        type(exc).__name__,
        wait,
    )


def retrying(config: GatewayConfig, attempts: int | None = None) -> AsyncRetrying:
    """A fresh tenacity controller for one logical call (a completion, an embeddings batch...).

    ``attempts`` overrides ``config.max_attempts`` for this call: ``1`` is for callers that retry
    on their own schedule anyway (a sensor's next poke is its retry).
    """
    if attempts is not None and (isinstance(attempts, bool) or not isinstance(attempts, int) or attempts < 1):
        raise ValueError(f"attempts must be a positive integer or None, got {attempts!r}")
    return AsyncRetrying(
        retry=retry_if_exception(is_retryable),
        wait=WaitRetryAfterOrBackoff(config.backoff_initial_seconds, config.backoff_max_seconds),
        stop=stop_after_attempt(attempts or config.max_attempts) | stop_before_delay(config.retry_deadline_seconds),
        before_sleep=_log_retry,
        reraise=True,
    )
