"""``GenesysConversationJobSensor``: wait for an analytics conversation-details job to be fulfilled."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Unpack

from airflow.sdk import PokeReturnValue, conf
from airflow.sdk.exceptions import AirflowFailException

from ..hooks.genesys_llm import GenesysLLMHook
from ..metrics import CONVERSATION_JOB
from ..triggers.conversation_job import ConversationJobWatch, GenesysConversationJobTrigger, check_job_id
from ._polling import DeadlinePollingSensor

if TYPE_CHECKING:
    from airflow.sdk import Context

    from ..triggers._polling import PollingSettings


class GenesysConversationJobSensor(DeadlinePollingSensor[ConversationJobWatch]):
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

    :param job_id: the ``jobId`` of the job (for example the return value of a task that called
        ``GenesysLLMHook.submit_conversation_job``), templated; letters, digits, ``.``, ``_`` and
        ``-`` only, checked when the DAG is parsed (a literal) or rendered (a template). Required.
    :param genesys_llm_conn_id: the ``genesys_llm`` connection of the organisation that owns the
        job, templated. Default ``"genesys_llm_default"``.
    :param deferrable: wait in the triggerer instead of a worker slot. The trigger checks first
        at once, then ``poke_interval`` apart; with ``exponential_backoff=True`` the interval
        doubles up to ``max_wait`` (default 600 s), in both modes. Default: the
        ``[operators] default_deferrable`` setting (``False``).

    ``timeout`` bounds the wait in every mode; when it runs out the task fails with
    ``AirflowSensorTimeout`` naming the last state.
    """

    template_fields: Sequence[str] = ("job_id", "genesys_llm_conn_id")
    trigger_name = "the conversation-job trigger"
    done_message = "Conversation-details job fulfilled"
    metric_prefix = CONVERSATION_JOB

    def __init__(
        self,
        *,
        job_id: str,
        genesys_llm_conn_id: str = GenesysLLMHook.default_conn_name,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        **kwargs: Any,
    ) -> None:
        super().__init__(genesys_llm_conn_id=genesys_llm_conn_id, deferrable=deferrable, **kwargs)
        if isinstance(job_id, str) and "{{" not in job_id:
            check_job_id(job_id)  # a literal id is checked when the DAG is parsed, a template when rendered
        self.job_id = job_id

    def _new_state(self) -> ConversationJobWatch:
        return ConversationJobWatch(self.job_id)

    def _not_done(self, state: ConversationJobWatch) -> str:
        return f"Conversation-details job {self.job_id!r} was not FULFILLED: {state.describe()}"

    def execute(self, context: Context) -> Any:
        check_job_id(self.job_id)  # the rendered id, before any call or deferral
        return super().execute(context)

    def _check(self, context: Context) -> bool | PokeReturnValue:
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
        summary = watch.summary(self._waited(), count)
        self.log.info("Conversation-details job fulfilled: %s", summary)
        return PokeReturnValue(is_done=True, xcom_value=summary)

    def _trigger(self, **polling: Unpack[PollingSettings]) -> GenesysConversationJobTrigger:
        return GenesysConversationJobTrigger(**polling, job_id=self.job_id)
