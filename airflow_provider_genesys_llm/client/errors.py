"""Typed gateway errors.

Each class is a decision for the caller, carried by two class attributes:

- ``retryable``: the client's own retry loop tries the call again (after ``Retry-After`` or
  backoff). When such an error reaches you, the client's attempts are used up.
- ``transient``: a later run (an Airflow task retry) may succeed without anyone changing
  anything. ``transient=False`` means only a fix helps (credentials, scope, request), so an
  orchestrator should fail without retrying.

``str(exc)`` carries only what the client itself knows to be safe: what failed, the HTTP status,
the gateway's error code when it looks like a code, the correlation id, and what a retry would
do. The gateway's own free text (an error message can quote a prompt, hence PII) is kept apart
on ``server_message`` for callers that mask it before recording it, and no client error keeps a
chained cause or context that could hold that text.
"""

from __future__ import annotations

import re
from typing import ClassVar, TypedDict, TypeVar, Unpack

#: How much of the gateway's free text an error keeps on ``server_message``.
SERVER_MESSAGE_LIMIT = 500

_CODE = re.compile(r"[A-Za-z][A-Za-z0-9_.:-]{0,63}")
_UUID = re.compile(r"[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}")
_E = TypeVar("_E", bound=BaseException)


class ErrorDetails(TypedDict, total=False):
    """What an answer told about a failure, as ``GatewayError``'s keyword arguments: built once
    where an answer is read and passed to whichever class its status picks."""

    status_code: int | None
    code: str | None
    correlation_id: str | None
    server_message: str | None


def safe_code(code: str | None) -> str | None:
    """``code`` when it reads as an error code (``bad.request``, ``invalid_client``), else None.

    Codes come from the gateway too: one with digits runs, ``@`` or spaces is not a code and may
    be PII, so it never reaches a message.
    """
    if code and _CODE.fullmatch(code) and sum(char.isdigit() for char in code) <= 3:
        return code
    return None


def safe_correlation_id(value: str | None) -> str | None:
    """The ``ININ-Correlation-Id`` when it is a UUID, as the platform sends it; else None."""
    return value if value and _UUID.fullmatch(value.strip()) else None


def detached(exc: _E) -> _E:
    """``exc`` without ``__cause__``/``__context__``: an exception raised while handling a parser's or
    socket's exception keeps that one as its context, and its text (a frame, a close reason) may
    hold PII. Called where a client error leaves the client, then re-raised with a bare ``raise``."""
    exc.__cause__ = None
    exc.__context__ = None
    exc.__suppress_context__ = True
    return exc


class GatewayError(Exception):
    """Base of every error the client raises.

    ``correlation_id`` is the gateway's ``ININ-Correlation-Id`` when an answer carried one;
    ``server_message`` is the gateway's free text (truncated, unmasked: mask it before you log it).
    """

    retryable: ClassVar[bool] = False
    transient: ClassVar[bool] = False
    #: For permanent errors: what has to change before a retry can succeed.
    fix: ClassVar[str] = "report it with the correlation id"
    #: Requests sent for the completion that ended in this error; set by the client.
    attempts: int | None = None

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        code: str | None = None,
        correlation_id: str | None = None,
        server_message: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.code = code
        self.correlation_id = correlation_id
        self.server_message = server_message[:SERVER_MESSAGE_LIMIT] if server_message else None

    @classmethod
    def advice(cls) -> str:
        """What a retry would do, for messages and the README's table."""
        if cls.retryable:
            return "transient: the client retried it; a later task retry may succeed"
        if cls.transient:
            return "not retried by the client; a later task retry may succeed"
        return f"permanent: retrying cannot help; {cls.fix}"

    def __str__(self) -> str:
        return f"{self.message} ({self.advice()})"


class RequestValidationError(GatewayError, ValueError):
    """The request breaks a documented limit; it was never sent."""

    fix = "fix the request"


class GatewayAuthError(GatewayError):
    """OAuth refused the client credentials, or the API refused the token after a refresh.

    A refused login also stops the client: every later call fails at once with this error,
    without another token request.
    """

    fix = "fix client_id/client_secret, or region/login_base_url"


class GatewayPermissionError(GatewayError):
    """The token lacks a scope or permission the endpoint needs (HTTP 403); never retried."""

    fix = "grant the OAuth client the scope or permission, or fix 'scopes' on the connection"


class GatewayBadRequestError(GatewayError):
    """The gateway rejected the request as invalid (HTTP 400, ``invalid_request``); never retried."""

    fix = "fix the request"


class _WaitsForRetryAfter(GatewayError):
    """An error that can say how long to wait before the next attempt."""

    def __init__(self, message: str, *, retry_after: float | None = None, **details: Unpack[ErrorDetails]) -> None:
        super().__init__(message, **details)
        self.retry_after = retry_after


class _RetriedByClient(GatewayError):
    """A failure the client's own retry loop tries again, and a later task retry may get past."""

    retryable = True
    transient = True


class GatewayRateLimitError(_WaitsForRetryAfter, _RetriedByClient):
    """HTTP 429, a ``rate_limited`` frame or an overloaded model; wait ``retry_after`` seconds."""


class GatewayUnavailableError(_WaitsForRetryAfter, _RetriedByClient):
    """A 5xx answer, an ``internal`` error frame or a session closed with 1001/1011."""


class GatewayConnectionError(_RetriedByClient):
    """The connection failed or dropped before the answer was complete; counts for the breaker."""


class GatewayTimeoutError(_RetriedByClient):
    """Connect, handshake, first-token, idle or total timeout ran out; counts for the breaker."""


class GatewayCircuitOpenError(_WaitsForRetryAfter):
    """The client's circuit breaker is open: the gateway failed (connection or auth) too many times
    in a row, so calls fail at once instead of each running its own retry ladder.
    ``retry_after`` is the rest of the cool-down, after which one probe call is let through."""

    transient = True


class GatewayProtocolError(GatewayError):
    """The gateway sent something the wire contract does not allow (bad frame, JSON nested too
    deep, a body of the wrong shape); names the offending frame, never its content."""

    transient = True


class DownloadUrlRefusedError(GatewayProtocolError):
    """The gateway handed out a download URL the client will not fetch (scheme or host outside the
    region's domain and ``transcript_url_hosts``). Permanent until the allow-list changes."""

    transient = False
    fix = "add the host to transcript_url_hosts if it is the platform's storage"


class AnswerTooLargeError(GatewayError):
    """The answer outgrew its bound (tokens, bytes or one frame) while streaming; the stream was
    closed. Not retried: another attempt would pay for another oversized answer."""

    fix = "raise max_tokens or answer_token_margin / answer_bytes_per_token if the answer is legitimate"


class StreamTruncatedError(_RetriedByClient):
    """The stream ended before any ``finish_reason``: the answer is incomplete, never a result."""
