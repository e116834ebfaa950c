"""Error answers in the three styles the emulator speaks, and the headers every answer carries.

Platform endpoints answer with the ErrorBody of section 3, the OAuth endpoint with the OAuth
error shape of section 2, the OpenAI-compatible route with OpenAI's `{"error": {...}}`. A client
maps failures by reading exactly these, so each shape is built in one place only.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from typing import Any

from starlette.responses import JSONResponse

from .state import RateLimitStatus

CORRELATION_HEADER = "ININ-Correlation-Id"

PLATFORM_CODES: dict[int, str] = {
    400: "bad.request",
    401: "bad.credentials",
    403: "missing.any.permissions",
    404: "not.found",
    408: "request.timeout",
    429: "too.many.requests",
    500: "internal.server.error",
    502: "bad.gateway",
    503: "service.unavailable",
    504: "gateway.timeout",
}
OAUTH_ERRORS: dict[int, str] = {
    400: "invalid_request",
    401: "invalid_client",
    403: "access_denied",
    429: "temporarily_unavailable",
    503: "temporarily_unavailable",
}
OPENAI_ERROR_TYPES: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    429: "rate_limit_error",
}


def new_correlation_id() -> str:
    return str(uuid.uuid4())


def rate_limit_headers(rate: RateLimitStatus) -> dict[str, str]:
    return {
        "inin-ratelimit-count": str(rate.count),
        "inin-ratelimit-allowed": str(rate.allowed),
        "inin-ratelimit-reset": str(rate.reset_seconds),
    }


def retry_after_value(seconds: float | int | str) -> str:
    """A Retry-After value: HTTP allows whole seconds or a date, so fractions round down."""
    return seconds if isinstance(seconds, str) else str(int(seconds))


def platform_error_body(
    status: int,
    message: str,
    correlation_id: str,
    *,
    code: str | None = None,
    retry_after: str | None = None,
    limit: int | None = None,
) -> dict[str, Any]:
    """Section 3's ErrorBody; a retry delay goes into the message the way the platform words it."""
    template = message if retry_after is None else f"{message} Retry the request in [{{retryAfter}}] seconds"
    body: dict[str, Any] = {
        "message": template if retry_after is None else template.replace("{retryAfter}", retry_after),
        "code": code or PLATFORM_CODES.get(status, "error"),
        "status": status,
        "contextId": correlation_id,
        "messageWithParams": template,
        "messageParams": {} if retry_after is None else {"retryAfter": retry_after},
        "details": [],
        "errors": [],
    }
    if limit is not None:
        body["limit"] = {"key": "client.credentials.token.rate.per.minute", "namespace": "platform.api", "value": limit}
    return body


def platform_error(
    status: int,
    message: str,
    correlation_id: str,
    headers: Mapping[str, str],
    *,
    code: str | None = None,
    retry_after: str | None = None,
    limit: int | None = None,
) -> JSONResponse:
    """A platform error answer; `Retry-After` is set from `retry_after` unless `headers` sets it."""
    body = platform_error_body(status, message, correlation_id, code=code, retry_after=retry_after, limit=limit)
    return JSONResponse(body, status_code=status, headers=_with_retry_after(headers, retry_after))


def oauth_error(
    status: int, error: str | None, description: str, headers: Mapping[str, str], *, retry_after: str | None = None
) -> JSONResponse:
    """Section 2's OAuth error shape (the login host does not use the platform ErrorBody)."""
    error = error or OAUTH_ERRORS.get(status, "server_error")
    body = {"error": error, "description": description, "error_description": description}
    return JSONResponse(body, status_code=status, headers=_with_retry_after(headers, retry_after))


def openai_error_body(status: int, message: str, code: str | None = None) -> dict[str, Any]:
    error_type = OPENAI_ERROR_TYPES.get(status, "server_error")
    return {"error": {"message": message, "type": error_type, "param": None, "code": code}}


def openai_error(
    status: int,
    message: str,
    headers: Mapping[str, str],
    *,
    code: str | None = None,
    retry_after: str | None = None,
) -> JSONResponse:
    """An OpenAI-style error answer for the `/v1` route."""
    body = openai_error_body(status, message, code)
    return JSONResponse(body, status_code=status, headers=_with_retry_after(headers, retry_after))


def _with_retry_after(headers: Mapping[str, str], retry_after: str | None) -> dict[str, str]:
    lowered = {name.lower() for name in headers}
    if retry_after is None or "retry-after" in lowered:
        return dict(headers)
    return {**headers, "Retry-After": retry_after}
