"""What a hostile or dead gateway can do to the client, against the emulator over real sockets:
PII in error text, a dead host, a wrong secret, endless and oversized answers, nested JSON."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
import traceback
from pathlib import Path

import pytest
from test_client import USER, make_config

from airflow_provider_genesys_llm.client import (
    AnswerTooLargeError,
    GatewayAuthError,
    GatewayBadRequestError,
    GatewayCircuitOpenError,
    GatewayClient,
    GatewayConfig,
    GatewayConnectionError,
    GatewayError,
    GatewayPermissionError,
    GatewayProtocolError,
    GatewayRateLimitError,
    GatewayUnavailableError,
)
from airflow_provider_genesys_llm.client.auth import TOKEN_CACHE
from airflow_provider_genesys_llm.client.transcripts import TranscriptSource

CARD = "4111 1111 1111 1111"
EMAIL = "jane.doe@example.com"
PII_TEXT = f"customer {EMAIL} paid with card {CARD}"
MIB = 1 << 20


@pytest.fixture(autouse=True)
def cold_token_cache():
    TOKEN_CACHE.clear()
    yield
    TOKEN_CACHE.clear()


def chain(exc: BaseException | None) -> list[BaseException]:
    """``exc`` and every exception reachable through ``__cause__`` and ``__context__``."""
    seen: list[BaseException] = []
    pending = [exc]
    while pending:
        current = pending.pop()
        if current is None or any(current is old for old in seen):
            continue
        seen.append(current)
        pending += [current.__cause__, current.__context__]
    return seen


def assert_no_pii(exc: BaseException) -> None:
    rendered = "".join(traceback.format_exception(exc))
    for item in chain(exc):
        for text in (str(item), repr(item)):
            for value in (CARD, EMAIL, CARD.replace(" ", "")):
                assert value not in text, f"{type(item).__name__} leaks {value!r}"
    assert CARD not in rendered and EMAIL not in rendered
    assert exc.__cause__ is None and exc.__context__ is None


# --- error text hygiene -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("endpoint", "status", "expected", "call"),
    [
        ("oauth", 400, GatewayAuthError, "sse"),
        ("oauth", 503, GatewayUnavailableError, "sse"),
        ("ws", 403, GatewayPermissionError, "websocket"),
        ("ws", 429, GatewayRateLimitError, "websocket"),
        ("sse", 400, GatewayBadRequestError, "sse"),
        ("sse", 500, GatewayUnavailableError, "sse"),
        ("embeddings", 400, GatewayBadRequestError, "embed"),
        ("status", 503, GatewayUnavailableError, "status"),
        ("analytics_availability", 400, GatewayBadRequestError, "availability"),
    ],
)
async def test_http_error_text_stays_out_of_messages(emulator, endpoint, status, expected, call):
    emulator.add_fault(
        endpoint=endpoint,
        kind="http_error",
        status=status,
        count=None,
        retry_after="0",
        message=PII_TEXT,
        code=CARD.replace(" ", ""),
        headers={"ININ-Correlation-Id": EMAIL},
    )
    async with GatewayClient(make_config(emulator, max_attempts=2)) as client:
        with pytest.raises(expected) as caught:
            await run(client, call)
    error = caught.value
    assert_no_pii(error)
    assert str(status) in str(error)
    assert error.server_message is not None and CARD in error.server_message  # kept for masking callers
    assert len(error.server_message) <= 500
    assert error.code is None and error.correlation_id is None  # neither looked like a code / UUID


@pytest.mark.parametrize(
    ("listed", "shown"),
    [
        ("[ai:llm:gateway:use]", "ai:llm:gateway:use"),
        ("[ai:llm:gateway:use, analytics:conversationDetail:view]", "analytics:conversationDetail:view"),
        (f"[ai:llm:gateway:use, {EMAIL}]", None),
        ("[card:4111111111111111]", None),
    ],
)
async def test_a_403_names_the_missing_permission_only_when_it_reads_as_one(emulator, listed, shown):
    message = f"You are missing the following permission(s): {listed}"
    emulator.add_fault(endpoint="status", kind="http_error", status=403, message=message)
    async with GatewayClient(make_config(emulator)) as client:
        with pytest.raises(GatewayPermissionError) as caught:
            await client.status()
    assert_no_pii(caught.value)
    assert "4111111111111111" not in str(caught.value)
    if shown:
        assert shown in str(caught.value)
    else:
        assert "scope or permission this endpoint needs" in str(caught.value)


async def run(client: GatewayClient, call: str) -> object:
    if call in ("websocket", "sse"):
        return await client.complete(client.request(messages=USER, transport=call))
    if call == "embed":
        return await client.embed(["hello"])
    if call == "status":
        return await client.status()
    return await TranscriptSource(client).availability()


@pytest.mark.parametrize(
    ("endpoint", "transport", "code", "expected"),
    [
        ("ws", "websocket", "invalid_request", GatewayBadRequestError),
        ("ws", "websocket", "model_overloaded", GatewayRateLimitError),
        ("sse", "sse", "invalid_request", GatewayBadRequestError),
        ("sse", "sse", "internal", GatewayUnavailableError),
    ],
)
async def test_stream_error_text_stays_out_of_messages(emulator, endpoint, transport, code, expected):
    emulator.add_fault(
        endpoint=endpoint, kind="stream_error", code=code, message=PII_TEXT, after_tokens=2, retry_after=0, count=None
    )
    async with GatewayClient(make_config(emulator, max_attempts=2)) as client:
        with pytest.raises(expected) as caught:
            await client.complete(client.request(messages=USER, transport=transport))
    assert_no_pii(caught.value)
    assert code in str(caught.value) and EMAIL in (caught.value.server_message or "")


async def test_init_rejection_text_stays_out_of_messages(emulator):
    emulator.add_fault(endpoint="ws", kind="reject_init", code="unsupported_protocol", message=PII_TEXT)
    async with GatewayClient(make_config(emulator)) as client:
        with pytest.raises(GatewayBadRequestError) as caught:
            await client.complete(client.request(messages=USER))
    assert_no_pii(caught.value)


@pytest.mark.parametrize("transport", ["websocket", "sse"])
@pytest.mark.parametrize("kind", ["malformed_frame", "missing_key"])
async def test_bad_frames_chain_no_parser_error(emulator, transport, kind):
    """A parser's error quotes the frame, which is model output: it must not ride along."""
    emulator.add_fault(endpoint="ws" if transport == "websocket" else "sse", kind=kind, after_tokens=2)
    async with GatewayClient(make_config(emulator)) as client:
        with pytest.raises(GatewayProtocolError) as caught:
            await client.complete(client.request(messages=USER, transport=transport))
    assert chain(caught.value) == [caught.value]
    assert "input_value" not in "".join(traceback.format_exception(caught.value))


def test_every_error_class_says_whether_a_retry_helps():
    import airflow_provider_genesys_llm.client as package

    classes = [getattr(package, name) for name in package.__all__ if name.endswith("Error")]
    assert GatewayCircuitOpenError in classes and AnswerTooLargeError in classes
    for cls in classes:
        assert isinstance(cls.retryable, bool) and isinstance(cls.transient, bool)
        assert not cls.retryable or cls.transient, cls  # what the client retries, a task retry may fix
        assert cls.advice()
    assert not GatewayAuthError.transient and not AnswerTooLargeError.retryable
    assert GatewayCircuitOpenError.transient and not GatewayCircuitOpenError.retryable


# --- fail fast ------------------------------------------------------------------------------


def free_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


async def thirty_completions(client: GatewayClient, transport: str) -> tuple[list[object], float]:
    """30 concurrent completions, bounded by 30 s: their outcomes and the seconds they took."""
    started = time.monotonic()
    outcomes = await asyncio.wait_for(
        asyncio.gather(
            *(client.complete(client.request(messages=USER, transport=transport)) for _ in range(30)),
            return_exceptions=True,
        ),
        timeout=30,
    )
    return outcomes, time.monotonic() - started


@pytest.mark.parametrize("transport", ["websocket", "sse"])
async def test_gateway_down_fails_thirty_completions_fast_with_few_token_requests(transport):
    port = free_port()
    config = GatewayConfig(
        client_id="emulator-client",
        client_secret="emulator-secret",
        api_base_url=f"http://127.0.0.1:{port}",
        login_base_url=f"http://127.0.0.1:{port}",
        stream_base_url=f"ws://127.0.0.1:{port}",
        max_concurrency=32,
    )
    async with GatewayClient(config) as client:
        outcomes, elapsed = await thirty_completions(client, transport)
        assert all(isinstance(o, (GatewayConnectionError, GatewayCircuitOpenError)) for o in outcomes), outcomes
        assert any(isinstance(o, GatewayCircuitOpenError) for o in outcomes)
        assert client.token_requests <= 3
        assert client.breaker.state == "open"
        late = time.monotonic()
        with pytest.raises(GatewayCircuitOpenError) as caught:
            await client.status()
        assert time.monotonic() - late < 0.1 and client.token_requests <= 3
        assert 0 < caught.value.retry_after <= config.breaker_cooldown_seconds
    requests = client.token_requests
    print(f"gateway down ({transport}): 30 completions failed in {elapsed:.2f}s, token requests {requests}")
    assert elapsed < 30


@pytest.mark.parametrize("transport", ["websocket", "sse"])
async def test_wrong_secret_fails_thirty_completions_with_one_login(emulator, transport):
    config = make_config(emulator, client_secret="wrong-secret", backoff_initial_seconds=0.5, backoff_max_seconds=30.0)
    async with GatewayClient(config) as client:
        outcomes, elapsed = await thirty_completions(client, transport)
        assert all(isinstance(o, GatewayAuthError) for o in outcomes), outcomes
        with pytest.raises(GatewayAuthError):
            await client.embed(["later call"])
    counters = emulator.counters()
    print(f"wrong secret ({transport}): 30 completions failed in {elapsed:.2f}s, oauth requests {counters['oauth']}")
    assert counters["oauth"] <= 3 and counters["oauth"] == client.token_requests
    assert counters["ws_upgrades"] == counters["sse"] == counters["embeddings"] == 0
    assert elapsed < 30
    assert "wrong-secret" not in str(outcomes[0]) and not GatewayAuthError.transient


async def test_token_retries_are_not_nested_in_call_retries(emulator):
    emulator.add_fault(endpoint="oauth", kind="http_error", status=503, retry_after="0", count=None)
    config = make_config(emulator, max_attempts=4)
    async with GatewayClient(config) as client:
        with pytest.raises(GatewayUnavailableError):
            await client.complete(client.request(messages=USER))
    assert emulator.counters()["oauth"] == 4  # one ladder: 4, not 4 x 4


async def test_breaker_opens_then_lets_one_probe_through_and_closes(emulator):
    config = make_config(emulator, breaker_failure_threshold=2, breaker_cooldown_seconds=0.3, max_attempts=1)
    async with GatewayClient(config) as client:
        emulator.add_fault(endpoint="sse", kind="http_error", status=401, count=None)
        for _ in range(2):
            with pytest.raises(GatewayAuthError):
                await client.complete(client.request(messages=USER, transport="sse"))
        sent = emulator.counters()["sse"]
        with pytest.raises(GatewayCircuitOpenError, match="2 consecutive"):
            await client.complete(client.request(messages=USER, transport="sse"))
        assert emulator.counters()["sse"] == sent  # refused without a request
        emulator.reset()
        await asyncio.sleep(0.35)
        emulator.configure(token_delay=0.02)  # the probe takes a while; the others arrive meanwhile
        outcomes = await asyncio.gather(
            *(client.complete(client.request(messages=USER, transport="sse")) for _ in range(5)),
            return_exceptions=True,
        )
        assert sum(not isinstance(o, BaseException) for o in outcomes) == 1
        assert sum(isinstance(o, GatewayCircuitOpenError) for o in outcomes) == 4
        assert emulator.counters()["sse"] == 1
        assert client.breaker.state == "closed"
        await client.complete(client.request(messages=USER, transport="sse"))


# --- bounds ---------------------------------------------------------------------------------


def rss_peak_reset() -> int:
    """Reset the process's peak RSS (VmHWM) and return the current RSS in bytes."""
    Path("/proc/self/clear_refs").write_text("5")
    return _status_kib("VmRSS") * 1024


def rss_peak() -> int:
    return _status_kib("VmHWM") * 1024


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"{field} missing from /proc/self/status")


@pytest.mark.parametrize(
    ("transport", "token_bytes", "stream"),
    [("websocket", 1, True), ("websocket", 4096, True), ("sse", 1, True), ("sse", 4096, True), ("sse", 4096, False)],
)
async def test_endless_answer_ends_typed_with_flat_memory(emulator, transport, token_bytes, stream):
    endpoint = "ws" if transport == "websocket" else "sse"
    emulator.add_fault(endpoint=endpoint, kind="endless_answer", token_bytes=token_bytes, count=None)
    async with GatewayClient(make_config(emulator)) as client:
        request = client.request(messages=USER, transport=transport, max_tokens=4096)
        before = rss_peak_reset()
        started = time.monotonic()
        with pytest.raises(AnswerTooLargeError) as caught:
            await asyncio.wait_for(client.complete(request, stream=stream), timeout=60)
        elapsed = time.monotonic() - started
        growth = rss_peak() - before
    print(
        f"endless answer {transport} token_bytes={token_bytes} stream={stream}: {type(caught.value).__name__} "
        f"after {elapsed:.2f}s, peak RSS growth {growth / MIB:.1f} MiB"
    )
    assert growth < 64 * MIB
    assert caught.value.attempts == 1  # not retried: another attempt would pay again
    assert emulator.counters()["ws_requests" if endpoint == "ws" else "sse"] == 1


@pytest.mark.parametrize("transport", ["websocket", "sse"])
async def test_one_oversized_frame_is_refused_typed(emulator, transport):
    endpoint = "ws" if transport == "websocket" else "sse"
    emulator.add_fault(endpoint=endpoint, kind="huge_frame", bytes=8 * MIB, after_tokens=2)
    async with GatewayClient(make_config(emulator, max_frame_bytes=MIB)) as client:
        before = rss_peak_reset()
        with pytest.raises(AnswerTooLargeError, match="max_frame_bytes"):
            await asyncio.wait_for(client.complete(client.request(messages=USER, transport=transport)), timeout=30)
        assert rss_peak() - before < 64 * MIB


@pytest.mark.parametrize(
    ("endpoint", "status", "expected", "call"),
    [
        ("oauth", 200, GatewayProtocolError, "sse"),
        ("oauth", 401, GatewayAuthError, "sse"),
        ("oauth", 503, GatewayUnavailableError, "sse"),
        ("ws", 503, GatewayUnavailableError, "websocket"),
        ("ws", 403, GatewayPermissionError, "websocket"),
        ("sse", 200, GatewayProtocolError, "sse"),
        ("sse", 500, GatewayUnavailableError, "sse"),
        ("embeddings", 200, GatewayProtocolError, "embed"),
        ("embeddings", 429, GatewayRateLimitError, "embed"),
        ("status", 200, GatewayProtocolError, "status"),
        ("analytics_availability", 200, GatewayProtocolError, "availability"),
    ],
)
async def test_nested_json_bodies_give_typed_errors(emulator, endpoint, status, expected, call):
    emulator.add_fault(endpoint=endpoint, kind="nested_json", status=status, depth=20_000, count=None)
    async with GatewayClient(make_config(emulator, max_attempts=1)) as client:
        with pytest.raises(expected) as caught:
            await asyncio.wait_for(run(client, call), timeout=30)
    assert chain(caught.value) == [caught.value]
    if expected is GatewayProtocolError:
        assert "nested too deeply" in str(caught.value)


@pytest.mark.parametrize("transport", ["websocket", "sse"])
@pytest.mark.parametrize("as_error", [False, True])
async def test_nested_json_frames_give_protocol_errors(emulator, transport, as_error):
    endpoint = "ws" if transport == "websocket" else "sse"
    emulator.add_fault(endpoint=endpoint, kind="nested_frame", depth=200_000, error=as_error, after_tokens=3)
    async with GatewayClient(make_config(emulator)) as client:
        with pytest.raises(GatewayProtocolError) as caught:
            await asyncio.wait_for(client.complete(client.request(messages=USER, transport=transport)), timeout=30)
    assert chain(caught.value) == [caught.value]
    assert "nested too deeply" in str(caught.value) or "not a JSON object" in str(caught.value)


async def test_errors_survive_pickling_with_their_attributes(emulator):
    """Airflow ships exceptions between processes; a keyword-only attribute must not break that."""
    import pickle

    error = GatewayRateLimitError("x answered 429", retry_after=2.0, status_code=429, server_message=PII_TEXT)
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.retry_after, copy.status_code, copy.server_message, str(copy)) == (2.0, 429, PII_TEXT, str(error))
    assert isinstance(copy, GatewayError)


async def test_close_reason_text_stays_out_of_messages(emulator):
    """A WebSocket close reason is gateway free text too; a raw server sends one with PII."""
    from websockets.asyncio.server import ServerConnection, serve

    async def gateway(connection: ServerConnection) -> None:
        await connection.recv()  # init_stream
        await connection.send('{"status": "stream_ready", "session_id": "s1"}')
        await connection.recv()  # the request
        await connection.send('{"token": "Hello", "finish_reason": null, "usage": null, "sequence": 0}')
        await connection.close(1011, PII_TEXT[:120])

    async with serve(gateway, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        config = make_config(emulator, stream_base_url=f"ws://127.0.0.1:{port}", max_attempts=2)
        async with GatewayClient(config) as client:
            with pytest.raises(GatewayUnavailableError, match="close code 1011") as caught:
                await client.complete(client.request(messages=USER))
    assert_no_pii(caught.value)
    assert EMAIL in (caught.value.server_message or "")


# --- analytics webhook ------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["dead port", "refusing route"])
async def test_analytics_webhook_failure_returns_false_and_logs_no_url(emulator, caplog, where):
    """The webhook never fails a pipeline, and its URL (which may carry a token) never reaches a log:
    a dead host goes through the client's one httpx-error mapping, a refusal is its HTTP status."""
    base = f"http://127.0.0.1:{free_port()}" if where == "dead port" else emulator.base_url
    config = make_config(emulator, analytics_webhook_url=f"{base}/hook-s3cret")
    async with GatewayClient(config) as client:
        with caplog.at_level(logging.WARNING, logger="airflow_provider_genesys_llm.client.client"):
            delivered = await asyncio.wait_for(client.publish_analytics({"event": "probe"}), timeout=30)
    assert delivered is False
    expected = "POST analytics webhook failed: ConnectError" if where == "dead port" else "answered HTTP 404"
    assert "failed after 3 attempts" in caplog.text and expected in caplog.text, caplog.text
    assert "s3cret" not in caplog.text and "127.0.0.1" not in caplog.text
