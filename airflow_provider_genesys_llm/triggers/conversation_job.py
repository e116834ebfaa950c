"""``GenesysConversationJobTrigger``: wait in the triggerer for an analytics conversation-details job.

The decision (which states end the wait, which errors mean "not yet" and which mean "stop", what
the failure and timeout messages say) lives in ``ConversationJobWatch``, a small object with no
I/O that the sensor's poke path uses too, so the blocking and the deferrable paths cannot drift.
The trigger only polls and counts: it never submits a job.
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Unpack

from airflow.triggers.base import TriggerEvent

from ..client.transcripts import TERMINAL_STATES, JobStatus
from ..governance.masking import PiiMasker
from ._polling import DeadlinePollingTrigger, PollingSettings, describe_error, worth_another_check

if TYPE_CHECKING:
    from ..hooks.genesys_llm import GenesysLLMHook

#: What one status answer means for the wait.
JobVerdict = Literal["waiting", "fulfilled", "failed"]
#: A job id goes into the URL path: letters, digits, ``.``, ``_`` and ``-`` only (Genesys uses UUIDs).
JOB_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def check_job_id(job_id: object) -> str:
    """``job_id`` when it is a usable job id; a ValueError naming it otherwise."""
    if not isinstance(job_id, str) or not JOB_ID_PATTERN.fullmatch(job_id):
        raise ValueError(
            f"job_id must be the jobId of a conversation-details job (letters, digits, '.', '_', '-'), got {job_id!r}"
        )
    return job_id


@dataclass
class ConversationJobWatch:
    """Judges job status answers and errors; remembers what it saw for the summary and the messages.

    ``checks`` counts status checks, answered or failed.
    """

    job_id: str
    checks: int = 0
    state: str | None = None
    error_message: str | None = None
    last_error: str | None = None

    def __post_init__(self) -> None:
        check_job_id(self.job_id)

    def observe(self, status: JobStatus) -> JobVerdict:
        """Record one status answer and say what it means."""
        self.checks += 1
        self.last_error = None
        self.state = status.state
        # The gateway's free text may quote a conversation: masked before it can reach a log or an event.
        self.error_message = PiiMasker().mask(status.errorMessage).text if status.errorMessage else None
        if status.state == "FULFILLED":
            return "fulfilled"
        return "failed" if status.state in TERMINAL_STATES else "waiting"

    def observe_error(self, exc: BaseException, *, counting: bool = False) -> bool:
        """Record a failed status check (or count of the results); True when it is transient
        (keep waiting), False when a later check cannot fix it (credentials, permission, unknown job)."""
        if not counting:
            self.checks += 1
        self.last_error = ("counting the results failed: " if counting else "") + describe_error(exc)
        return worth_another_check(exc)

    def failure_message(self) -> str:
        """Why a job that ended without results failed the task, and what to do about it."""
        reason = (self.error_message or "no errorMessage given").rstrip(". ")
        return (
            f"Conversation-details job {self.job_id!r} ended in state {self.state}: {reason}. "
            "Its results will never be available; submit a new job for the interval."
        )

    def describe(self) -> str:
        """The last thing seen, for logs and the timeout message."""
        text = "no status answer yet" if self.state is None else f"last state {self.state}"
        text += f" after {self.checks} check(s)"
        if self.last_error:
            text += f"; the last attempt failed with {self.last_error}"
        return text

    def summary(self, waited_seconds: float, conversations: int) -> dict[str, Any]:
        """The sensor's XCom value: small and JSON-ready."""
        return {
            "job_id": self.job_id,
            "state": self.state,
            "waited_seconds": round(max(0.0, waited_seconds), 3),
            "conversations": conversations,
        }


class GenesysConversationJobTrigger(DeadlinePollingTrigger[ConversationJobWatch]):
    """Poll a conversation-details job until it is FULFILLED (then count its conversations), it
    ends otherwise, the deadline passes, or a permanent error occurs.

    Yields exactly one event: ``{"status": "success", "summary": {...}}``,
    ``{"status": "failed", "message": ..., "state": ..., "error_message": ...}`` (the job ended
    FAILED, CANCELLED or EXPIRED), ``{"status": "timeout", "message": ..., "state": ...}`` or
    ``{"status": "error", "message": ..., "error_type": ...}``.

    Each status check is one attempt (no client retries): the next poll is the retry. Deadline and
    backoff: see ``DeadlinePollingTrigger``.
    """

    def __init__(self, *, job_id: str, **polling: Unpack[PollingSettings]) -> None:
        super().__init__(**polling)
        self.job_id = check_job_id(job_id)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        """The connection id, the job id and plain settings; never a credential or token."""
        return (
            "airflow_provider_genesys_llm.triggers.conversation_job.GenesysConversationJobTrigger",
            {**self._polling_kwargs(), "job_id": self.job_id},
        )

    def _new_state(self) -> ConversationJobWatch:
        return ConversationJobWatch(self.job_id)

    def _timeout_event(self, watch: ConversationJobWatch) -> TriggerEvent:
        message = (
            f"Conversation-details job {self.job_id!r} was not FULFILLED within "
            f"{self.deadline - self.started_at:.1f}s: {watch.describe()}."
        )
        return TriggerEvent({"status": "timeout", "message": message, "state": watch.state})

    async def _check(self, hook: GenesysLLMHook, watch: ConversationJobWatch) -> TriggerEvent | None:
        """One status check (and the count once fulfilled); the terminal event, or None to wait on."""
        try:
            status = await asyncio.wait_for(hook.aget_conversation_job(self.job_id, retry=False), self._check_timeout())
        except Exception as exc:
            if not watch.observe_error(exc):
                return self._error_event(exc, f"status check of job {self.job_id!r} failed")
            self.log.warning("Job status check failed (%s); not done yet.", watch.last_error)
            return None
        verdict = watch.observe(status)
        if verdict == "failed":
            return TriggerEvent(
                {
                    "status": "failed",
                    "message": watch.failure_message(),
                    "state": watch.state,
                    "error_message": watch.error_message,
                }
            )
        if verdict == "waiting":
            self.log.info("Conversation-details job %s not done: %s.", self.job_id, watch.describe())
            return None
        try:
            count = await asyncio.wait_for(hook.acount_conversations(self.job_id), self._check_timeout())
        except Exception as exc:
            if not watch.observe_error(exc, counting=True):
                return self._error_event(exc, f"counting the results of job {self.job_id!r} failed")
            self.log.warning("Counting the results failed (%s); trying again.", watch.last_error)
            return None
        summary = watch.summary(time.time() - self.started_at, count)
        self.log.info("Conversation-details job fulfilled: %s", summary)
        return TriggerEvent({"status": "success", "summary": summary})
