"""The gateway client against the emulator, over real sockets."""

from __future__ import annotations

import asyncio
import logging
import time
from email.utils import formatdate

import pytest

from airflow_provider_genesys_llm.client import (
    GatewayAuthError,
    GatewayBadRequestError,
    GatewayClient,
    GatewayConfig,
    GatewayPermissionError,
    GatewayProtocolError,
    GatewayTimeoutError,
    RequestValidationError,
    RestartEvent,
    StreamTruncatedError,
    TokenEvent,
)
from airflow_provider_genesys_llm.client.auth import TOKEN_CACHE, refresh_margin

USER = [{"role": "user", "content": "My card was charged twice for the same order, please refund one."}]


@pytest.fixture(autouse=True)
def cold_token_cache():
    TOKEN_CACHE.clear()
    yield
    TOKEN_CACHE.clear()


def make_config(emulator, **overrides) -> GatewayConfig:
    settings = dict(
        client_id="emulator-client",
        client_secret="emulator-secret",
        api_base_url=emulator.base_url,
        login_base_url=emulator.base_url,
        stream_base_url=emulator.ws_url,
        backoff_initial_seconds=0.01,
        backoff_max_seconds=0.05,
        max_concurrency=32,
        requests_per_minute=100_000,
    )
    settings.update(overrides)
    return GatewayConfig(**settings)


@pytest.fixture
async def client(emulator):
    async with GatewayClient(make_config(emulator)) as gateway:
        yield gateway


def count(emulator, name: str) -> int:
    return emulator.counters()[name]


@pytest.mark.parametrize("transport", ["websocket", "sse"])
async def test_completion_reports_text_usage_ids_and_timings(client, emulator, transport):
    result = await client.complete(client.request(messages=USER, transport=transport, max_tokens=256))
    assert result.text and result.finish_reason == "stop"
    assert result.usage.completion_tokens > 0
    assert result.usage.total_tokens == result.usage.prompt_tokens + result.usage.completion_tokens
    assert result.transport == transport and result.attempts == 1
    assert result.correlation_id and result.response_id
    assert result.ttft_ms is not None and 0 < result.ttft_ms <= result.total_ms
    assert result.tokens_per_second > 0
    assert emulator.counters()["request_ids"][-1]["request_id"] == result.request_id


async def test_same_request_gives_same_text_and_json_format_is_json(client):
    import json

    first = await client.complete(client.request(messages=USER, response_format="json"))
    second = await client.complete(client.request(messages=USER, response_format="json"))
    assert first.text == second.text
    assert isinstance(json.loads(first.text), dict)


async def test_tutorial_prompt_id_request_without_messages(client):
    result = await client.complete(
        client.request(prompt_id="prompt_cx_analysis_01", system="Analyze customer sentiment.", response_format="json")
    )
    assert result.finish_reason in ("stop", "length")


async def test_sequential_completions_reuse_one_websocket_session(client, emulator):
    for _ in range(5):
        await client.complete(client.request(messages=USER))
    assert client.websocket_connections == 1
    assert count(emulator, "ws_connections") == 1
    assert count(emulator, "ws_requests") == 5


async def test_hundred_concurrent_requests_on_cold_cache_make_one_token_request(emulator):
    async with GatewayClient(make_config(emulator, max_concurrency=100)) as gateway:
        results = await asyncio.gather(
            *(gateway.complete(gateway.request(messages=USER, transport="sse")) for _ in range(100))
        )
    assert len({r.request_id for r in results}) == 100
    assert count(emulator, "oauth") == 1
    assert gateway.token_requests == 1


async def test_retry_after_is_honoured_then_succeeds(client, emulator):
    emulator.add_fault(endpoint="ws", kind="http_error", status=429, retry_after="2")
    started = time.monotonic()
    result = await client.complete(client.request(messages=USER))
    assert time.monotonic() - started >= 2.0
    assert result.attempts == 2


async def test_retry_after_http_date_and_ratelimit_reset_fallback(client, emulator):
    emulator.add_fault(
        endpoint="sse", kind="http_error", status=503, retry_after=formatdate(time.time() + 2, usegmt=True)
    )
    emulator.add_fault(endpoint="sse", kind="http_error", status=429, omit_retry_after=True, ratelimit_reset=1)
    started = time.monotonic()
    result = await client.complete(client.request(messages=USER, transport="sse"))
    assert time.monotonic() - started >= 1.5  # HTTP-date has one-second resolution
    assert result.attempts == 3


@pytest.mark.parametrize("transport", ["websocket", "sse"])
async def test_stream_dropped_mid_way_is_retried_without_duplicated_text(client, emulator, transport):
    clean = await client.complete(client.request(messages=USER, transport=transport))
    emulator.add_fault(endpoint="ws" if transport == "websocket" else "sse", kind="close_mid_stream", after_tokens=5)
    stream = client.stream(client.request(messages=USER, transport=transport))
    events = [event async for event in stream]
    assert any(isinstance(e, RestartEvent) for e in events)
    assert stream.result is not None and stream.result.attempts == 2
    assert stream.result.text == clean.text
    kept = [e.text for e in events if isinstance(e, TokenEvent) and e.attempt == 2]
    assert "".join(kept) == clean.text


@pytest.mark.parametrize(
    ("kind", "transport", "names"),
    [
        ("malformed_frame", "websocket", "not valid JSON"),
        ("missing_key", "websocket", "usage"),
        ("bad_sequence", "websocket", "sequence"),
        ("malformed_frame", "sse", "not valid JSON"),
        ("missing_key", "sse", "choices"),
    ],
)
async def test_bad_frames_raise_protocol_error_naming_the_frame(client, emulator, kind, transport, names):
    endpoint = "ws" if transport == "websocket" else "sse"
    emulator.add_fault(endpoint=endpoint, kind=kind, after_tokens=3)
    with pytest.raises(GatewayProtocolError) as caught:
        await client.complete(client.request(messages=USER, transport=transport))
    assert ("frame 3" if transport == "websocket" else "event 4") in str(caught.value)  # SSE event 0 is the role chunk
    assert names in str(caught.value)
    assert count(emulator, "ws_requests" if endpoint == "ws" else "sse") == 1  # never retried


@pytest.mark.parametrize(
    ("fields", "names"),
    [
        ({"temperature": 2.5}, "temperature 2.5"),
        ({"temperature": 1.5, "transport": "sse"}, "temperature 1.5"),
        ({"max_tokens": 0}, "max_tokens 0"),
        ({"max_tokens": 5000}, "max_tokens 5000"),
        ({"messages": [{"role": "user", "content": "x" * 40_000}]}, "context window"),
        ({"messages": [{"role": "robot", "content": "hi"}]}, "role"),
        ({"messages": "summarise this"}, "not a string"),
        ({"messages": None}, "neither messages nor prompt_id"),
        ({"messages": None, "prompt_id": "p1", "transport": "sse"}, "needs messages"),
        ({"model": "genesys-llm-v2", "transport": "carrier-pigeon"}, "transport"),
    ],
)
async def test_section_8_violations_raise_before_any_request(client, emulator, fields, names):
    request_fields = {"messages": USER, **fields}
    with pytest.raises(RequestValidationError) as caught:
        client.request(**request_fields)
    assert names in str(caught.value)
    assert count(emulator, "total") == 0


async def test_model_limits_from_connection_apply(emulator):
    config = make_config(emulator, model_limits={"genesys-llm-v2": {"max_tokens": 100, "context_tokens": 50}})
    async with GatewayClient(config) as gateway:
        with pytest.raises(RequestValidationError, match="max_tokens 200 is outside 1..100"):
            gateway.request(messages=USER, max_tokens=200)
        with pytest.raises(RequestValidationError, match="50-token context window"):
            gateway.request(messages=[{"role": "user", "content": "y" * 400}], max_tokens=10)
    assert count(emulator, "total") == 0


@pytest.mark.parametrize("status", [403, 400])
async def test_403_and_400_are_not_retried(client, emulator, status):
    emulator.add_fault(endpoint="sse", kind="http_error", status=status, count=3)
    expected = GatewayPermissionError if status == 403 else GatewayBadRequestError
    with pytest.raises(expected):
        await client.complete(client.request(messages=USER, transport="sse"))
    assert count(emulator, "sse") == 1


async def test_missing_scope_is_a_permission_error(emulator):
    async with GatewayClient(make_config(emulator, scopes="ai:llm:gateway:use")) as gateway:
        with pytest.raises(GatewayPermissionError, match="scope"):
            await gateway.complete(gateway.request(messages=USER))
    assert count(emulator, "ws_upgrades") == 1


async def test_expired_token_is_refreshed_once_and_request_retried(client, emulator):
    await client.complete(client.request(messages=USER, transport="sse"))
    emulator.expire_tokens()
    result = await client.complete(client.request(messages=USER, transport="sse"))
    assert result.attempts == 1
    assert count(emulator, "oauth") == 2


async def test_persistent_401_fails_after_exactly_one_refresh(client, emulator):
    emulator.add_fault(endpoint="sse", kind="http_error", status=401, count=None)
    with pytest.raises(GatewayAuthError):
        await client.complete(client.request(messages=USER, transport="sse"))
    assert count(emulator, "sse") == 2
    assert count(emulator, "oauth") == 2


async def test_invalid_client_names_the_cause_but_not_the_secret(emulator):
    async with GatewayClient(make_config(emulator, client_secret="wrong-secret-value")) as gateway:
        with pytest.raises(GatewayAuthError) as caught:
            await gateway.status()
    message = str(caught.value)
    assert "invalid_client" in message and "region" in message
    assert "wrong-secret-value" not in message
    assert count(emulator, "oauth") == 1


async def test_oauth_429_is_retried(client, emulator):
    emulator.add_fault(endpoint="oauth", kind="http_error", status=429, retry_after="0")
    assert (await client.status()).status == "available"
    assert count(emulator, "oauth") == 2


async def test_truncated_sse_stream_is_an_error_never_a_result(emulator):
    async with GatewayClient(make_config(emulator, max_attempts=2)) as gateway:
        emulator.add_fault(endpoint="sse", kind="truncate", after_tokens=4, count=None)
        with pytest.raises(StreamTruncatedError):
            await gateway.complete(gateway.request(messages=USER, transport="sse"))
    assert count(emulator, "sse") == 2


async def test_sse_error_event_with_rate_limit_is_retried(client, emulator):
    emulator.add_fault(endpoint="sse", kind="stream_error", code="rate_limited", retry_after=0.2, after_tokens=2)
    result = await client.complete(client.request(messages=USER, transport="sse"))
    assert result.attempts == 2


@pytest.mark.parametrize("code", ["rate_limited", "model_overloaded", "internal"])
async def test_websocket_error_frames_retry_and_keep_the_session(client, emulator, code):
    emulator.add_fault(endpoint="ws", kind="stream_error", code=code, retry_after=0.05, after_tokens=2)
    result = await client.complete(client.request(messages=USER))
    assert result.attempts == 2
    assert count(emulator, "ws_connections") == 1


async def test_invalid_request_error_frame_is_not_retried(client, emulator):
    emulator.add_fault(endpoint="ws", kind="stream_error", code="invalid_request")
    with pytest.raises(GatewayBadRequestError, match="invalid_request"):
        await client.complete(client.request(messages=USER))
    assert count(emulator, "ws_requests") == 1


@pytest.mark.parametrize(("code", "retried"), [("model_overloaded", True), ("unsupported_protocol", False)])
async def test_init_stream_rejection_retried_only_for_transient_codes(client, emulator, code, retried):
    emulator.add_fault(endpoint="ws", kind="reject_init", code=code)
    if retried:
        assert (await client.complete(client.request(messages=USER))).attempts == 2
    else:
        with pytest.raises(GatewayBadRequestError, match=code):
            await client.complete(client.request(messages=USER))
        assert count(emulator, "ws_requests") == 0


async def test_slow_first_token_times_out_and_is_retried(emulator):
    config = make_config(emulator, first_token_timeout_seconds=0.3, connect_timeout_seconds=0.2)
    async with GatewayClient(config) as gateway:
        emulator.add_fault(endpoint="ws", kind="slow_first_token", delay=2.0)
        started = time.monotonic()
        result = await gateway.complete(gateway.request(messages=USER))
    assert result.attempts == 2
    assert time.monotonic() - started < 1.5


async def test_idle_timeout_without_retries_raises_timeout_error(emulator):
    config = make_config(emulator, first_token_timeout_seconds=0.3, connect_timeout_seconds=0.2, max_attempts=1)
    async with GatewayClient(config) as gateway:
        emulator.add_fault(endpoint="sse", kind="slow_first_token", delay=2.0)
        with pytest.raises(GatewayTimeoutError, match="first_token_timeout_seconds"):
            await gateway.complete(gateway.request(messages=USER, transport="sse"))


async def test_pooled_session_closed_by_server_is_replaced_without_an_attempt(emulator):
    async with GatewayClient(make_config(emulator)) as gateway:
        await gateway.complete(gateway.request(messages=USER))
        emulator.configure(idle_timeout=0.2)
        await asyncio.sleep(0.6)
        result = await gateway.complete(gateway.request(messages=USER))
    assert result.attempts == 1
    assert gateway.websocket_connections == 2


async def test_non_streaming_sse(client):
    streamed = await client.complete(client.request(messages=USER, transport="sse"))
    whole = await client.complete(client.request(messages=USER, transport="sse"), stream=False)
    assert whole.text == streamed.text and whole.usage == streamed.usage


async def test_compression_can_be_turned_on(emulator):
    async with GatewayClient(make_config(emulator, compression=True)) as gateway:
        result = await gateway.complete(gateway.request(messages=USER))
    assert result.finish_reason == "stop"


async def test_temperature_matrix_expands_to_one_request_per_value(client, emulator):
    requests = client.requests_for_temperatures([0.2, 0.7, 1.4], messages=USER)
    results = [await client.complete(r) for r in requests]
    assert [r.temperature for r in results] == [0.2, 0.7, 1.4]
    assert len({r.request_id for r in results}) == 3
    assert count(emulator, "ws_requests") == 3
    with pytest.raises(RequestValidationError, match="temperature 2.5"):
        client.requests_for_temperatures([0.1, 2.5], messages=USER)


async def test_chunks_of_n_tokens(client):
    clean = await client.complete(client.request(messages=USER))
    chunks = [e async for e in client.stream(client.request(messages=USER)).chunks(8)]
    assert "".join(c.text for c in chunks) == clean.text
    assert len(chunks) == -(-clean.usage.completion_tokens // 8)


async def test_embeddings_are_batched_by_256_and_similar_texts_are_closer(client, emulator):
    texts = [f"refund request number {i}" for i in range(300)]
    vectors = await client.embed(texts)
    assert len(vectors) == 300 and count(emulator, "embeddings") == 2
    query, near, far = await client.embed(
        ["customer wants a refund for a double charge", "refund the double charge", "router keeps dropping wifi"]
    )
    dot = lambda a, b: sum(x * y for x, y in zip(a, b, strict=True))  # noqa: E731
    assert dot(query, near) > dot(query, far)


async def test_status(client, emulator):
    emulator.configure(status="degraded")
    status = await client.status()
    assert status.status == "degraded" and status.models


def test_refresh_margin_is_a_tenth_of_short_lifetimes():
    assert refresh_margin(300, 300) == 30
    assert refresh_margin(86400, 300) == 300


async def test_no_secret_or_token_in_debug_logs(emulator, capfd):
    handler = logging.StreamHandler()
    root = logging.getLogger()
    previous = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        async with GatewayClient(make_config(emulator)) as gateway:
            emulator.add_fault(endpoint="ws", kind="http_error", status=503, retry_after="0")
            await gateway.complete(gateway.request(messages=USER))
            await gateway.complete(gateway.request(messages=USER, transport="sse"))
            token = TOKEN_CACHE.get(gateway._auth._key).value
    finally:
        root.removeHandler(handler)
        root.setLevel(previous)
    out, err = capfd.readouterr()
    assert "retrying" in err  # the logs were really captured
    for secret in ("emulator-secret", token):
        assert secret not in out and secret not in err
