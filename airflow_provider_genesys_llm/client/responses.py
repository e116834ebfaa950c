"""Turning a refused HTTP answer into a typed error.

REST calls, SSE streams, OAuth and refused WebSocket upgrades all answer failures the same way
(status, ``Retry-After``, ``inin-ratelimit-reset``, an error body), so one function reads them.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from email.utils import parsedate_to_datetime

from .errors import (
    ErrorDetails,
    GatewayAuthError,
    GatewayBadRequestError,
    GatewayError,
    GatewayPermissionError,
    GatewayRateLimitError,
    GatewayUnavailableError,
    safe_code,
    safe_correlation_id,
)
from .exchange import MAX_ERROR_BODY_BYTES
from .parsing import loads_or_none

CORRELATION_HEADER = "ININ-Correlation-Id"
#: The permission list of a platform 403 ("... missing the following permission(s): [a:b:c, d:e]").
_PERMISSION_LIST = re.compile(r"\[([^\]]{1,500})\]")
_PERMISSION = re.compile(r"[a-z][a-zA-Z_]*(?::[a-zA-Z_*]+){1,4}")


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
    """(code, free text) from a platform, OAuth or OpenAI error body; empty strings when unreadable
    (not JSON, nested too deeply, larger than ``MAX_ERROR_BODY_BYTES``)."""
    data = loads_or_none(body[:MAX_ERROR_BODY_BYTES])
    if isinstance(data, dict) and isinstance(data.get("error"), dict):
        data = data["error"]  # the OpenAI shape
    if not isinstance(data, dict):
        return "", ""
    code = data.get("code") or data.get("error") or ""
    parts = [data.get(key) for key in ("message", "error_description", "description", "messageParams")]
    message = " ".join(str(part) for part in parts if part)
    return (code if isinstance(code, str) else ""), message


def _missing_permissions(message: str) -> str | None:
    """The permission names a 403 lists, when each one reads as a permission (``ai:llm:gateway:use``):
    they say what to grant, and nothing shaped like that can be a person's data."""
    found = _PERMISSION_LIST.search(message)
    names = [name.strip() for name in found.group(1).split(",")] if found else []
    if names and all(_PERMISSION.fullmatch(name) for name in names):
        return ", ".join(names)
    return None


def error_from_response(status: int, headers: Mapping[str, str], body: bytes, *, what: str) -> GatewayError:
    """The typed error for a non-2xx answer to ``what`` (e.g. ``"POST /api/v2/.../embeddings"``).

    The status decides the class; the body's free text goes to ``server_message`` only, and its
    code and the correlation id reach the message only when they look like a code and a UUID.
    """
    raw_code, message = _body_fields(body)
    code = safe_code(raw_code)
    raw_correlation_id = headers.get(CORRELATION_HEADER.lower()) or headers.get(CORRELATION_HEADER)
    correlation_id = safe_correlation_id(raw_correlation_id)
    detail = f"{what} answered {status}" + (f" {code}" if code else "")
    if correlation_id:
        detail += f" (correlation id {correlation_id})"
    common: ErrorDetails = {
        "status_code": status,
        "code": code,
        "correlation_id": correlation_id,
        "server_message": message or None,
    }
    if status == 401:
        return GatewayAuthError(detail, **common)
    if status == 403:
        missing = _missing_permissions(message)
        return GatewayPermissionError(
            detail
            + "; the OAuth client lacks "
            + (f"the permission(s) {missing}" if missing else "the scope or permission this endpoint needs"),
            **common,
        )
    if status == 429:
        return GatewayRateLimitError(detail, retry_after=parse_retry_after(headers), **common)
    if status >= 500:
        return GatewayUnavailableError(detail, retry_after=parse_retry_after(headers), **common)
    return GatewayBadRequestError(detail, **common)
