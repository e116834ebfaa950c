"""The bounded re-ask of an invalid answer, as a pure object with no I/O.

The batch runner (async, many items) and the completion operator (one completion, synchronous)
both drive it: they send ``conversation.request``, govern the answer, and hand the governed text
to ``judge``. Keeping the decision here gives both the same bound, the same re-ask prompt and the
same outcome, whatever way they send. Every answer judged was paid for: the callers count and
audit each one before judging the next.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..client.models import CompletionRequest, Message, new_request_id
from .output_schema import OutputSchema

#: Re-asks of one item after its first answer, unless the DAG author says otherwise.
DEFAULT_OUTPUT_RETRIES = 2


@dataclass(frozen=True)
class Verdict:
    """How an answer was judged: ``output`` when valid; else ``reason`` and, while re-asks are
    left, ``reask`` (the next request to send)."""

    output: dict[str, Any] | None
    reason: str | None = None
    reask: CompletionRequest | None = None


class OutputConversation:
    """One item's conversation with the model until its answer is valid or ``retries`` re-asks are spent.

    ``request`` is the request as it was (or will be) sent, masked: the re-ask extends that
    conversation with the governed answer (masked as it was stored) and a user message carrying
    the validation reason, which names fields and rules, never values.
    """

    def __init__(self, schema: OutputSchema, retries: int, request: CompletionRequest) -> None:
        self.schema = schema
        self.retries = check_output_retries(retries)
        self.request = request
        #: Re-asks sent so far (every one a paid completion).
        self.reasks = 0

    def judge(self, answer: str) -> Verdict:
        checked = self.schema.check(answer)
        if checked.valid:
            return Verdict(checked.output)
        if self.reasks >= self.retries:
            return Verdict(None, checked.reason)
        assert checked.reason is not None
        self.reasks += 1
        messages = (
            *self.request.messages,
            Message(role="assistant", content=answer),
            Message(role="user", content=self.schema.reask_message(checked.reason)),
        )
        self.request = self.request.model_copy(update={"messages": messages, "request_id": new_request_id()})
        return Verdict(None, checked.reason, self.request)


def check_output_retries(retries: int) -> int:
    """``output_retries`` checked when a task is defined, before any spend."""
    if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
        raise ValueError(f"output_retries must be a whole number of re-asks, 0 or more, got {retries!r}")
    return retries


__all__ = ["DEFAULT_OUTPUT_RETRIES", "OutputConversation", "Verdict", "check_output_retries"]
