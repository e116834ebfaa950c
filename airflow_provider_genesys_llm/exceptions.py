"""Errors the Airflow layer (operators, sensors, hooks) raises for a failed task, in one place.

Each says in ``transient`` whether an Airflow retry of the task may succeed, as the gateway
errors (``client``) and the store errors (``governance.store_errors``) do; the message names
what failed and, where a setting decides it, the setting to change. Core packages raise their
own errors; these wrap outcomes only a task sees (a batch over its failure budget, a job that
ended without results, downloads that failed).
"""

from __future__ import annotations

from airflow.sdk.exceptions import AirflowFailException


class GenesysLLMTaskError(RuntimeError):
    """A task of this provider failed; ``transient`` says whether a retry of the task may succeed."""

    def __init__(self, message: str, *, transient: bool) -> None:
        super().__init__(message)
        self.transient = transient


class BatchFailedError(GenesysLLMTaskError):
    """More items failed than ``max_failed_ratio`` allows; everything that succeeded is stored.

    ``transient`` is False when every failure is an invalid item: a retry would find them invalid again.
    """


class ConversationJobFailedError(GenesysLLMTaskError):
    """The analytics conversation-details job ended FAILED, CANCELLED or EXPIRED.

    Transient when the task submitted the job itself (a retry submits a new one), not when it was
    given the job's id (a retry would find the same ended job).
    """


class ConversationJobTimeoutError(GenesysLLMTaskError):
    """The analytics job was not done by the task's deadline (``job_timeout``); a retry waits again."""


class TranscriptDownloadError(GenesysLLMTaskError):
    """Some transcripts could not be downloaded; everything else is stored, and a retry re-lands
    the interval idempotently (transient)."""


class TemplatedFieldError(AirflowFailException, ValueError):
    """A templated request option rendered to a value the field cannot take (``temperature="warm"``).

    Raised right after rendering, before any connection or spend; an ``AirflowFailException``, so
    Airflow does not retry it (another try renders the same value), and a ``ValueError`` like every
    other invalid-argument error of the operators.
    """

    transient = False


class OutputValidationFailedError(GenesysLLMTaskError, AirflowFailException):
    """The answer stayed invalid under ``output_schema`` after ``output_retries`` re-asks.

    Not transient, and an ``AirflowFailException`` so the task's retries are not used: every
    answer was paid for, and a retry would pay for all of them again for the same prompt; change
    the prompt or the schema (or raise ``output_retries``).
    """
