"""OAuth2 client credentials with a process-wide token cache.

Tokens are cached per (login URL, client id, scopes) for the whole process, so every hook and
thread of a worker reuses one token instead of stampeding the token endpoint. Within one event
loop a lock makes refreshes single-flight: a hundred streams that find the cache cold or stale
wait for one token request.
"""

from __future__ import annotations

import asyncio
import base64
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx

from .config import GatewayConfig
from .errors import GatewayAuthError, GatewayConnectionError, GatewayProtocolError, GatewayTimeoutError
from .responses import error_from_response
from .retry import retrying

CacheKey = tuple[str, str, tuple[str, ...]]


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
        self._lock = asyncio.Lock()
        self.requests_made = 0

    def _usable(self) -> AccessToken | None:
        token = TOKEN_CACHE.get(self._key)
        if token is not None and time.monotonic() < token.refresh_at:
            return token
        return None

    async def token(self, *, stale: str | None = None) -> str:
        """A valid token; with ``stale``, one different from it (the API refused ``stale`` with 401)."""
        cached = self._usable()
        if cached is not None and cached.value != stale:
            return cached.value
        async with self._lock:
            cached = self._usable()
            if cached is not None and cached.value != stale:
                return cached.value
            fresh = await self._fetch()
            TOKEN_CACHE.put(self._key, fresh)
            return fresh.value

    async def _fetch(self) -> AccessToken:
        async for attempt in retrying(self._config):
            with attempt:
                return await self._request_token()
        raise AssertionError("unreachable: tenacity reraises the last error")

    async def _request_token(self) -> AccessToken:
        config = self._config
        credentials = f"{config.client_id}:{config.client_secret.get_secret_value()}".encode()
        url = config.login_url + config.paths.token
        self.requests_made += 1
        try:
            response = await self._http.post(
                url,
                headers={"Authorization": "Basic " + base64.b64encode(credentials).decode("ascii")},
                data={"grant_type": "client_credentials", "scope": " ".join(config.scopes)},
            )
        except httpx.TimeoutException:
            raise GatewayTimeoutError(f"OAuth token request to {url} timed out") from None
        except httpx.TransportError as exc:
            raise GatewayConnectionError(f"OAuth token request to {url} failed: {type(exc).__name__}") from None
        if response.status_code != 200:
            error = error_from_response(
                response.status_code, response.headers, response.content, what=f"OAuth POST {url}"
            )
            if response.status_code in (400, 401):
                raise GatewayAuthError(
                    f"{error.message}; client id {config.client_id!r} was refused. A wrong region "
                    "or login_base_url also shows up as invalid_client.",
                    status_code=response.status_code,
                    code=error.code,
                ) from None
            raise error
        try:
            body = response.json()
            value = str(body["access_token"])
            token_type = str(body.get("token_type", "bearer"))
            expires_in = float(body["expires_in"])
        except (ValueError, KeyError, TypeError):
            raise GatewayProtocolError(
                f"OAuth answer from {url} lacks access_token or expires_in"
            ) from None
        if token_type.lower() != "bearer":
            raise GatewayProtocolError(f"OAuth answer has token_type {token_type!r}, expected bearer")
        if self._on_new_token is not None:
            self._on_new_token(value)
        now = time.monotonic()
        margin = refresh_margin(expires_in, config.token_refresh_margin_seconds)
        return AccessToken(value=value, expires_at=now + expires_in, refresh_at=now + expires_in - margin)
