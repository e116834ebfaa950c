"""Chat completions over Server-Sent Events (protocol section 5).

Parsing is httpx-sse's (multi-line data, CRLF, ``event:``/``id:``/``retry:`` fields, comments);
this module only decides what each event means. A stream is complete once a chunk carried a
``finish_reason``; one that ends before that is truncated and raises, never returns.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator

import httpx
from httpx_sse import EventSource, SSEError
from pydantic import ValidationError

from ..config import GatewayConfig
from ..errors import (
    GatewayConnectionError,
    GatewayProtocolError,
    GatewayTimeoutError,
    StreamTruncatedError,
)
from ..models import ChatChunk, ChatCompletion, ChatParams, ChatRequestPayload, CompletionRequest, Message
from ..responses import CORRELATION_HEADER, error_from_response
from .base import AttemptInfo


def _payload(request: CompletionRequest, stream: bool) -> bytes:
    messages = list(request.messages)
    if request.system:
        messages.insert(0, Message(role="system", content=request.system))
    return ChatRequestPayload(
        messages=messages,
        params=ChatParams(
            model_id=request.model,
            temperature=request.temperature,
            max_tokens=request.max_tokens,
            stream=stream,
            stop=list(request.stop_sequences) or None,
        ),
    ).model_dump_json(exclude_none=True).encode()


class SSETransport:
    name = "sse"

    def __init__(self, config: GatewayConfig, http: httpx.AsyncClient, *, stream: bool = True) -> None:
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
        try:
            async with self._http.stream(
                "POST", self._url, content=_payload(request, self._stream), headers=headers
            ) as response:
                info.connect_ms = (time.perf_counter() - started) * 1000.0
                info.correlation_id = response.headers.get(CORRELATION_HEADER)
                if response.status_code != 200:
                    body = await response.aread()
                    raise error_from_response(
                        response.status_code, response.headers, body, what=f"POST {self._url}"
                    )
                content_type = response.headers.get("content-type", "")
                if "text/event-stream" in content_type:
                    async for text in self._events(response, info):
                        yield text
                else:
                    yield await self._whole(response, info)
        except httpx.TimeoutException as exc:
            raise GatewayTimeoutError(f"POST {self._url} timed out ({type(exc).__name__})") from None
        except httpx.TransportError as exc:
            raise GatewayConnectionError(f"POST {self._url} dropped: {type(exc).__name__}") from None

    async def _events(self, response: httpx.Response, info: AttemptInfo) -> AsyncIterator[str]:
        validate = ChatChunk.model_validate_json
        index = 0
        try:
            async for event in EventSource(response).aiter_sse():
                if not event.data:
                    continue  # docs/operations.md#sse-comment-blocks-arrive-as-empty-events
                if event.event == "error":
                    status, hints = _error_event(event.data)
                    raise error_from_response(
                        status, hints, event.data.encode(), what=f"stream of POST {self._url}"
                    )
                if event.event != "message":
                    continue
                if event.data == "[DONE]":
                    break
                try:
                    chunk = validate(event.data)
                except ValidationError as exc:
                    first = exc.errors(include_input=False, include_url=False)[0]
                    field = ".".join(str(p) for p in first["loc"]) or "chunk"
                    problem = "is not valid JSON" if first["type"] == "json_invalid" else f"has a bad '{field}'"
                    raise GatewayProtocolError(f"SSE event {index} ({len(event.data)} bytes) {problem}") from None
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
        except SSEError as exc:
            raise GatewayProtocolError(f"POST {self._url} did not answer with an event stream: {exc}") from None
        if info.finish_reason is None:
            raise StreamTruncatedError(f"SSE stream ended after {index} chunks without a finish_reason")
        if info.usage is None:
            raise GatewayProtocolError("SSE stream finished without reporting usage")

    async def _whole(self, response: httpx.Response, info: AttemptInfo) -> str:
        body = await response.aread()
        try:
            completion = ChatCompletion.model_validate_json(body)
        except ValidationError as exc:
            raise GatewayProtocolError(
                f"non-streaming answer ({len(body)} bytes) is not a chat completion: "
                f"{exc.error_count()} problems"
            ) from None
        choice = completion.choices[0]
        info.response_id = completion.id
        info.finish_reason = choice.finish_reason
        info.usage = completion.usage
        return choice.message.content

    async def aclose(self) -> None:
        """The shared HTTP client belongs to the gateway client, which closes it."""


def _error_event(data: str) -> tuple[int, dict[str, str]]:
    """Status and retry hint of an ErrorBody sent as an ``event: error`` inside a 200 stream.

    The response headers were sent before the error happened, so the wait comes from the body's
    ``messageParams.retryAfter`` (or its ``retry_after``), presented as a ``Retry-After`` header.
    """
    try:
        body = json.loads(data)
    except ValueError:
        return 500, {}
    if not isinstance(body, dict):
        return 500, {}
    status = body.get("status")
    params = body.get("messageParams") if isinstance(body.get("messageParams"), dict) else {}
    retry_after = params.get("retryAfter", body.get("retry_after"))
    hints = {"retry-after": str(retry_after)} if retry_after is not None else {}
    return (int(status) if isinstance(status, int) else 500), hints
