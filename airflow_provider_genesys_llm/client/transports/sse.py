"""Chat completions over Server-Sent Events (protocol section 5).

Parsing is httpx-sse's (multi-line data, CRLF, ``event:``/``id:``/``retry:`` fields, comments);
this module only decides what each event means. A stream is complete once a chunk carried a
``finish_reason``; one that ends before that is truncated and raises, never returns.

httpx-sse buffers a line (and an event's data lines) until it ends, without a limit, so the text
it reads is metered: more than ``max_frame_bytes`` without a complete event ends the stream with
``AnswerTooLargeError``. A whole (non-streamed) answer is read up to the answer's byte bound.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Mapping
from typing import cast

import httpx
from httpx_sse import EventSource, SSEError
from pydantic import ValidationError

from ..config import GatewayConfig
from ..errors import (
    AnswerTooLargeError,
    GatewayError,
    GatewayProtocolError,
    StreamTruncatedError,
)
from ..exchange import MAX_ERROR_BODY_BYTES, http_failures, read_limited
from ..limits import AnswerBound
from ..models import ChatChunk, ChatCompletion, ChatParams, ChatRequestPayload, CompletionRequest, Message
from ..parsing import describe, loads_or_none
from ..responses import CORRELATION_HEADER, error_from_response
from .base import AttemptInfo


def _payload(request: CompletionRequest, stream: bool) -> bytes:
    messages = list(request.messages)
    if request.system:
        messages.insert(0, Message(role="system", content=request.system))
    return (
        ChatRequestPayload(
            messages=messages,
            params=ChatParams(
                model_id=request.model,
                temperature=request.temperature,
                max_tokens=request.max_tokens,
                stream=stream,
                stop=list(request.stop_sequences) or None,
            ),
        )
        .model_dump_json(exclude_none=True)
        .encode()
    )


class SSETransport:
    name = "sse"

    def __init__(self, config: GatewayConfig, http: httpx.AsyncClient, *, stream: bool = True) -> None:
        self._config = config
        self._url = config.api_url + config.paths.chat_completions
        self._http = http
        self._stream = stream

    async def stream(self, request: CompletionRequest, token: str, info: AttemptInfo) -> AsyncIterator[str]:
        headers = {
            "Authorization": f"Bearer {token}",
            "X-Request-Id": request.request_id,
            "Content-Type": "application/json",
            "Accept": "text/event-stream" if self._stream else "application/json",
        }
        started = time.perf_counter()
        with http_failures(f"POST {self._url}"):
            async with self._http.stream(
                "POST", self._url, content=_payload(request, self._stream), headers=headers
            ) as response:
                info.connect_ms = (time.perf_counter() - started) * 1000.0
                info.correlation_id = response.headers.get(CORRELATION_HEADER)
                if response.status_code != 200:
                    body, _ = await read_limited(response, MAX_ERROR_BODY_BYTES)
                    raise error_from_response(response.status_code, response.headers, body, what=f"POST {self._url}")
                content_type = response.headers.get("content-type", "")
                if "text/event-stream" in content_type:
                    async for text in self._events(response, info):
                        yield text
                else:
                    yield await self._whole(response, info, AnswerBound(self._config, request).max_bytes)

    async def _events(self, response: httpx.Response, info: AttemptInfo) -> AsyncIterator[str]:
        validate = ChatChunk.model_validate_json
        index = 0
        metered = _MeteredText(response, self._config.max_frame_bytes)
        try:
            async for event in EventSource(cast(httpx.Response, metered)).aiter_sse():
                metered.since_event = 0
                if not event.data:
                    continue  # docs/operations.md#sse-comment-blocks-arrive-as-empty-events
                if event.event == "error":
                    raise _error_event(event.data, index, f"stream of POST {self._url}")
                if event.event != "message":
                    continue
                if event.data == "[DONE]":
                    break
                try:
                    chunk = validate(event.data)
                except ValidationError as exc:
                    raise GatewayProtocolError(describe(exc, len(event.data), f"SSE event {index}")) from None
                index += 1
                if chunk.id:
                    info.response_id = chunk.id
                if chunk.usage is not None:
                    info.usage = chunk.usage
                if chunk.choices:
                    choice = chunk.choices[0]
                    if choice.finish_reason is not None:
                        info.finish_reason = choice.finish_reason
                    yield choice.delta.content or ""
        except SSEError:
            raise GatewayProtocolError(f"POST {self._url} did not answer with an event stream") from None
        if info.finish_reason is None:
            raise StreamTruncatedError(f"SSE stream ended after {index} chunks without a finish_reason")
        if info.usage is None:
            raise GatewayProtocolError("SSE stream finished without reporting usage")

    async def _whole(self, response: httpx.Response, info: AttemptInfo, max_bytes: int) -> str:
        limit = max_bytes + self._config.max_frame_bytes  # the answer plus its JSON envelope
        body, complete = await read_limited(response, limit)
        if not complete:
            raise AnswerTooLargeError(f"non-streaming answer is larger than {limit} bytes; the connection was closed")
        try:
            completion = ChatCompletion.model_validate_json(body)
        except ValidationError as exc:
            raise GatewayProtocolError(describe(exc, len(body), "non-streaming answer")) from None
        choice = completion.choices[0]
        info.response_id = completion.id
        info.finish_reason = choice.finish_reason
        info.usage = completion.usage
        return choice.message.content

    async def aclose(self) -> None:
        """The shared HTTP client belongs to the gateway client, which closes it."""


def _error_event(data: str, index: int, what: str) -> GatewayError:
    """The typed error for an ErrorBody sent as an ``event: error`` inside a 200 stream.

    The response headers were sent before the error happened, so the wait comes from the body's
    ``messageParams.retryAfter`` (or its ``retry_after``), presented as a ``Retry-After`` header.
    An error event that is not a JSON object (or nests too deeply) breaks the contract.
    """
    body = loads_or_none(data)
    if not isinstance(body, dict):
        return GatewayProtocolError(f"SSE error event after event {index} ({len(data)} bytes) is not a JSON object")
    status = body.get("status")
    params = body.get("messageParams")
    if not isinstance(params, dict):
        params = {}
    retry_after = params.get("retryAfter", body.get("retry_after"))
    hints = {"retry-after": str(retry_after)} if retry_after is not None else {}
    status = status if isinstance(status, int) and not isinstance(status, bool) and 400 <= status <= 599 else 500
    return error_from_response(status, hints, data.encode(), what=what)


class _MeteredText:
    """What ``EventSource`` reads of a response (its headers and text), counting the characters
    read since the last complete event; past ``limit`` the stream is too large to hold."""

    def __init__(self, response: httpx.Response, limit: int) -> None:
        self.headers: Mapping[str, str] = response.headers
        self._response = response
        self._limit = limit
        self.since_event = 0

    async def aiter_text(self) -> AsyncIterator[str]:
        async for text in self._response.aiter_text():
            self.since_event += len(text)
            if self.since_event > self._limit:
                raise AnswerTooLargeError(
                    f"SSE stream sent over max_frame_bytes={self._limit} without completing an event; "
                    "the connection was closed"
                )
            yield text
