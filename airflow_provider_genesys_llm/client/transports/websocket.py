"""Streaming completions over a pooled WebSocket session (protocol section 4).

Opening a session costs a TCP (and TLS) handshake, an HTTP upgrade and the ``init_stream``
round trip, so finished sessions go back to a small pool and the next request reuses one. A
session carries one request at a time; one that ended in doubt (protocol error, timeout,
close) is discarded rather than returned.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

from pydantic import ValidationError
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.protocol import State

from ..config import GatewayConfig
from ..errors import (
    AnswerTooLargeError,
    ErrorDetails,
    GatewayBadRequestError,
    GatewayConnectionError,
    GatewayError,
    GatewayProtocolError,
    GatewayRateLimitError,
    GatewayTimeoutError,
    GatewayUnavailableError,
    StreamTruncatedError,
    safe_code,
)
from ..models import (
    CompletionRequest,
    ErrorDetail,
    ErrorFrame,
    StreamContext,
    StreamFrame,
    StreamParameters,
    StreamReady,
    StreamRejected,
    StreamRequestPayload,
)
from ..parsing import describe
from ..responses import CORRELATION_HEADER, error_from_response
from .base import AttemptInfo

#: websockets logs handshake headers (the bearer token) at DEBUG; this logger never goes below INFO.
_wire_log = logging.getLogger(__name__ + ".wire")
_wire_log.setLevel(logging.INFO)

#: Rejection and error-frame codes that another attempt may get past.
RETRYABLE_CODES = frozenset({"rate_limited", "model_overloaded"})
#: Close code websockets sends when a frame is over ``max_size`` (RFC 6455 "message too big").
MESSAGE_TOO_BIG = 1009


@dataclass(slots=True)
class _Session:
    connection: ClientConnection
    session_id: str
    correlation_id: str | None


def error_for_code(detail: ErrorDetail, *, where: str) -> GatewayError:
    """Map a ``rejected`` or error-frame code onto the typed error that decides retrying.

    The frame's message is the gateway's free text: it goes to ``server_message`` only."""
    code = safe_code(detail.code)
    message = f"{where}: {code or 'unreadable error code'}"
    common: ErrorDetails = {"code": code, "server_message": detail.message or None}
    if detail.code in RETRYABLE_CODES:
        return GatewayRateLimitError(message, retry_after=detail.retry_after, **common)
    if detail.code == "internal":
        return GatewayUnavailableError(message, retry_after=detail.retry_after, **common)
    return GatewayBadRequestError(message, **common)


class _StaleSession(Exception):
    """The session was closed before the request got any answer: safe to send it on a new one."""


class _ErrorFrameReceived(Exception):
    """The gateway ended the request with an error frame; the session itself stays usable."""

    def __init__(self, error: GatewayError) -> None:
        super().__init__(error.message)
        self.error = error


def _bad_frame(raw: str | bytes, index: int, problem: ValidationError) -> Exception:
    """Name the frame and what is wrong with it; the frame's text may carry PII, so it stays out."""
    try:
        detail = ErrorFrame.model_validate_json(raw).error
    except ValidationError:
        pass
    else:
        return _ErrorFrameReceived(error_for_code(detail, where=f"stream error in frame {index}"))
    return GatewayProtocolError(describe(problem, len(raw), f"frame {index}"))


class WebSocketTransport:
    name = "websocket"

    def __init__(self, config: GatewayConfig) -> None:
        self._config = config
        self._url = config.stream_url + config.paths.completions_stream
        self._idle: list[_Session] = []
        #: Closing handshakes of healthy sessions the pool has no room for run in the background
        #: (bounded by close_timeout); aclose() waits for them, so no socket outlives the transport.
        self._closing: set[asyncio.Task[None]] = set()
        self._ssl = self._ssl_context() if self._url.startswith("wss://") else None
        self.connections_opened = 0

    def _ssl_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context()
        if not self._config.verify_ssl:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context

    async def _open(self, token: str) -> _Session:
        config = self._config
        try:
            connection = await connect(
                self._url,
                additional_headers={
                    "Authorization": f"Bearer {token}",
                    "X-Genesys-Client-ID": config.client_name,
                },
                compression="deflate" if config.compression else None,
                open_timeout=config.connect_timeout_seconds,
                ping_interval=config.ping_interval_seconds,
                ping_timeout=config.ping_timeout_seconds,
                close_timeout=2,
                ssl=self._ssl,
                logger=_wire_log,
                max_size=config.max_frame_bytes,
            )
        except InvalidStatus as exc:
            response = exc.response
            headers = {k.lower(): v for k, v in response.headers.raw_items()}
            raise error_from_response(
                response.status_code, headers, bytes(response.body or b""), what=f"WebSocket upgrade {self._url}"
            ) from None
        except TimeoutError:
            raise GatewayTimeoutError(
                f"WebSocket connect to {self._url} exceeded {config.connect_timeout_seconds}s"
            ) from None
        except (OSError, InvalidHandshake) as exc:
            raise GatewayConnectionError(f"WebSocket connect to {self._url} failed: {type(exc).__name__}") from None
        self.connections_opened += 1
        correlation_id = connection.response.headers.get(CORRELATION_HEADER) if connection.response else None
        try:
            session_id = await self._init_stream(connection)
        except BaseException:
            await connection.close()
            raise
        return _Session(connection, session_id, correlation_id)

    async def _init_stream(self, connection: ClientConnection) -> str:
        await connection.send('{"action": "init_stream", "protocol_version": "v2"}')
        try:
            async with asyncio.timeout(self._config.handshake_timeout_seconds):
                raw = await connection.recv()
        except TimeoutError:
            raise GatewayTimeoutError(
                f"no init_stream acknowledgement within {self._config.handshake_timeout_seconds}s"
            ) from None
        except ConnectionClosed as exc:
            raise GatewayUnavailableError(
                f"session closed during init_stream (code {exc.rcvd.code if exc.rcvd else None})",
                server_message=exc.rcvd.reason if exc.rcvd else None,
            ) from None
        try:
            return StreamReady.model_validate_json(raw).session_id
        except ValidationError:
            pass
        try:
            rejected = StreamRejected.model_validate_json(raw)
        except ValidationError:
            raise GatewayProtocolError(
                f"init_stream answer ({len(raw)} bytes) is neither stream_ready nor rejected"
            ) from None
        raise error_for_code(rejected.error, where="init_stream rejected")

    async def _acquire(self, token: str, info: AttemptInfo, *, use_pool: bool) -> tuple[_Session, bool]:
        while use_pool and self._idle:
            session = self._idle.pop()
            if session.connection.state is State.OPEN:
                info.connect_ms = 0.0
                return session, True
        started = time.perf_counter()
        session = await self._open(token)
        info.connect_ms = (time.perf_counter() - started) * 1000.0
        return session, False

    def _release(self, session: _Session) -> None:
        if session.connection.state is State.OPEN and len(self._idle) < self._config.pool_size:
            self._idle.append(session)
        else:
            self._discard(session)

    def _discard(self, session: _Session) -> None:
        closing = asyncio.ensure_future(session.connection.close())
        self._closing.add(closing)
        closing.add_done_callback(self._closing.discard)

    async def stream(self, request: CompletionRequest, token: str, info: AttemptInfo) -> AsyncIterator[str]:
        payload = _payload(request)
        for use_pool in (True, False):
            session, reused = await self._acquire(token, info, use_pool=use_pool)
            info.correlation_id = session.correlation_id
            info.response_id = session.session_id
            reusable = False
            try:
                try:
                    await session.connection.send(payload)
                except ConnectionClosed:
                    raise _StaleSession() from None
                async for text in self._frames(session.connection, info):
                    yield text
                reusable = True
                return
            except _StaleSession:
                if not reused:
                    raise GatewayUnavailableError("new session closed before answering the request") from None
            except _ErrorFrameReceived as ended:
                reusable = True
                raise ended.error from None
            finally:
                if reusable:
                    self._release(session)
                else:
                    # Ended in doubt (bad frame, timeout, a consumer that stopped reading): no closing
                    # handshake, whose reply may sit behind unread frames for close_timeout.
                    session.connection.transport.abort()

    async def _frames(self, connection: ClientConnection, info: AttemptInfo) -> AsyncIterator[str]:
        expected_sequence = 0
        index = 0
        validate = StreamFrame.model_validate_json
        try:
            async for raw in connection:
                try:
                    frame = validate(raw)
                except ValidationError as exc:
                    raise _bad_frame(raw, index, exc) from None
                if frame.sequence is not None:
                    if frame.sequence != expected_sequence:
                        raise GatewayProtocolError(
                            f"frame {index} has sequence {frame.sequence}, expected {expected_sequence}"
                        )
                    expected_sequence += 1
                index += 1
                if frame.finish_reason is not None:
                    if frame.usage is None:
                        raise GatewayProtocolError(f"final frame {index - 1} carries no usage")
                    info.finish_reason = frame.finish_reason
                    info.usage = frame.usage
                    yield frame.token
                    return
                yield frame.token
        except ConnectionClosed as exc:
            if exc.sent is not None and exc.sent.code == MESSAGE_TOO_BIG:
                raise AnswerTooLargeError(
                    f"frame {index} is larger than max_frame_bytes={self._config.max_frame_bytes}; "
                    "the session was closed"
                ) from None
            if index == 0:
                raise _StaleSession() from None
            code = exc.rcvd.code if exc.rcvd else None
            raise GatewayUnavailableError(
                f"session closed mid-stream after {index} frames (close code {code})",
                server_message=exc.rcvd.reason if exc.rcvd else None,
            ) from None
        if index == 0:
            raise _StaleSession()
        raise StreamTruncatedError(
            f"session closed after {index} frames without a final frame (close code {connection.close_code})"
        )

    async def aclose(self) -> None:
        sessions, self._idle = self._idle, []
        await asyncio.gather(*(s.connection.close() for s in sessions), *tuple(self._closing), return_exceptions=True)


def _payload(request: CompletionRequest) -> str:
    context = None
    if request.system or request.response_format:
        context = StreamContext(system=request.system, format=request.response_format)
    return StreamRequestPayload(
        request_id=request.request_id,
        model=request.model,
        prompt_id=request.prompt_id,
        parameters=StreamParameters(
            temperature=request.temperature,
            max_tokens=request.max_tokens,
            stop_sequences=list(request.stop_sequences),
        ),
        context=context,
        messages=list(request.messages) or None,
        variables=request.variables,
    ).model_dump_json(exclude_none=True)
