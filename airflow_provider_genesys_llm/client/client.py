"""``GatewayClient``: the one object that talks to the gateway.

It owns what must be shared to behave well under load: one HTTP connection pool, one token
provider, one WebSocket session pool, one concurrency limit, one rate limiter and one circuit
breaker. Everything a completion goes through (limits, breaker, auth, transport, timeouts, answer
bounds, retries) is wired here, in order, and nowhere else. Errors leave the client only through
``CompletionStream`` and ``call_api``, which strip their chained causes (see ``errors.detached``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Sequence
from contextlib import AsyncExitStack, aclosing, asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx
from tenacity import AsyncRetrying, retry_if_exception_type, stop_after_attempt, wait_exponential

from ..coordination.errors import CoordinationUnavailableError, SlotTimeoutError
from ..coordination.settings import Priority
from ..coordination.slots import Slot
from .auth import TokenProvider
from .breaker import CircuitBreaker
from .config import GatewayConfig
from .errors import (
    GatewayAuthError,
    GatewayError,
    GatewayProtocolError,
    GatewayRateLimitError,
    GatewayTimeoutError,
    GatewayUnavailableError,
    RequestValidationError,
    detached,
)
from .exchange import exchange, http_failures
from .limits import AnswerBound, RequestRateLimiter, build_request, expand_temperatures
from .models import (
    CompletionRequest,
    CompletionResult,
    EmbeddingResponse,
    GatewayStatus,
    Usage,
)
from .parsing import parse_model
from .responses import error_from_response
from .retry import retrying
from .transports.base import AttemptInfo, Transport
from .transports.sse import SSETransport
from .transports.websocket import WebSocketTransport
from .watchdog import watched

if TYPE_CHECKING:
    from ..coordination.gateway import GatewayCoordinator

log = logging.getLogger(__name__)

#: The embeddings endpoint takes at most this many inputs per call (protocol section 6).
MAX_EMBEDDING_INPUTS = 256


@dataclass(frozen=True, slots=True)
class TokenEvent:
    """Text from the gateway; ``attempt`` says which attempt produced it."""

    text: str
    attempt: int


@dataclass(frozen=True, slots=True)
class RestartEvent:
    """The previous attempt failed after producing text: discard what it gave you."""

    attempt: int
    reason: str


StreamEvent = TokenEvent | RestartEvent


@dataclass(slots=True)
class ClientStats:
    """Counters for benchmarks and metrics; they describe this client only."""

    requests_sent: int = 0
    retries: int = 0
    rate_limit_wait_s: float = 0.0

    def snapshot(self, client: GatewayClient) -> dict[str, float]:
        return {
            "requests_sent": self.requests_sent,
            "retries": self.retries,
            "rate_limit_wait_s": round(self.rate_limit_wait_s, 3),
            "token_requests": client.token_requests,
            "websocket_connections": client.websocket_connections,
            "breaker_trips": client.breaker.trips,
        }


class CompletionStream:
    """An async iterable of ``StreamEvent``; ``result`` is set once iteration has finished."""

    def __init__(self, client: GatewayClient, request: CompletionRequest, transport: Transport) -> None:
        self._client = client
        self._transport = transport
        self.request = request
        self.result: CompletionResult | None = None

    def __aiter__(self) -> AsyncIterator[StreamEvent]:
        return self._events()

    async def _events(self) -> AsyncIterator[StreamEvent]:
        client, request = self._client, self.request
        started = time.perf_counter()
        attempt_number = 0
        gave_text = False
        rate_wait = 0.0
        try:
            async for attempt in retrying(client.config):
                with attempt:
                    attempt_number += 1
                    if attempt_number > 1:
                        client.stats.retries += 1
                        if gave_text:
                            yield RestartEvent(attempt_number, "previous attempt failed mid-stream")
                    gave_text = False
                    info = AttemptInfo()
                    parts: list[str] = []
                    attempt_started = first_token_at = 0.0
                    # attempt_started is read after the loop: the final attempt's start, for tokens/s.
                    # aclosing: a consumer that stops early gives the attempt's slots back now, not at
                    # garbage collection (a fleet slot held by a dead generator would idle the quota)
                    async with aclosing(client._attempt(request, info, self._transport)) as frames:
                        async for text, attempt_started, wait in frames:  # noqa: B007
                            rate_wait += wait
                            if text:
                                if not first_token_at:
                                    first_token_at = time.perf_counter()
                                parts.append(text)
                                gave_text = True
                                yield TokenEvent(text, attempt_number)
        except GatewayError as exc:
            exc.attempts = attempt_number
            detached(exc)
            raise
        finished = time.perf_counter()
        usage = info.usage or Usage()
        duration = finished - attempt_started
        self.result = CompletionResult(
            text="".join(parts),
            finish_reason=info.finish_reason,  # transports set it before the stream ends
            usage=usage,
            request_id=request.request_id,
            correlation_id=info.correlation_id,
            response_id=info.response_id,
            model=request.model,
            transport=request.transport,
            temperature=request.temperature,
            prompt_id=request.prompt_id,
            attempts=attempt_number,
            connect_ms=round(info.connect_ms, 3),
            ttft_ms=round((first_token_at - started) * 1000.0, 3) if first_token_at else None,
            total_ms=round((finished - started) * 1000.0, 3),
            tokens_per_second=round(usage.completion_tokens / duration, 3) if duration > 0 else 0.0,
            rate_limit_wait_ms=round(rate_wait * 1000.0, 3),
        )

    async def chunks(self, size: int) -> AsyncIterator[StreamEvent]:
        """Tokens joined ``size`` at a time (tutorial 000's buffer); restarts pass through."""
        if size < 1:
            raise ValueError(f"chunk size must be at least 1, got {size}")
        buffer: list[str] = []
        attempt = 1
        async for event in self:
            if isinstance(event, RestartEvent):
                buffer.clear()
                attempt = event.attempt
                yield event
                continue
            buffer.append(event.text)
            if len(buffer) >= size:
                yield TokenEvent("".join(buffer), attempt)
                buffer.clear()
        if buffer:
            yield TokenEvent("".join(buffer), attempt)


class GatewayClient:
    """Async client for the Genesys Cloud LLM Gateway. Use one per process and event loop.

    With a ``gate`` (the fleet's ``GatewayCoordinator``), every completion attempt runs inside a
    fleet-wide slot of class ``priority`` and the gate's shared request bucket replaces this
    process's rate limiter; ``max_concurrency`` still caps this process's own streams. The client
    closes the gate with itself.
    """

    def __init__(
        self,
        config: GatewayConfig,
        *,
        on_new_token: Callable[[str], None] | None = None,
        gate: GatewayCoordinator | None = None,
        priority: Priority = "backfill",
    ) -> None:
        self.config = config
        self._gate = gate
        self.priority: Priority = priority
        self._http = httpx.AsyncClient(
            verify=config.verify_ssl,
            timeout=httpx.Timeout(
                connect=config.connect_timeout_seconds,
                read=config.idle_timeout_seconds,
                write=config.connect_timeout_seconds,
                pool=config.timeout_seconds,
            ),
            limits=httpx.Limits(max_connections=config.max_concurrency + 4),
            trust_env=False,
        )
        self._auth = TokenProvider(config, self._http, on_new_token)
        self._websocket = WebSocketTransport(config)
        self._transports: dict[str, Transport] = {
            "websocket": self._websocket,
            "sse": SSETransport(config, self._http),
        }
        self._sse_whole = SSETransport(config, self._http, stream=False)
        self._slots = asyncio.Semaphore(config.max_concurrency)
        self._rate = RequestRateLimiter(config.requests_per_minute)
        self.breaker = CircuitBreaker(config.breaker_failure_threshold, config.breaker_cooldown_seconds)
        self.stats = ClientStats()

    # --- lifecycle ------------------------------------------------------------------------

    async def __aenter__(self) -> GatewayClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._websocket.aclose()
        await self._http.aclose()
        if self._gate is not None:
            await self._gate.aclose()

    @property
    def gate(self) -> GatewayCoordinator | None:
        """The fleet-wide gate completions wait for, if the connection enabled coordination."""
        return self._gate

    @property
    def http(self) -> httpx.AsyncClient:
        """The shared HTTP pool, for plain downloads (pre-signed URLs) that need no bearer token."""
        return self._http

    @property
    def token_requests(self) -> int:
        return self._auth.requests_made

    @property
    def websocket_connections(self) -> int:
        return self._websocket.connections_opened

    # --- completions ----------------------------------------------------------------------

    def request(self, **fields: Any) -> CompletionRequest:
        """A validated request with the connection's defaults; raises before any network call."""
        return build_request(self.config, **fields)

    def requests_for_temperatures(self, temperatures: Sequence[float], **fields: Any) -> list[CompletionRequest]:
        return expand_temperatures(self.config, temperatures, **fields)

    def stream(self, request: CompletionRequest) -> CompletionStream:
        return CompletionStream(self, request, self._transports[request.transport])

    async def complete(self, request: CompletionRequest, *, stream: bool = True) -> CompletionResult:
        """Run one completion to its end; ``stream=False`` asks SSE for one JSON answer instead."""
        if not stream and request.transport != "sse":
            raise RequestValidationError("stream=False is only offered by transport 'sse'")
        transport = self._transports[request.transport] if stream else self._sse_whole
        completion = CompletionStream(self, request, transport)
        async for _ in completion:
            pass
        assert completion.result is not None
        return completion.result

    async def _attempt(
        self, request: CompletionRequest, info: AttemptInfo, transport: Transport
    ) -> AsyncGenerator[tuple[str, float, float]]:
        """One attempt: a concurrency slot (and a fleet slot with a gate), the breaker, a rate-limit
        slot, a token (refreshed once on 401), the frames within their bound.

        Per attempt, not per completion: the retry policy's sleeps between attempts hold no fleet slot.
        Yields (text, attempt start, seconds waited for the rate limiter or the fleet) per frame.
        """
        config = self.config
        async with self._slots, self._admission() as slot:
            self._auth.check_refused()
            with self.breaker.guard():
                waited = slot.waited_seconds if slot is not None else await self._rate.acquire()
                self.stats.rate_limit_wait_s += waited
                stale: str | None = None
                for refreshed in (False, True):
                    token = await self._auth.token(stale=stale)
                    started = time.perf_counter()
                    self.stats.requests_sent += 1
                    bound = AnswerBound(config, request)
                    watched_frames = watched(
                        transport.stream(request, token, info),
                        first_frame=config.connect_timeout_seconds + config.first_token_timeout_seconds,
                        idle=config.idle_timeout_seconds,
                        total=config.timeout_seconds,
                    )
                    try:
                        # aclosing: an answer over its bound closes the stream (and its session) now,
                        # not when the generator happens to be collected
                        async with aclosing(watched_frames) as frames:
                            async for text in frames:
                                bound.take(text)
                                yield text, started, waited
                                waited = 0.0
                        return
                    except GatewayAuthError:
                        if refreshed:
                            raise
                        stale = token
                    except (GatewayRateLimitError, GatewayUnavailableError) as exc:
                        if slot is not None:
                            _report(slot, exc)
                        raise

    @asynccontextmanager
    async def _admission(self) -> AsyncIterator[Slot | None]:
        """A fleet slot for one attempt (None without a gate); the gate's errors become the
        client's typed, retryable errors where the slot is entered, so callers see one error family."""
        if self._gate is None:
            yield None
            return
        async with AsyncExitStack() as stack:
            try:
                slot = await stack.enter_async_context(
                    self._gate.slot(self.priority, timeout=self.config.timeout_seconds)
                )
            except SlotTimeoutError as exc:
                raise GatewayTimeoutError(f"{exc} (the fleet's gateway quota is busy; a retry queues again)") from None
            except CoordinationUnavailableError as exc:
                raise GatewayUnavailableError(str(exc)) from None
            yield slot

    # --- REST endpoints -------------------------------------------------------------------

    async def call_api(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        params: dict[str, Any] | None = None,
        *,
        attempts: int | None = None,
    ) -> bytes:
        """One platform API call with the shared auth, limits, breaker and retry policy; returns the body.

        ``attempts`` overrides the connection's ``max_attempts`` for this call (``1``: no retry).
        """
        url = self.config.api_url + path
        try:
            async for attempt in retrying(self.config, attempts):
                with attempt:
                    async with self._slots:
                        self._auth.check_refused()
                        with self.breaker.guard():
                            self.stats.rate_limit_wait_s += await self._rate.acquire()
                            return await self._send(method, url, body, params)
        except GatewayError as exc:
            detached(exc)
            raise
        raise AssertionError("unreachable: tenacity reraises the last error")

    async def _send(self, method: str, url: str, body: dict[str, Any] | None, params: dict[str, Any] | None) -> bytes:
        """One request with a token, sent again once with a fresh token when the API answers 401."""
        stale: str | None = None
        for refreshed in (False, True):
            token = await self._auth.token(stale=stale)
            self.stats.requests_sent += 1
            response = await exchange(
                self._http,
                method,
                url,
                what=f"{method} {url}",
                limit=self.config.max_response_bytes,
                deadline=self.config.timeout_seconds,
                json=body,
                params=params,
                headers={"Authorization": f"Bearer {token}"},
            )
            if response.status_code == 401 and not refreshed:
                stale = token
                continue
            if response.status_code >= 300:
                raise error_from_response(
                    response.status_code, response.headers, response.content, what=f"{method} {url}"
                )
            return response.content
        raise AssertionError("unreachable: the second pass returns or raises")

    async def embed(self, texts: Sequence[str], *, model: str | None = None) -> list[list[float]]:
        """Embeddings in input order, in calls of at most 256 inputs."""
        if isinstance(texts, str):
            raise RequestValidationError("embed() takes a list of texts, not a single string")
        vectors: list[list[float]] = []
        for offset in range(0, len(texts), MAX_EMBEDDING_INPUTS):
            batch = list(texts[offset : offset + MAX_EMBEDDING_INPUTS])
            raw = await self.call_api(
                "POST", self.config.paths.embeddings, {"model": model or self.config.embedding_model, "input": batch}
            )
            answer = parse_model(EmbeddingResponse, raw, "embeddings answer")
            if len(answer.data) != len(batch):
                raise GatewayProtocolError(f"embeddings answer has {len(answer.data)} vectors for {len(batch)} inputs")
            vectors.extend(item.embedding for item in sorted(answer.data, key=lambda item: item.index))
        return vectors

    async def publish_analytics(self, payload: dict[str, Any]) -> bool:
        """POST ``payload`` to the connection's analytics webhook (tutorial 003).

        Short timeout, three tries, and it never raises: analytics must not fail a pipeline.
        Returns whether the webhook accepted it (False also when none is configured).
        """
        url = self.config.analytics_webhook_url
        if not url:
            return False
        try:
            async for attempt in AsyncRetrying(
                stop=stop_after_attempt(3),
                wait=wait_exponential(multiplier=0.2, max=2.0),
                retry=retry_if_exception_type(GatewayError),
                reraise=True,
            ):
                with attempt, http_failures("POST analytics webhook"):
                    response = await self._http.post(
                        url, json=payload, timeout=self.config.analytics_webhook_timeout_seconds
                    )
                    if response.status_code >= 300:
                        raise _WebhookRefused(f"analytics webhook answered HTTP {response.status_code}")
        except GatewayError as exc:  # its message never holds the URL, which may carry a token
            log.warning("analytics webhook failed after 3 attempts: %s", exc.message)
            return False
        return True

    async def status(self, *, attempts: int | None = None) -> GatewayStatus:
        """The gateway status (protocol section 7); ``attempts`` as for ``call_api``."""
        raw = await self.call_api("GET", self.config.paths.status, attempts=attempts)
        return parse_model(GatewayStatus, raw, "status answer")


class _WebhookRefused(GatewayError):
    """The analytics webhook answered with a non-2xx status (tried again, never raised to the caller)."""


def _report(slot: Slot, exc: GatewayRateLimitError | GatewayUnavailableError) -> None:
    """Tell the fleet what the gateway answered: a 429 halves the shared limit and pauses every
    worker until its Retry-After; an unavailable gateway that named a Retry-After pauses them only."""
    if isinstance(exc, GatewayRateLimitError):
        slot.report(status=429, retry_after=exc.retry_after)
    elif exc.retry_after is not None:
        slot.report(status=exc.status_code or 503, retry_after=exc.retry_after)
