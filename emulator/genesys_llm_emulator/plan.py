"""What one completion request will stream, decided before the first byte goes out.

The generator's tokens and the fault that fired for the request are combined here into a
transport-neutral script of events (token, final, error, dropped connection, garbage frame, ...).
The WebSocket and SSE endpoints only render events in their own wire format, so a fault kind
behaves the same on every transport and is implemented once.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from .faults import FaultRule, Phase
from .generator import Insertion, completion_tokens, invalid_tokens
from .state import EmulatorState
from .validation import CompletionRequest

# HTTP status an SSE answer uses for each WebSocket error code (section 4, step 5).
STATUS_OF_ERROR_CODE: dict[str, int] = {
    "invalid_request": 400,
    "rate_limited": 429,
    "internal": 500,
    "model_overloaded": 503,
}


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int

    def as_dict(self) -> dict[str, int]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
        }


@dataclass(frozen=True)
class Token:
    """An ordinary piece of the answer."""

    text: str


@dataclass(frozen=True)
class Final:
    """The last piece of the answer, with why it ended and what it cost."""

    text: str
    finish_reason: str
    usage: Usage


@dataclass(frozen=True)
class Failure:
    """An error that ends the request (error frame, `event: error`, or an HTTP error)."""

    code: str
    message: str
    retry_after: float | None
    status: int


@dataclass(frozen=True)
class Drop:
    """The connection dies: WebSocket close with `close_code`, or the HTTP response is cut off."""

    close_code: int


@dataclass(frozen=True)
class Truncation:
    """The stream ends cleanly but without the final frame (WS close 1000, SSE `[DONE]`)."""


@dataclass(frozen=True)
class Malformed:
    """A frame that is not valid JSON; the stream goes on after it."""


@dataclass(frozen=True)
class MissingKey:
    """A frame lacking `key` (None: the transport's default key); the stream goes on after it."""

    key: str | None


@dataclass(frozen=True)
class SequenceGap:
    """The next frame skips one sequence number (WebSocket only)."""


@dataclass(frozen=True)
class Endless:
    """`text` as a token again and again until the client hangs up; nothing follows."""

    text: str


@dataclass(frozen=True)
class Nested:
    """A frame of JSON nested `depth` levels deep; `error`: as an error frame / `event: error`."""

    depth: int
    error: bool

    def json(self) -> str:
        nested = "[" * self.depth + "]" * self.depth
        return '{"error":' + nested + "}" if self.error else nested


StreamEvent = Token | Final | Failure | Drop | Truncation | Malformed | MissingKey | SequenceGap | Endless | Nested


@dataclass(frozen=True)
class CompletionPlan:
    """The script of one request: a refusal up front, or events paced by the delays."""

    refusal: Failure | None
    events: tuple[StreamEvent, ...]
    first_token_delay: float
    token_delay: float


def plan_completion(
    state: EmulatorState, endpoint: str, request: CompletionRequest, first_sighting: bool
) -> CompletionPlan:
    """Draw this request's fault (if any) and script its stream."""
    fault = state.draw_fault(endpoint, Phase.COMPLETION, request.request_id, first_sighting, request)
    kind = fault.kind if fault else None
    params: dict[str, Any] = fault.params if fault else {}
    insertion = Insertion(params["text"], params["split"]) if kind == "pii_output" else None
    tokens = completion_tokens(request, state.config.completion_tokens, insertion)
    if kind == "invalid_output":
        tokens = invalid_tokens(tokens, params["answer"], params["text"])
    finish_reason = "length" if len(tokens) > request.max_tokens else "stop"
    tokens = tokens[: request.max_tokens]
    usage = Usage(request.prompt_tokens, len(tokens))
    answer: list[StreamEvent] = [Token(text) for text in tokens[:-1]]
    answer.append(Final(tokens[-1], finish_reason, usage))
    return CompletionPlan(
        refusal=_retryable_refusal(params) if kind == "fail_first_attempt_ratio" else None,
        events=_with_fault(answer, fault) if fault else tuple(answer),
        first_token_delay=params["delay"] if kind == "slow_first_token" else 0.0,
        token_delay=state.config.token_delay,
    )


def _retryable_refusal(params: dict[str, Any]) -> Failure:
    """`fail_first_attempt_ratio`: a transient overload that a retry of the same request gets past."""
    retry_after = float(params["retry_after"])
    return Failure("model_overloaded", "model overloaded, retry shortly (injected fault)", retry_after, 503)


def _with_fault(answer: list[StreamEvent], fault: FaultRule) -> tuple[StreamEvent, ...]:
    """Splice the fault's event in after `after_tokens` tokens, always before the final frame."""
    position = min(fault.params.get("after_tokens", 0), len(answer) - 1)
    before, after = answer[:position], answer[position:]
    params = fault.params
    if fault.kind == "stream_error":
        code = params["code"]
        status = params["status"] or STATUS_OF_ERROR_CODE.get(code, 500)
        message = params["message"] or f"{code} (injected fault)"
        return (*before, Failure(code, message, params["retry_after"], status))
    if fault.kind == "close_mid_stream":
        return (*before, Drop(params["close_code"]))
    if fault.kind == "truncate":
        return (*before, Truncation())
    if fault.kind == "malformed_frame":
        return (*before, Malformed(), *after)
    if fault.kind == "missing_key":
        return (*before, MissingKey(params["key"]), *after)
    if fault.kind == "bad_sequence":
        return (*before, SequenceGap(), *after)
    if fault.kind == "endless_answer":
        return (Endless("x" * (params["token_bytes"] - 1) + " "),)
    if fault.kind == "huge_frame":
        return (*before, Token("x" * params["bytes"]), *after)
    if fault.kind == "nested_frame":
        return (*before, Nested(params["depth"], params["error"]), *after)
    return tuple(answer)  # kinds that change the text or the timing, not the frames


async def paced(plan: CompletionPlan) -> AsyncIterator[StreamEvent]:
    """The plan's events in time: the first-token delay, then `token_delay` between events.
    An `Endless` event comes out as its token, forever, letting the loop run between tokens so
    the server notices the client hanging up."""
    if plan.first_token_delay:
        await asyncio.sleep(plan.first_token_delay)
    for index, event in enumerate(plan.events):
        if index and plan.token_delay:
            await asyncio.sleep(plan.token_delay)
        if isinstance(event, Endless):
            while True:
                yield Token(event.text)
                await asyncio.sleep(plan.token_delay)
        yield event
