"""``GenesysConversationJobSensor``: wait for an analytics conversation-details job to be fulfilled."""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseSensorOperator, PokeReturnValue, conf
from airflow.sdk.exceptions import AirflowException, AirflowFailException, AirflowSensorTimeout

from ..hooks.genesys_llm import GenesysLLMHook
from ..operators.metrics import CONVERSATION_JOB, count_outcomes  # issue 11: outcome metrics
from ..triggers.conversation_job import ConversationJobWatch, GenesysConversationJobTrigger, check_job_id
from .gateway import DEFAULT_MAX_POLL_INTERVAL, DEFERRAL_GRACE_SECONDS

if TYPE_CHECKING:
    from airflow.sdk import Context


class GenesysConversationJobSensor(BaseSensorOperator):
    """Wait until a conversation-details job (protocol section 9) is ``FULFILLED``.

    Only polls: submit the job upstream (``GenesysLLMHook.submit_conversation_job``). Unavailable,
    rate-limited, timed-out or dropped checks count as "not done yet", and each check is one
    attempt (the next poke is the retry); credential, permission and unknown-job errors fail at
    once. A job that ends ``FAILED``, ``CANCELLED`` or ``EXPIRED`` fails the task without retries
    (``AirflowFailException`` naming the state and the job's ``errorMessage``): retrying cannot
    bring its results back.

    Returns (XCom) ``{"job_id", "state", "waited_seconds", "conversations"}``, where
    ``conversations`` is counted by paging the results once (nothing is kept).
    ``waited_seconds`` covers this attempt (this trigger run, when deferred; this try, in
    reschedule mode).

    :param job_id: the ``jobId`` of the job (templated).
    :param genesys_llm_conn_id: the ``genesys_llm`` connection.
    :param deferrable: wait in the triggerer instead of a worker slot. The trigger checks first
        at once, then ``poke_interval`` apart; with ``exponential_backoff=True`` the interval
        doubles up to ``max_wait`` (default 600 s), in both modes.

    ``timeout`` bounds the wait in every mode; when it runs out the task fails with
    ``AirflowSensorTimeout`` naming the last state.
    """

    template_fields: Sequence[str] = ("job_id", "genesys_llm_conn_id")

    def __init__(
        self,
        *,
        job_id: str,
        genesys_llm_conn_id: str = GenesysLLMHook.default_conn_name,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        **kwargs: Any,
    ) -> None:
        if kwargs.get("exponential_backoff") and kwargs.get("max_wait") is None:
            kwargs["max_wait"] = DEFAULT_MAX_POLL_INTERVAL
        super().__init__(**kwargs)
        if isinstance(job_id, str) and "{{" not in job_id:
            check_job_id(job_id)  # a literal id is checked when the DAG is parsed, a template when rendered
        if deferrable and self.poke_interval <= 0:
            raise ValueError("a deferrable GenesysConversationJobSensor needs poke_interval > 0")
        self.job_id = job_id
        self.genesys_llm_conn_id = genesys_llm_conn_id
        self.deferrable = deferrable
        self._watch: ConversationJobWatch | None = None
        self._started: float | None = None

    @cached_property
    def hook(self) -> GenesysLLMHook:
        """One hook for the whole wait, so checks reuse its token and connections."""
        return GenesysLLMHook(self.genesys_llm_conn_id)

    def _state(self) -> ConversationJobWatch:
        if self._watch is None:
            self._watch = ConversationJobWatch(self.job_id)
            self._started = time.monotonic()
        return self._watch

    # --- poke (and reschedule) mode -------------------------------------------------------

    def execute(self, context: Context) -> Any:
        check_job_id(self.job_id)
        if self.deferrable:
            self._defer()
        self._watch = None
        try:
            return super().execute(context)
        except AirflowSensorTimeout as exc:
            raise AirflowSensorTimeout(
                f"{exc} Conversation-details job {self.job_id!r} was not FULFILLED: {self._state().describe()}."
            ) from None
        finally:
            if "hook" in self.__dict__:
                self.hook.close()

    @count_outcomes(CONVERSATION_JOB, poke=True)  # issue 11
    def poke(self, context: Context) -> bool | PokeReturnValue:
        watch = self._state()
        try:
            status = self.hook.get_conversation_job(self.job_id, retry=False)
        except Exception as exc:
            if not watch.observe_error(exc):
                raise
            self.log.warning("Job status check failed (%s); not done yet.", watch.last_error)
            return False
        verdict = watch.observe(status)
        if verdict == "failed":
            raise AirflowFailException(watch.failure_message())
        if verdict == "waiting":
            self.log.info("Conversation-details job %s not done: %s.", self.job_id, watch.describe())
            return False
        try:
            count = self.hook.count_conversations(self.job_id)
        except Exception as exc:
            if not watch.observe_error(exc, counting=True):
                raise
            self.log.warning("Counting the results failed (%s); trying again.", watch.last_error)
            return False
        assert self._started is not None
        summary = watch.summary(time.monotonic() - self._started, count)
        self.log.info("Conversation-details job fulfilled: %s", summary)
        return PokeReturnValue(is_done=True, xcom_value=summary)

    # --- deferrable mode ------------------------------------------------------------------

    def _defer(self) -> None:
        now = time.time()
        max_poll = self.max_wait.total_seconds() if self.exponential_backoff and self.max_wait else 0.0
        self.defer(
            trigger=GenesysConversationJobTrigger(
                genesys_llm_conn_id=self.genesys_llm_conn_id,
                job_id=self.job_id,
                deadline=now + self.timeout,
                started_at=now,
                poll_interval=self.poke_interval,
                max_poll_interval=max(self.poke_interval, max_poll),
            ),
            method_name="execute_complete",
            timeout=timedelta(seconds=self.timeout + DEFERRAL_GRACE_SECONDS),
        )

    @count_outcomes(CONVERSATION_JOB, poke=True)  # issue 11
    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> dict[str, Any]:
        """Resume after the trigger: return its summary, or fail with its message."""
        if not event:
            raise AirflowException("the conversation-job trigger ended without an event")
        status = event.get("status")
        if status == "success":
            self.log.info("Conversation-details job fulfilled: %s", event["summary"])
            return event["summary"]
        message = event.get("message") or f"the conversation-job trigger ended with status {status!r}"
        if status == "failed":
            raise AirflowFailException(message)
        if status == "timeout":
            raise AirflowSensorTimeout(message)
        raise AirflowException(message)
