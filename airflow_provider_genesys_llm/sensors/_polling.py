"""What both sensors share, as ``triggers/_polling.py`` is what both triggers share.

A subclass says what one check does (``_check``), what it remembers between checks (``_new_state``),
which trigger waits for it when deferred (``_trigger``), how its waits are named and under which
metric prefix they are counted; the hook's lifetime, the deferral, the backoff default, the
outcome metrics and the timeout and trigger-event handling live here.
"""

from __future__ import annotations

import time
from datetime import timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Protocol, TypeVar, Unpack

from airflow.sdk import BaseSensorOperator, PokeReturnValue
from airflow.sdk.exceptions import AirflowException, AirflowFailException, AirflowSensorTimeout

from ..hooks.genesys_llm import GenesysLLMHook
from ..metrics import count_call

if TYPE_CHECKING:
    from airflow.sdk import Context
    from airflow.triggers.base import BaseTrigger

    from ..triggers._polling import PollingSettings

#: Cap on the wait between checks with ``exponential_backoff=True`` when ``max_wait`` is unset.
DEFAULT_MAX_POLL_INTERVAL = 600.0
#: The deferral's own timeout runs this much past the trigger's deadline, so the trigger's
#: timeout event (which names the last status) arrives first; the deferral timeout is a backstop.
DEFERRAL_GRACE_SECONDS = 60.0


class _Described(Protocol):
    def describe(self) -> str: ...


State = TypeVar("State", bound=_Described)


class DeadlinePollingSensor(BaseSensorOperator, Generic[State]):
    """A sensor over one ``genesys_llm`` connection that pokes, or defers to a polling trigger.

    ``timeout`` bounds the wait in every mode; when it runs out the task fails with
    ``AirflowSensorTimeout`` naming the last state (``State.describe()``).

    :param genesys_llm_conn_id: the ``genesys_llm`` connection both the pokes and the trigger use.
    :param deferrable: wait in the triggerer instead of a worker slot (needs ``poke_interval > 0``).
    """

    #: Names the trigger in messages about its events, e.g. "the gateway trigger".
    trigger_name: ClassVar[str]
    #: Logged with the summary when the wait is over, e.g. "Gateway ready".
    done_message: ClassVar[str]
    #: Prefix of the ``ready``/``not_ready``/``failed`` counters of every check, in both modes.
    metric_prefix: ClassVar[str]

    def __init__(self, *, genesys_llm_conn_id: str, deferrable: bool, **kwargs: Any) -> None:
        if kwargs.get("exponential_backoff") and kwargs.get("max_wait") is None:
            kwargs["max_wait"] = DEFAULT_MAX_POLL_INTERVAL
        super().__init__(**kwargs)
        if deferrable and self.poke_interval <= 0:
            raise ValueError(f"a deferrable {type(self).__name__} needs poke_interval > 0")
        self.genesys_llm_conn_id = genesys_llm_conn_id
        self.deferrable = deferrable
        self._poll_state: State | None = None
        self._started: float | None = None

    @cached_property
    def hook(self) -> GenesysLLMHook:
        """One hook for the whole wait, so checks reuse its token and connections."""
        return GenesysLLMHook(self.genesys_llm_conn_id)

    def _new_state(self) -> State:
        raise NotImplementedError

    def _state(self) -> State:
        if self._poll_state is None:
            self._poll_state = self._new_state()
            self._started = time.monotonic()
        return self._poll_state

    def _waited(self) -> float:
        """Seconds since the first poke of this attempt."""
        assert self._started is not None, "_state() starts the clock"
        return time.monotonic() - self._started

    def _not_done(self, state: State) -> str:
        """The end of the timeout message: what was not reached, and the last state seen."""
        raise NotImplementedError

    # --- poke (and reschedule) mode -------------------------------------------------------

    def _check(self, context: Context) -> bool | PokeReturnValue:
        """One check: done (with the summary as XCom value) or not yet."""
        raise NotImplementedError

    def poke(self, context: Context) -> bool | PokeReturnValue:
        return count_call(self.metric_prefix, lambda: self._check(context), poke=True)

    def execute(self, context: Context) -> Any:
        if self.deferrable:
            self._defer()
        self._poll_state = None
        try:
            return super().execute(context)
        except AirflowSensorTimeout as exc:
            raise AirflowSensorTimeout(f"{exc} {self._not_done(self._state())}.") from None
        finally:
            if "hook" in self.__dict__:
                self.hook.close()

    # --- deferrable mode ------------------------------------------------------------------

    def _trigger(self, **polling: Unpack[PollingSettings]) -> BaseTrigger:
        """The trigger that waits in the triggerer, given the connection id, deadline, start time
        and intervals every polling trigger takes."""
        raise NotImplementedError

    def _defer(self) -> None:
        now = time.time()
        max_poll = self.max_wait.total_seconds() if self.exponential_backoff and self.max_wait else 0.0
        self.defer(
            trigger=self._trigger(
                genesys_llm_conn_id=self.genesys_llm_conn_id,
                deadline=now + self.timeout,
                started_at=now,
                poll_interval=self.poke_interval,
                max_poll_interval=max(self.poke_interval, max_poll),
            ),
            method_name="execute_complete",
            timeout=timedelta(seconds=self.timeout + DEFERRAL_GRACE_SECONDS),
        )

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> dict[str, Any]:
        """Resume after the trigger: return its summary, or fail with its message (without retries
        when the trigger says retrying cannot help). Counted like a poke: the trigger's check."""
        return count_call(self.metric_prefix, lambda: self._resume(event), poke=True)

    def _resume(self, event: dict[str, Any] | None) -> dict[str, Any]:
        if not event:
            raise AirflowException(f"{self.trigger_name} ended without an event")
        status = event.get("status")
        if status == "success":
            self.log.info("%s: %s", self.done_message, event["summary"])
            return event["summary"]
        message = event.get("message") or f"{self.trigger_name} ended with status {status!r}"
        if status == "failed":
            raise AirflowFailException(message)
        if status == "timeout":
            raise AirflowSensorTimeout(message)
        raise AirflowException(message)
