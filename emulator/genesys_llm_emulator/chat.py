"""Chat completions over HTTP: Genesys SSE (section 5) and the OpenAI-compatible `/v1` route.

Both routes share one handler and one renderer of the stream script; they differ only in the
shape of their JSON (`ChatShape`) and of their errors, so a fault or a protocol detail (first
chunk with the role, usage on the finishing chunk, `data: [DONE]`) is written once.
"""

from __future__ import annotations

import json
import time
import uuid
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from .admission import admit
from .config import SCOPE_GENERATION_WRITE, EmulatorConfig
from .plan import (
    CompletionPlan,
    Drop,
    Endless,
    Failure,
    Final,
    Malformed,
    MissingKey,
    Nested,
    SequenceGap,
    Token,
    Truncation,
    paced,
    plan_completion,
)
from .quota import QuotaRefusal
from .responses import openai_error, openai_error_body, platform_error, platform_error_body, retry_after_value
from .state import EmulatorState
from .validation import CompletionRequest, InvalidRequest, decode_json, parse_chat_request, parse_openai_request

DONE = b"data: [DONE]\n\n"
KEEP_ALIVE = b": keep-alive\n\n"


class StreamAborted(Exception):
    """Raised inside a response body so the server drops the connection mid-answer (on purpose)."""


class ChatShape(ABC):
    """The JSON of one chat route: chunks, whole answers and errors."""

    missing_key_default = "choices"

    def __init__(self, request: CompletionRequest, correlation_id: str) -> None:
        self.request = request
        self.correlation_id = correlation_id

    @abstractmethod
    def _envelope(self, object_name: str) -> dict[str, Any]:
        """The fields every chunk (`object_name` ends in `.chunk`) or whole answer starts with."""

    @abstractmethod
    def stream_error(self, failure: Failure) -> bytes:
        """The SSE event that ends a stream with `failure`."""

    @classmethod
    @abstractmethod
    def error_response(
        cls,
        status: int,
        message: str,
        correlation_id: str,
        headers: Mapping[str, str],
        *,
        code: str | None = None,
        retry_after: str | None = None,
    ) -> Response:
        """A plain HTTP error answer of this route."""

    def chunk(
        self, delta: dict[str, str], finish_reason: str | None = None, usage: dict[str, int] | None = None
    ) -> dict[str, Any]:
        chunk: dict[str, Any] = {
            **self._envelope("chat.completion.chunk"),
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
        }
        if usage is not None:
            chunk["usage"] = usage
        return chunk

    def message(self, content: str, finish_reason: str | None, usage: dict[str, int] | None) -> dict[str, Any]:
        return {
            **self._envelope("chat.completion"),
            "choices": [
                {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": finish_reason}
            ],
            "usage": usage,
        }

    def failure_response(self, failure: Failure, headers: Mapping[str, str]) -> Response:
        retry_after = None if failure.retry_after is None else retry_after_value(failure.retry_after)
        return self.error_response(
            failure.status, failure.message, self.correlation_id, headers, code=failure.code, retry_after=retry_after
        )


class GenesysChat(ChatShape):
    """Section 5's chunks (`{"id", "choices", "usage"}`) and the platform ErrorBody."""

    def __init__(self, request: CompletionRequest, correlation_id: str) -> None:
        super().__init__(request, correlation_id)
        self.response_id = f"gen-{uuid.uuid4().hex}"

    def _envelope(self, object_name: str) -> dict[str, Any]:
        return {"id": self.response_id}

    def stream_error(self, failure: Failure) -> bytes:
        retry_after = None if failure.retry_after is None else f"{failure.retry_after:g}"
        body = platform_error_body(
            failure.status, failure.message, self.correlation_id, code=failure.code, retry_after=retry_after
        )
        return b"event: error\ndata: " + _json(body) + b"\n\n"

    @classmethod
    def error_response(
        cls,
        status: int,
        message: str,
        correlation_id: str,
        headers: Mapping[str, str],
        *,
        code: str | None = None,
        retry_after: str | None = None,
    ) -> Response:
        return platform_error(status, message, correlation_id, headers, code=code, retry_after=retry_after)


class OpenAIChat(ChatShape):
    """OpenAI's `chat.completion(.chunk)` objects and `{"error": {...}}` bodies."""

    def __init__(self, request: CompletionRequest, correlation_id: str) -> None:
        super().__init__(request, correlation_id)
        self.response_id = f"chatcmpl-{uuid.uuid4().hex}"
        self.created = int(time.time())

    def _envelope(self, object_name: str) -> dict[str, Any]:
        return {"id": self.response_id, "object": object_name, "created": self.created, "model": self.request.model}

    def stream_error(self, failure: Failure) -> bytes:
        return b"data: " + _json(openai_error_body(failure.status, failure.message, failure.code)) + b"\n\n"

    @classmethod
    def error_response(
        cls,
        status: int,
        message: str,
        correlation_id: str,
        headers: Mapping[str, str],
        *,
        code: str | None = None,
        retry_after: str | None = None,
    ) -> Response:
        return openai_error(status, message, headers, code=code, retry_after=retry_after)


@dataclass(frozen=True)
class ChatRoute:
    """What distinguishes the two chat routes."""

    endpoint: str  # counter and fault-rule name
    scope: str | None  # None: any bearer token will do
    parse: Callable[[Any, str, EmulatorConfig], CompletionRequest]
    shape: type[ChatShape]


GENESYS_CHAT = ChatRoute("sse", SCOPE_GENERATION_WRITE, parse_chat_request, GenesysChat)
OPENAI_CHAT = ChatRoute("openai", None, parse_openai_request, OpenAIChat)


def chat_endpoint(route: ChatRoute) -> Callable[[Request], Awaitable[Response]]:
    """The Starlette endpoint serving `route`."""

    async def endpoint(request: Request) -> Response:
        state: EmulatorState = request.app.state.emulator
        admission = admit(request, state, route.endpoint, route.scope)
        if admission.refusal is not None:
            return admission.refusal
        request_id = request.headers.get("x-request-id") or str(uuid.uuid4())
        headers = {**admission.headers, "X-Request-Id": request_id}
        first_sighting = state.record_completion(route.endpoint, request_id)
        body = await request.body()
        state.counters.note_payload(body)
        try:
            completion = route.parse(decode_json(body), request_id, state.config)
        except InvalidRequest as exc:
            return route.shape.error_response(400, str(exc), admission.correlation_id, headers)
        ticket = state.quota.admit(state.config, state.counters.quota, completion)
        if isinstance(ticket, QuotaRefusal):
            return route.shape.error_response(
                429,
                ticket.message,
                admission.correlation_id,
                headers,
                code="too.many.requests",
                retry_after=str(ticket.retry_after),
            )
        streaming = False
        try:
            plan = plan_completion(state, route.endpoint, completion, first_sighting)
            ticket.planned(plan)
            shape = route.shape(completion, admission.correlation_id)
            if plan.refusal is not None:
                return shape.failure_response(plan.refusal, headers)
            if completion.stream:
                streaming = True  # the body releases the ticket when it ends
                return StreamingResponse(
                    ticket.held_during(_event_stream(plan, shape)),
                    media_type="text/event-stream",
                    headers={**headers, "Cache-Control": "no-cache"},
                )
            return await _whole_answer(plan, shape, headers)
        finally:
            if not streaming:
                ticket.release()

    return endpoint


async def _event_stream(plan: CompletionPlan, shape: ChatShape) -> AsyncIterator[bytes]:
    """The SSE body: a keep-alive comment, the role chunk, a chunk per token, the finishing
    chunk with usage, `[DONE]`; faults replace or garble parts of it."""
    yield KEEP_ALIVE
    role_sent = False
    async for event in paced(plan):
        if not role_sent:
            yield _data(shape.chunk({"role": "assistant", "content": ""}))
            role_sent = True
        match event:
            case Token(text=text):
                yield _data(shape.chunk({"content": text}))
            case Final(text=text, finish_reason=finish_reason, usage=usage):
                if text:
                    yield _data(shape.chunk({"content": text}))
                yield _data(shape.chunk({}, finish_reason, usage.as_dict()))
                yield DONE
            case Failure():
                yield shape.stream_error(event)
                return
            case Drop():
                raise StreamAborted("close_mid_stream fault")
            case Truncation():
                yield DONE
                return
            case Malformed():
                yield b"data: " + _half(_json(shape.chunk({"content": " garbled"}))) + b"\n\n"
            case MissingKey(key=key):
                chunk = shape.chunk({"content": ""})
                chunk.pop(key or shape.missing_key_default, None)
                yield _data(chunk)
            case SequenceGap():
                pass  # SSE chunks carry no sequence numbers
            case Nested(error=error):
                yield (b"event: error\n" if error else b"") + b"data: " + event.json().encode() + b"\n\n"


async def _whole_answer(plan: CompletionPlan, shape: ChatShape, headers: Mapping[str, str]) -> Response:
    """The `stream: false` answer: the same script, collected into one JSON object."""
    if any(isinstance(event, Endless) for event in plan.events):
        return StreamingResponse(_endless_body(plan, shape), media_type="application/json", headers=headers)
    parts: list[str] = []
    corruption: Malformed | MissingKey | None = None
    async for event in paced(plan):
        match event:
            case Token(text=text):
                parts.append(text)
            case Final(text=text, finish_reason=finish_reason, usage=usage):
                body = shape.message("".join(parts) + text, finish_reason, usage.as_dict())
                return _corrupted(body, corruption, shape, headers)
            case Failure():
                return shape.failure_response(event, headers)
            case Drop():
                body = shape.message("".join(parts), None, None)
                return StreamingResponse(_cut_off(_half(_json(body))), media_type="application/json", headers=headers)
            case Truncation():
                return JSONResponse(shape.message("".join(parts), None, None), headers=headers)
            case Malformed() | MissingKey():
                corruption = event
            case Nested():
                return Response(event.json(), media_type="application/json", headers=headers)
            case SequenceGap():
                pass
    raise AssertionError("every plan ends with a final, failure, drop or truncation event")


def _corrupted(
    body: dict[str, Any], corruption: Malformed | MissingKey | None, shape: ChatShape, headers: Mapping[str, str]
) -> Response:
    if isinstance(corruption, Malformed):
        return Response(_half(_json(body)), media_type="application/json", headers=headers)
    if isinstance(corruption, MissingKey):
        body.pop(corruption.key or shape.missing_key_default, None)
    return JSONResponse(body, headers=headers)


async def _endless_body(plan: CompletionPlan, shape: ChatShape) -> AsyncIterator[bytes]:
    """A whole answer whose `content` string never ends."""
    opening = _json(shape.message("", "stop", None))
    yield opening[: opening.index(b'"content":"') + len(b'"content":"')]
    async for event in paced(plan):
        if isinstance(event, Token):
            yield event.text.encode()


async def _cut_off(prefix: bytes) -> AsyncIterator[bytes]:
    """Send `prefix`, then drop the connection: the client sees an incomplete body."""
    yield prefix
    raise StreamAborted("close_mid_stream fault")


def _json(value: Any) -> bytes:
    # ASCII-only, so cutting a document in half (`_half`) never splits a UTF-8 sequence.
    return json.dumps(value, separators=(",", ":")).encode()


def _data(chunk: dict[str, Any]) -> bytes:
    return b"data: " + _json(chunk) + b"\n\n"


def _half(serialized: bytes) -> bytes:
    """The first half of a JSON document: certainly not valid JSON any more."""
    return serialized[: len(serialized) // 2]
