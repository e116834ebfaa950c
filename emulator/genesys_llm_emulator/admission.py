"""The gate every API request passes (REST, SSE and WebSocket upgrade alike).

Counting, injected HTTP errors, bearer-token authentication, scope checks and rate limiting
happen here once, in the same order for every endpoint, and produce either the headers the
answer must carry or the refusal to send instead (for WebSockets, before the upgrade).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from starlette.requests import HTTPConnection
from starlette.responses import Response

from .faults import FaultRule, Phase
from .responses import (
    CORRELATION_HEADER,
    new_correlation_id,
    oauth_error,
    openai_error,
    platform_error,
    rate_limit_headers,
    retry_after_value,
)
from .state import EmulatorState, IssuedToken, RateLimitStatus

# The counter of an endpoint, where its name differs from the endpoint's fault-rule name.
_COUNTER_OF_ENDPOINT = {"ws": "ws_upgrades"}
_STATUSES_WITH_RETRY_AFTER = (429, 503)
DEFAULT_RETRY_AFTER = "1"


@dataclass(frozen=True)
class Admission:
    """The outcome of the gate: the answer's headers, and a refusal when the request is turned away."""

    correlation_id: str
    headers: dict[str, str]
    rate: RateLimitStatus
    token: IssuedToken | None = None
    refusal: Response | None = None


def bearer_token(authorization: str | None) -> str | None:
    """The token of an `Authorization: Bearer T` header, None for anything else."""
    scheme, _, value = (authorization or "").partition(" ")
    return (value.strip() or None) if scheme.lower() == "bearer" else None


def admit(connection: HTTPConnection, state: EmulatorState, endpoint: str, scope: str | None) -> Admission:
    """Count the request, then refuse it for an injected error, a bad token, a missing scope or
    an exceeded rate limit, in that order; `scope=None` accepts any caller (the OpenAI route)."""
    state.counters.count_request(_COUNTER_OF_ENDPOINT.get(endpoint, endpoint))
    correlation_id = new_correlation_id()
    bearer = bearer_token(connection.headers.get("authorization"))
    rate = state.note_request(bearer or "")
    headers = {CORRELATION_HEADER: correlation_id, **rate_limit_headers(rate)}

    def refused(response: Response) -> Admission:
        return Admission(correlation_id, headers, rate, refusal=response)

    fault = state.draw_fault(endpoint, Phase.REQUEST)
    if fault is not None:
        return refused(injected_http_error(fault, endpoint, correlation_id, headers, rate.allowed))
    if scope is None:
        return Admission(correlation_id, headers, rate)
    token = state.authenticate(bearer)
    if token is None:
        return refused(platform_error(401, "Invalid login credentials.", correlation_id, headers))
    if scope not in token.scopes:
        message = f"Unable to perform the requested action. You are missing the following permission(s): [{scope}]"
        return refused(platform_error(403, message, correlation_id, headers))
    if state.config.enforce_rate_limit and rate.count > rate.allowed:
        return refused(
            platform_error(
                429,
                "Rate limit exceeded the maximum.",
                correlation_id,
                headers,
                retry_after=str(rate.reset_seconds),
                limit=rate.allowed,
            )
        )
    return Admission(correlation_id, headers, rate, token=token)


def injected_http_error(
    fault: FaultRule, endpoint: str, correlation_id: str, headers: Mapping[str, str], rate_limit: int
) -> Response:
    """The answer of an `http_error` fault, in the error shape of the endpoint it fired on (or,
    for `nested_json`, a body nested too deeply for a recursive parser)."""
    params = fault.params
    status: int = params["status"]
    if fault.kind == "nested_json":
        depth = params["depth"]
        body = '{"message":' + "[" * depth + "]" * depth + "}"
        return Response(body, status_code=status, headers=dict(headers), media_type="application/json")
    headers = dict(headers)
    if params["ratelimit_reset"] is not None:
        headers["inin-ratelimit-reset"] = str(params["ratelimit_reset"])
    headers.update(params["headers"])
    retry_after = None
    if not params["omit_retry_after"]:
        if params["retry_after"] is not None:
            retry_after = retry_after_value(params["retry_after"])
        elif status in _STATUSES_WITH_RETRY_AFTER:
            retry_after = DEFAULT_RETRY_AFTER
    message = params["message"] or f"injected HTTP {status} (emulator fault)"
    if endpoint == "oauth":
        return oauth_error(status, params["code"], message, headers, retry_after=retry_after)
    if endpoint == "openai":
        return openai_error(status, message, headers, code=params["code"], retry_after=retry_after)
    limit = rate_limit if status == 429 else None
    return platform_error(
        status, message, correlation_id, headers, code=params["code"], retry_after=retry_after, limit=limit
    )
