"""Turning a refused HTTP answer into a typed error.

REST calls, SSE streams, OAuth and refused WebSocket upgrades all answer failures the same way
(status, ``Retry-After``, ``inin-ratelimit-reset``, an error body), so one function reads them.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from email.utils import parsedate_to_datetime

from .errors import (
    GatewayAuthError,
    GatewayBadRequestError,
    GatewayError,
    GatewayPermissionError,
    GatewayRateLimitError,
    GatewayUnavailableError,
)

CORRELATION_HEADER = "ININ-Correlation-Id"


def parse_retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait: ``Retry-After`` (delta-seconds or HTTP-date) wins over ``inin-ratelimit-reset``."""
    value = headers.get("retry-after")
    if value:
        value = value.strip()
        try:
            return max(0.0, float(value))
        except ValueError:
            try:
                return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
            except (TypeError, ValueError):
                pass
    reset = headers.get("inin-ratelimit-reset")
    if reset:
        try:
            return max(0.0, float(reset))
        except ValueError:
            return None
    return None


def _body_fields(body: bytes) -> tuple[str, str]:
    """(code, message) from a platform or OAuth error body; empty strings when unreadable."""
    try:
        data = json.loads(body) if body else {}
    except ValueError:
        return "", ""
    if not isinstance(data, dict):
        return "", ""
    code = str(data.get("code") or data.get("error") or "")
    message = str(data.get("message") or data.get("error_description") or data.get("description") or "")
    return code, message[:300]


def error_from_response(
    status: int, headers: Mapping[str, str], body: bytes, *, what: str
) -> GatewayError:
    """The typed error for a non-2xx answer to ``what`` (e.g. ``"POST /api/v2/.../embeddings"``)."""
    code, message = _body_fields(body)
    correlation_id = headers.get(CORRELATION_HEADER.lower()) or headers.get(CORRELATION_HEADER)
    detail = f"{what} answered {status}" + (f" {code}" if code else "") + (f": {message}" if message else "")
    if correlation_id:
        detail += f" (correlation id {correlation_id})"
    common = {"status_code": status, "code": code or None, "correlation_id": correlation_id}
    if status == 401:
        return GatewayAuthError(detail, **common)
    if status == 403:
        return GatewayPermissionError(
            detail + "; the OAuth client lacks the scope or permission this endpoint needs", **common
        )
    if status == 429:
        return GatewayRateLimitError(detail, retry_after=parse_retry_after(headers), **common)
    if status >= 500:
        return GatewayUnavailableError(detail, retry_after=parse_retry_after(headers), **common)
    return GatewayBadRequestError(detail, **common)
