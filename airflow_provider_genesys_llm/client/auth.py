"""OAuth2 client credentials with a process-wide token cache.

Tokens are cached per (login URL, client id, scopes) for the whole process, so every hook and
thread of a worker reuses one token instead of stampeding the token endpoint. Within one event
loop refreshes are single-flight: a hundred streams that find the cache cold or stale wait for
one token request, and share its failure too (a dead login host costs one request, not a hundred).

A token request is never retried here: the call that needed the token retries as a whole, so
there is one bounded retry ladder per call instead of one nested inside another. A login the
OAuth server refuses (400/401/403: wrong secret, unknown client, bad scope) is final for this
provider: every later call fails at once with the same ``GatewayAuthError`` and no new request.
"""

from __future__ import annotations

import asyncio
import base64
import copy
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from .config import GatewayConfig
from .errors import GatewayAuthError, GatewayError, GatewayProtocolError
from .exchange import exchange
from .parsing import loads
from .responses import error_from_response

CacheKey = tuple[str, str, tuple[str, ...]]
#: A token answer is a few hundred bytes; anything near this is not one.
MAX_TOKEN_ANSWER_BYTES = 64 * 1024


@dataclass(frozen=True)
class AccessToken:
    value: str
    expires_at: float  # time.monotonic() seconds
    refresh_at: float

    def __repr__(self) -> str:  # never print the token itself
        return f"AccessToken(expires_at={self.expires_at:.0f})"


class _TokenCache:
    """Thread-safe map of cache key to token, shared by every client in the process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._tokens: dict[CacheKey, AccessToken] = {}

    def get(self, key: CacheKey) -> AccessToken | None:
        with self._lock:
            return self._tokens.get(key)

    def put(self, key: CacheKey, token: AccessToken) -> None:
        with self._lock:
            self._tokens[key] = token

    def clear(self) -> None:
        with self._lock:
            self._tokens.clear()


TOKEN_CACHE = _TokenCache()


def refresh_margin(expires_in: float, configured: float) -> float:
    """Refresh ahead by min(margin, a tenth of the lifetime): a 5-minute token is not refreshed on every call."""
    return min(configured, expires_in / 10.0)


class TokenProvider:
    """Hands out a valid bearer token for one client configuration."""

    def __init__(
        self,
        config: GatewayConfig,
        http: httpx.AsyncClient,
        on_new_token: Callable[[str], None] | None = None,
    ) -> None:
        self._config = config
        self._http = http
        self._on_new_token = on_new_token
        self._key: CacheKey = (config.login_url, config.client_id, tuple(sorted(config.scopes)))
        self._inflight: asyncio.Future[AccessToken] | None = None
        self._refused: GatewayError | None = None
        self.requests_made = 0

    def _usable(self) -> AccessToken | None:
        token = TOKEN_CACHE.get(self._key)
        if token is not None and time.monotonic() < token.refresh_at:
            return token
        return None

    def check_refused(self) -> None:
        """Raise the login refusal again, if the OAuth server refused this client: it is permanent,
        so it wins over anything transient (such as an open circuit breaker)."""
        if self._refused is not None:
            raise _fresh_copy(self._refused)

    async def token(self, *, stale: str | None = None) -> str:
        """A valid token; with ``stale``, one different from it (the API refused ``stale`` with 401)."""
        self.check_refused()
        cached = self._usable()
        if cached is not None and cached.value != stale:
            return cached.value
        if self._inflight is None:
            self._inflight = asyncio.ensure_future(self._fetch())
            self._inflight.add_done_callback(self._fetched)
        try:
            return (await asyncio.shield(self._inflight)).value
        except GatewayError as exc:
            failure = exc
        raise _fresh_copy(failure)

    def _fetched(self, done: asyncio.Future[AccessToken]) -> None:
        self._inflight = None
        if done.cancelled():
            return
        error = done.exception()
        if error is None:
            TOKEN_CACHE.put(self._key, done.result())
        elif isinstance(error, GatewayError) and not error.transient:
            self._refused = error

    async def _fetch(self) -> AccessToken:
        config = self._config
        credentials = f"{config.client_id}:{config.client_secret.get_secret_value()}".encode()
        url = config.token_url
        self.requests_made += 1
        response = await exchange(
            self._http,
            "POST",
            url,
            what=f"OAuth token request to {url}",
            limit=MAX_TOKEN_ANSWER_BYTES,
            deadline=config.connect_timeout_seconds + config.idle_timeout_seconds,
            headers={"Authorization": "Basic " + base64.b64encode(credentials).decode("ascii")},
            data={"grant_type": "client_credentials", "scope": " ".join(config.scopes)},
        )
        if response.status_code != 200:
            error = error_from_response(
                response.status_code, response.headers, response.content, what=f"OAuth POST {url}"
            )
            if response.status_code in (400, 401, 403):
                raise GatewayAuthError(
                    f"{error.message}; client id {config.client_id!r} was refused, and this client makes no "
                    "further token requests. A wrong region or login_base_url also shows up as invalid_client.",
                    status_code=response.status_code,
                    code=error.code,
                    correlation_id=error.correlation_id,
                    server_message=error.server_message,
                )
            raise error
        body = loads(response.content, f"OAuth answer from {url}")
        value = body.get("access_token") if isinstance(body, dict) else None
        expires_in = body.get("expires_in") if isinstance(body, dict) else None
        if (
            not isinstance(value, str)
            or not value
            or isinstance(expires_in, bool)  # an int to isinstance, and not a lifetime
            or not isinstance(expires_in, (int, float))
        ):
            raise GatewayProtocolError(f"OAuth answer from {url} lacks access_token or a numeric expires_in")
        token_type = body.get("token_type", "bearer")
        if not isinstance(token_type, str) or token_type.lower() != "bearer":
            raise GatewayProtocolError(
                "OAuth answer's token_type is not bearer",
                server_message=str(token_type),
            )
        if self._on_new_token is not None:
            self._on_new_token(value)
        now = time.monotonic()
        margin = refresh_margin(expires_in, config.token_refresh_margin_seconds)
        return AccessToken(value=value, expires_at=now + expires_in, refresh_at=now + expires_in - margin)


def _fresh_copy(error: GatewayError) -> GatewayError:
    """A copy per waiter: one exception object raised in many tasks would collect all their
    tracebacks and contexts."""
    clone = copy.copy(error)
    clone.__traceback__ = None
    clone.__context__ = None
    clone.__cause__ = None
    return clone
