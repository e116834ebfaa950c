"""One bounded HTTP exchange: a request and its whole body, within a deadline and a size.

``httpx`` times out per read, so a server that trickles an endless body keeps a plain
``request()`` (and its memory) growing forever. Token requests, REST calls and transcript
downloads go through ``exchange`` instead: the body is read up to a byte limit (error bodies up
to ``MAX_ERROR_BODY_BYTES``: the status already says what happened), the whole exchange gets a
deadline, redirects are never followed (a redirect must not carry a secret or token elsewhere),
and transport failures become the client's typed errors, which name ``what`` but never the URL's
query (pre-signed URLs are credentials). ``http_failures`` is that mapping, for every HTTP path
of the client (this one, the SSE transport and the analytics webhook).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import httpx

from .errors import GatewayConnectionError, GatewayProtocolError, GatewayTimeoutError

#: Error bodies are read up to this size; the rest is dropped.
MAX_ERROR_BODY_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class Answer:
    status_code: int
    headers: httpx.Headers
    content: bytes


@contextmanager
def http_failures(what: str, *, deadline: float | None = None) -> Iterator[None]:
    """httpx's failures (and the ``asyncio.timeout`` of ``deadline``) as the client's typed errors.

    The message names ``what`` and the failure's class, never httpx's own text: it quotes the URL,
    and a pre-signed or webhook URL is a credential. Timeouts and transport failures are retried by
    the client; an answer httpx could not read (bad encoding, a redirect loop) is a protocol error.
    """
    try:
        yield
    except (TimeoutError, httpx.TimeoutException) as exc:
        detail = f"deadline {deadline:g}s" if deadline is not None else type(exc).__name__
        raise GatewayTimeoutError(f"{what} timed out ({detail})") from None
    except httpx.TransportError as exc:
        raise GatewayConnectionError(f"{what} failed: {type(exc).__name__}") from None
    except httpx.HTTPError as exc:
        raise GatewayProtocolError(f"{what}: the answer could not be read ({type(exc).__name__})") from None


async def read_limited(response: httpx.Response, limit: int) -> tuple[bytes, bool]:
    """Up to ``limit`` bytes of a streamed response's body, and whether that was all of it."""
    parts: list[bytes] = []
    size = 0
    async for part in response.aiter_bytes():
        parts.append(part)
        size += len(part)
        if size > limit:
            return b"".join(parts)[:limit], False
    return b"".join(parts), True


async def exchange(
    http: httpx.AsyncClient, method: str, url: str, *, what: str, limit: int, deadline: float, **kwargs: Any
) -> Answer:
    """Send one request and read its body within ``deadline`` seconds and ``limit`` bytes."""
    with http_failures(what, deadline=deadline):
        async with asyncio.timeout(deadline):
            async with http.stream(method, url, follow_redirects=False, **kwargs) as response:
                error = response.status_code >= 300
                body, complete = await read_limited(response, MAX_ERROR_BODY_BYTES if error else limit)
                oversized = not complete and not error
    if oversized:
        raise GatewayProtocolError(f"{what}: the answer is larger than {limit} bytes (max_response_bytes for REST)")
    return Answer(response.status_code, response.headers, body)
