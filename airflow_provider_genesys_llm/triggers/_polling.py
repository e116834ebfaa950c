"""What both triggers share: poll with backoff up to a wall-clock deadline, yield one terminal event.

Subclasses say what one check does (``_check``) and what a timeout reports (``_timeout_event``);
the per-check time limit and the client's lifetime live here once, the loop and its backoff in
``hooks/polling.py`` (shared with the transcripts operator's job wait).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from functools import partial
from typing import TYPE_CHECKING, Any, Generic, Required, TypedDict, TypeVar

from airflow.triggers.base import BaseTrigger, TriggerEvent

from ..client import GatewayCircuitOpenError, GatewayError
from ..hooks.polling import check_intervals, poll_until

if TYPE_CHECKING:
    from ..hooks.genesys_llm import GenesysLLMHook

State = TypeVar("State")

#: A status check (or probe) may run this long even when the deadline is closer: the last check
#: at the deadline must get a real chance to answer instead of being cut at once.
MIN_CHECK_SECONDS = 5.0


def worth_another_check(exc: BaseException) -> bool:
    """True for errors that mean "not ready yet" (rate limited, unavailable, timed out, dropped):
    the next poll may see the gateway answer. False for errors a later check cannot fix
    (credentials, permission, bad config, protocol). Narrower than a task retry's ``transient``:
    a protocol error may pass on a later task attempt, but polling on would only repeat it."""
    if isinstance(exc, GatewayError):
        return exc.retryable or isinstance(exc, GatewayCircuitOpenError)  # an open breaker closes again
    return isinstance(exc, TimeoutError)


def describe_error(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError) and not str(exc):
        return "TimeoutError: the check did not answer in time"
    return f"{type(exc).__name__}: {exc}"


class PollingSettings(TypedDict, total=False):
    """The arguments every polling trigger takes (``DeadlinePollingTrigger.__init__``), so a
    subclass passes them on as ``**polling`` instead of repeating them."""

    genesys_llm_conn_id: Required[str]
    deadline: Required[float]
    poll_interval: float
    max_poll_interval: float
    started_at: float | None


class DeadlinePollingTrigger(BaseTrigger, Generic[State]):
    """Polls start ``poll_interval`` apart and double up to ``max_poll_interval``.

    :param deadline: wall-clock deadline (``time.time()`` epoch seconds). Wall clock on purpose:
        the trigger is serialized and may resume in another triggerer process, where a
        ``time.monotonic()`` value from this one would mean nothing.
    :param started_at: wall-clock time the sensor started waiting, for ``waited_seconds``.
    """

    def __init__(
        self,
        *,
        genesys_llm_conn_id: str,
        deadline: float,
        poll_interval: float = 60.0,
        max_poll_interval: float = 60.0,
        started_at: float | None = None,
    ) -> None:
        super().__init__()
        check_intervals(poll_interval, max_poll_interval)
        self.genesys_llm_conn_id = genesys_llm_conn_id
        self.deadline = float(deadline)
        self.poll_interval = float(poll_interval)
        self.max_poll_interval = float(max_poll_interval)
        self.started_at = float(started_at) if started_at is not None else time.time()

    def _polling_kwargs(self) -> dict[str, Any]:
        """The serialized settings every polling trigger has (``PollingSettings``, kept as attributes
        of the same names): a connection id, never a credential."""
        return {name: getattr(self, name) for name in PollingSettings.__annotations__}

    def _check_timeout(self) -> float:
        return max(self.deadline - time.time(), MIN_CHECK_SECONDS)

    def _new_state(self) -> State:
        raise NotImplementedError

    async def _check(self, hook: GenesysLLMHook, state: State) -> TriggerEvent | None:
        """One check: the terminal event, or None to wait for the next poll."""
        raise NotImplementedError

    def _timeout_event(self, state: State) -> TriggerEvent:
        raise NotImplementedError

    async def run(self) -> AsyncIterator[TriggerEvent]:
        """Poll with backoff and yield exactly one terminal event."""
        from ..hooks.genesys_llm import GenesysLLMHook

        state = self._new_state()
        hook = GenesysLLMHook(self.genesys_llm_conn_id)
        try:
            try:
                # Reads the connection without blocking the event loop (a secrets backend lookup
                # would otherwise stall every trigger of this triggerer). The client is bound to
                # this loop; the hook's async methods share it.
                await hook.aget_async_client()
            except Exception as exc:
                yield self._error_event(exc, "could not set up the gateway client")
                return
            event = await poll_until(
                partial(self._check, hook, state),
                deadline=self.deadline,
                poll_interval=self.poll_interval,
                max_poll_interval=self.max_poll_interval,
            )
            yield event if event is not None else self._timeout_event(state)
        finally:
            await hook.aclose()

    def _error_event(self, exc: BaseException, what: str) -> TriggerEvent:
        return TriggerEvent(
            {
                "status": "error",
                "message": f"{what} on connection {self.genesys_llm_conn_id!r}: {describe_error(exc)}",
                "error_type": type(exc).__name__,
            }
        )
