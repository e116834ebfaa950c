"""Typed gateway errors.

Each class is a decision for the caller: retry later (rate limit, timeout, dropped stream),
fix credentials (auth), ask for a scope (permission), fix the request (validation), or report a
gateway bug (protocol). Messages name what is wrong and never carry secrets or tokens.
"""

from __future__ import annotations


class GatewayError(Exception):
    """Base of every error the client raises.

    ``retryable`` tells the retry policy whether another attempt may succeed;
    ``correlation_id`` is the gateway's ``ININ-Correlation-Id`` when an answer carried one.
    """

    retryable: bool = False
    #: Requests sent for the completion that ended in this error; set by the client.
    attempts: int | None = None

    def __init__(
        self,
        message: str,
        *,
        status_code: int | None = None,
        code: str | None = None,
        correlation_id: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status_code = status_code
        self.code = code
        self.correlation_id = correlation_id


class RequestValidationError(GatewayError, ValueError):
    """The request breaks a documented limit; it was never sent."""


class GatewayAuthError(GatewayError):
    """OAuth refused the client credentials, or the API refused the token after a refresh."""


class GatewayPermissionError(GatewayError):
    """The token lacks a scope or permission the endpoint needs (HTTP 403); never retried."""


class GatewayBadRequestError(GatewayError):
    """The gateway rejected the request as invalid (HTTP 400, ``invalid_request``); never retried."""


class GatewayRateLimitError(GatewayError):
    """HTTP 429, a ``rate_limited`` frame or an overloaded model; wait ``retry_after`` seconds."""

    retryable = True

    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs: object) -> None:
        super().__init__(message, **kwargs)  # type: ignore[arg-type]
        self.retry_after = retry_after


class GatewayUnavailableError(GatewayError):
    """A 5xx answer, an ``internal`` error frame or a session closed with 1001/1011."""

    retryable = True

    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs: object) -> None:
        super().__init__(message, **kwargs)  # type: ignore[arg-type]
        self.retry_after = retry_after


class GatewayConnectionError(GatewayError):
    """The connection failed or dropped before the answer was complete."""

    retryable = True


class GatewayTimeoutError(GatewayError):
    """Connect, handshake, first-token, idle or total timeout ran out."""

    retryable = True


class GatewayProtocolError(GatewayError):
    """The gateway sent something the wire contract does not allow; names the offending frame."""


class StreamTruncatedError(GatewayError):
    """The stream ended before any ``finish_reason``: the answer is incomplete, never a result."""

    retryable = True

