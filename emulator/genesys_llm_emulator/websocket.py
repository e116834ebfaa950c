"""Streaming completions over WebSocket (section 4): upgrade, `init_stream` handshake, then any
number of sequential requests on the same session.

Refusals (bad token, missing scope, injected 429/503) are plain HTTP answers sent before the
upgrade, through the ASGI WebSocket denial-response extension, because that is what a client's
`InvalidStatus` handling (status, Retry-After, correlation id) has to be tested against.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

from starlette.websockets import WebSocket, WebSocketDisconnect

from .admission import admit
from .config import SCOPE_STREAM
from .faults import Phase
from .plan import (
    CompletionPlan,
    Drop,
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
from .quota import QuotaRefusal, quota_frame_error
from .state import EmulatorState
from .validation import InvalidRequest, decode_json, parse_ws_request, request_id_of

PROTOCOL_VERSION = "v2"
NORMAL_CLOSURE = 1000
GOING_AWAY = 1001
POLICY_VIOLATION = 1008
DEFAULT_MISSING_KEY = "usage"


async def completion_stream(websocket: WebSocket) -> None:
    """The WebSocket endpoint: admit or refuse the upgrade, then run the session."""
    state: EmulatorState = websocket.app.state.emulator
    admission = admit(websocket, state, "ws", SCOPE_STREAM)
    if admission.refusal is not None:
        await websocket.send_denial_response(admission.refusal)
        # uvicorn (websockets-sansio) logs a spurious "returned without completing handshake"
        # when the app returns before it has noticed the closed transport: give it one turn.
        await asyncio.sleep(0)
        return
    await websocket.accept(
        headers=[(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in admission.headers.items()]
    )
    state.counters.add("ws_connections")
    client_name = websocket.headers.get("x-genesys-client-id")
    if client_name:
        state.counters.ws_client_ids[client_name] += 1
    try:
        if await _handshake(websocket, state):
            await _serve_requests(websocket, state)
    except WebSocketDisconnect:
        pass  # the client went away mid-send; the session is over either way


async def _next_message(websocket: WebSocket, state: EmulatorState) -> str | None:
    """The next text message, or None once the client left or the session sat idle too long.
    The idle timeout is re-read whenever the config changes, so a test can shorten it for
    sessions that are already waiting."""
    idle_since = time.monotonic()
    receiving = asyncio.ensure_future(websocket.receive())
    config_changed: asyncio.Future[Any] | None = None
    try:
        while not receiving.done():
            config_changed = asyncio.ensure_future(state.config_changed().wait())
            remaining = idle_since + state.config.idle_timeout - time.monotonic()
            done, _ = await asyncio.wait(
                {receiving, config_changed}, timeout=max(0.0, remaining), return_when=asyncio.FIRST_COMPLETED
            )
            config_changed.cancel()
            if not done:
                receiving.cancel()
                await websocket.close(GOING_AWAY, "idle timeout")
                return None
    finally:  # also when this session's task is cancelled (server shutdown)
        receiving.cancel()
        if config_changed is not None:
            config_changed.cancel()
    message = receiving.result()
    if message["type"] == "websocket.disconnect":
        return None
    text = message.get("text")
    return text if text is not None else bytes(message.get("bytes") or b"").decode("utf-8", "replace")


async def _handshake(websocket: WebSocket, state: EmulatorState) -> bool:
    """Answer `init_stream` with `stream_ready`, or reject and close with 1008."""
    text = await _next_message(websocket, state)
    if text is None:
        return False
    try:
        init: Any = decode_json(text)
    except InvalidRequest:
        init = None
    if not isinstance(init, dict) or init.get("action") != "init_stream":
        expected = '{"action": "init_stream", "protocol_version": "v2"}'
        return await _reject(websocket, "invalid_request", f"the first message must be {expected}")
    if init.get("protocol_version") != PROTOCOL_VERSION:
        message = f"protocol_version must be {PROTOCOL_VERSION!r}, got {init.get('protocol_version')!r}"
        return await _reject(websocket, "unsupported_protocol_version", message)
    fault = state.draw_fault("ws", Phase.INIT)
    if fault is not None:
        code = fault.params["code"]
        message = fault.params["message"] or f"{code} (injected fault)"
        return await _reject(websocket, code, message, fault.params["retry_after"])
    session_id = str(uuid.uuid4())
    ready = {"status": "stream_ready", "session_id": session_id, "max_tokens_limit": state.config.max_tokens_limit}
    await websocket.send_text(json.dumps(ready))
    return True


async def _reject(websocket: WebSocket, code: str, message: str, retry_after: float | None = None) -> bool:
    rejection = {"status": "rejected", "error": _error(code, message, retry_after)}
    await websocket.send_text(json.dumps(rejection))
    await websocket.close(POLICY_VIOLATION, code)
    return False


async def _serve_requests(websocket: WebSocket, state: EmulatorState) -> None:
    """One request at a time until the client leaves, idles out, or a fault closes the socket.
    An invalid request gets an `invalid_request` error frame and the session stays usable."""
    while (text := await _next_message(websocket, state)) is not None:
        state.counters.add("ws_requests")
        state.counters.note_payload(text)
        try:
            body = decode_json(text)
            request_id = request_id_of(body)
            first_sighting = state.record_completion("ws", request_id)
            request = parse_ws_request(body, request_id, state.config)
        except InvalidRequest as exc:
            await websocket.send_text(json.dumps({"error": _error("invalid_request", str(exc))}))
            continue
        ticket = state.quota.admit(state.config, state.counters.quota, request)
        if isinstance(ticket, QuotaRefusal):
            await websocket.send_text(json.dumps(quota_frame_error(ticket)))
            continue
        try:
            plan = plan_completion(state, "ws", request, first_sighting)
            ticket.planned(plan)
            if not await _stream(websocket, plan):
                return
        finally:
            ticket.release()


async def _stream(websocket: WebSocket, plan: CompletionPlan) -> bool:
    """Send one request's frames; False when the socket was closed along the way."""
    if plan.refusal is not None:
        await websocket.send_text(_failure_frame(plan.refusal))
        return True
    sequence = 0
    async for event in paced(plan):
        match event:
            case Token() | Final() | MissingKey():
                await websocket.send_text(_frame(event, sequence))
                sequence += 1
            case Malformed():
                garbled = _frame(Token(" garbled"), sequence)
                await websocket.send_text(garbled[: len(garbled) // 2])
            case SequenceGap():
                sequence += 1
            case Nested():
                await websocket.send_text(event.json())
            case Failure():
                await websocket.send_text(_failure_frame(event))
                return True
            case Drop(close_code=close_code):
                await websocket.close(close_code, "injected fault")
                return False
            case Truncation():
                await websocket.close(NORMAL_CLOSURE)
                return False
    return True


def _frame(event: Token | Final | MissingKey, sequence: int) -> str:
    """A token frame; all three keys always present except in a `MissingKey` frame."""
    frame: dict[str, Any] = {"token": "", "finish_reason": None, "usage": None, "sequence": sequence}
    if isinstance(event, Token):
        frame["token"] = event.text
    elif isinstance(event, Final):
        frame.update(token=event.text, finish_reason=event.finish_reason, usage=event.usage.as_dict())
    else:
        frame.pop(event.key or DEFAULT_MISSING_KEY, None)
    return json.dumps(frame)


def _failure_frame(failure: Failure) -> str:
    return json.dumps({"error": _error(failure.code, failure.message, failure.retry_after)})


def _error(code: str, message: str, retry_after: float | None = None) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message}
    if retry_after is not None:
        error["retry_after"] = retry_after
    return error
