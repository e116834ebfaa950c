"""The gateway emulator itself, over real sockets, with raw httpx / websockets clients.

These tests pin the emulator to docs/protocol.md independently of the provider's client,
so a client test that fails against the emulator points at the client, not at the emulator.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import fields
from pathlib import Path
from typing import Any

import httpx
import httpx_sse
import pytest
import websockets
from websockets.asyncio.client import ClientConnection

from genesys_llm_emulator import EmulatorConfig, EmulatorServer
from genesys_llm_emulator.config import SCOPE_GENERATION_WRITE, SCOPE_STREAM, SCOPE_USE
from genesys_llm_emulator.faults import Phase
from genesys_llm_emulator.state import EmulatorState

WS_PATH = "/api/v2/ai/llm/gateway/completions/stream"
SSE_PATH = "/api/v2/ai/generations/chat/completions"
EMBEDDINGS_PATH = "/api/v2/ai/llm/gateway/embeddings"
STATUS_PATH = "/api/v2/ai/llm/gateway/status"
OPENAI_PATH = "/v1/chat/completions"
ERROR_BODY_KEYS = {"message", "code", "status", "contextId", "messageWithParams", "messageParams", "details", "errors"}
RATE_LIMIT_HEADERS = ("inin-ratelimit-count", "inin-ratelimit-allowed", "inin-ratelimit-reset")
REPO_ROOT = Path(__file__).resolve().parents[1]


# -- helpers ---------------------------------------------------------------------------------


@pytest.fixture
def http(emulator: EmulatorServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=emulator.base_url, timeout=10) as client:
        yield client


def get_token(http: httpx.Client, scope: str | None = None, auth: tuple[str, str] = ("id", "secret")) -> str:
    data = {"grant_type": "client_credentials", **({"scope": scope} if scope is not None else {})}
    response = http.post("/oauth/token", data=data, auth=auth)
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def ws_request(request_id: str | None = "req-1", **overrides: Any) -> dict[str, Any]:
    """Tutorial 000's request, plus a request_id and a user message."""
    request: dict[str, Any] = {
        "model": "genesys-llm-v2",
        "prompt_id": "prompt_cx_analysis_01",
        "parameters": {"temperature": 0.7, "max_tokens": 1024, "stop_sequences": ["END_RESPONSE"], "stream": True},
        "context": {"system": "Analyze customer sentiment", "format": "text"},
        "messages": [{"role": "user", "content": "The customer was double charged."}],
    }
    if request_id is not None:
        request["request_id"] = request_id
    request.update(overrides)
    return request


def chat_body(stream: bool = True, system: str = "You are helpful.", **params: Any) -> dict[str, Any]:
    return {
        "messages": [{"role": "system", "content": system}, {"role": "user", "content": "Summarise the call."}],
        "params": {"model_id": "genesys-llm-v2", "temperature": 0.5, "max_tokens": 512, "stream": stream, **params},
    }


@asynccontextmanager
async def ws_session(emulator: EmulatorServer, token: str, **connect: Any) -> AsyncIterator[ClientConnection]:
    """An open stream session, past the `init_stream` handshake."""
    connect.setdefault("compression", None)
    async with websockets.connect(emulator.ws_url + WS_PATH, additional_headers=bearer(token), **connect) as ws:
        await ws.send(json.dumps({"action": "init_stream", "protocol_version": "v2"}))
        ready = json.loads(await ws.recv())
        assert ready["status"] == "stream_ready" and ready["session_id"] and ready["max_tokens_limit"] == 4096
        yield ws


async def ws_frames(ws: ClientConnection, request: dict[str, Any]) -> list[dict[str, Any]]:
    """Send one request; the frames up to and including its final or error frame."""
    await ws.send(json.dumps(request))
    frames = []
    while True:
        frame = json.loads(await ws.recv())
        frames.append(frame)
        if "error" in frame or frame.get("finish_reason"):
            return frames


def text_of(frames: list[dict[str, Any]]) -> str:
    return "".join(frame["token"] for frame in frames)


def sse_events(
    http: httpx.Client, token: str, body: dict[str, Any], request_id: str = "sse-1"
) -> list[httpx_sse.ServerSentEvent]:
    headers = {**bearer(token), "X-Request-Id": request_id}
    with httpx_sse.connect_sse(http, "POST", SSE_PATH, json=body, headers=headers) as source:
        assert source.response.status_code == 200
        assert source.response.headers["x-request-id"] == request_id
        return [event for event in source.iter_sse() if event.data]


def sse_text(events: list[httpx_sse.ServerSentEvent]) -> str:
    chunks = [json.loads(e.data) for e in events if e.event == "message" and e.data != "[DONE]"]
    return "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c.get("choices"))


@pytest.fixture
def token(http: httpx.Client) -> str:
    return get_token(http)


# -- OAuth and authentication ----------------------------------------------------------------


def test_oauth_grants_requested_scopes_and_all_when_none_asked(http: httpx.Client) -> None:
    response = http.post(
        "/oauth/token",
        data={"grant_type": "client_credentials", "scope": f"{SCOPE_USE} not:a:scope"},
        auth=("emulator-client", "emulator-secret"),
    )
    assert response.status_code == 200
    body = response.json()
    assert body["token_type"] == "bearer" and body["expires_in"] == 86400 and body["scope"] == SCOPE_USE
    assert len(body["access_token"]) >= 32
    everything = http.post("/oauth/token", data={"grant_type": "client_credentials"}, auth=("id", "secret")).json()
    assert set(everything["scope"].split()) == {SCOPE_USE, SCOPE_STREAM, "ai:llm:prompt:read", SCOPE_GENERATION_WRITE}


def test_oauth_refuses_unknown_client_and_other_grants(http: httpx.Client) -> None:
    wrong = http.post("/oauth/token", data={"grant_type": "client_credentials"}, auth=("id", "wrong"))
    assert wrong.status_code == 401
    assert wrong.json()["error"] == "invalid_client" and {"description", "error_description"} <= set(wrong.json())
    grant = http.post("/oauth/token", data={"grant_type": "password"}, auth=("id", "secret"))
    assert grant.status_code == 400 and grant.json()["error"] == "unsupported_grant_type"


def test_unknown_token_gets_401_error_body_with_platform_headers(http: httpx.Client) -> None:
    response = http.get(STATUS_PATH, headers=bearer("not-a-token"))
    assert response.status_code == 401
    body = response.json()
    assert ERROR_BODY_KEYS <= set(body) and body["code"] == "bad.credentials" and body["status"] == 401
    assert body["contextId"] == response.headers["ININ-Correlation-Id"]
    assert all(name in response.headers for name in RATE_LIMIT_HEADERS)


def test_token_without_the_endpoints_scope_gets_403(http: httpx.Client) -> None:
    token = get_token(http, scope=SCOPE_USE)
    assert http.get(STATUS_PATH, headers=bearer(token)).status_code == 200
    response = http.post(SSE_PATH, json=chat_body(), headers=bearer(token))
    assert response.status_code == 403 and response.json()["code"] == "missing.any.permissions"


def test_expire_tokens_makes_the_next_call_401(emulator: EmulatorServer, http: httpx.Client, token: str) -> None:
    assert http.get(STATUS_PATH, headers=bearer(token)).status_code == 200
    assert http.post("/_emulator/expire_tokens").json()["expired"] >= 1
    assert http.get(STATUS_PATH, headers=bearer(token)).status_code == 401
    assert http.get(STATUS_PATH, headers=bearer(get_token(http))).status_code == 200


def test_token_lifetime_is_configurable(emulator: EmulatorServer, http: httpx.Client) -> None:
    emulator.configure(token_lifetime=300)
    response = http.post("/oauth/token", data={"grant_type": "client_credentials"}, auth=("id", "secret"))
    assert response.json()["expires_in"] == 300


# -- WebSocket -------------------------------------------------------------------------------


async def test_ws_session_serves_sequential_requests(emulator: EmulatorServer, token: str) -> None:
    headers = {**bearer(token), "X-Genesys-Client-ID": "test-suite"}
    async with websockets.connect(emulator.ws_url + WS_PATH, additional_headers=headers, compression=None) as ws:
        assert ws.response is not None and ws.response.headers["ININ-Correlation-Id"]
        await ws.send(json.dumps({"action": "init_stream", "protocol_version": "v2"}))
        assert json.loads(await ws.recv())["status"] == "stream_ready"
        first = await ws_frames(ws, ws_request("a"))
        tutorial_payload = ws_request(None, messages=None)
        del tutorial_payload["messages"]
        second = await ws_frames(ws, tutorial_payload)
    for frames in (first, second):
        assert all({"token", "finish_reason", "usage"} <= set(frame) for frame in frames)
        assert [frame["sequence"] for frame in frames] == list(range(len(frames)))
        assert all(frame["finish_reason"] is None and frame["usage"] is None for frame in frames[:-1])
        final = frames[-1]
        assert final["finish_reason"] == "stop" and final["token"]
        assert final["usage"]["completion_tokens"] == len(frames) == 48
        assert final["usage"]["total_tokens"] == final["usage"]["prompt_tokens"] + 48
    assert text_of(first).startswith(first[0]["token"]) and not first[0]["token"].startswith(" ")
    assert all(frame["token"].startswith(" ") or frame["token"] == "." for frame in first[1:])
    counters = emulator.counters()
    assert counters["ws_upgrades"] == counters["ws_connections"] == 1 and counters["ws_requests"] == 2
    assert counters["ws_client_ids"] == {"test-suite": 1}
    assert [entry["request_id"] for entry in counters["request_ids"]][0] == "a"
    assert all(entry["endpoint"] == "ws" for entry in counters["request_ids"])


async def test_ws_invalid_request_gets_error_frame_and_session_stays_usable(
    emulator: EmulatorServer, token: str
) -> None:
    async with ws_session(emulator, token) as ws:
        too_hot = ws_request(parameters={"temperature": 2.5, "max_tokens": 10})
        [error] = await ws_frames(ws, too_hot)
        assert error["error"]["code"] == "invalid_request" and "temperature" in error["error"]["message"]
        [error] = await ws_frames(ws, ws_request(model="unknown-model"))
        assert error["error"]["code"] == "invalid_request"
        [error] = await ws_frames(ws, ws_request(messages=[{"role": "robot", "content": "x"}]))
        assert "role" in error["error"]["message"]
        assert (await ws_frames(ws, ws_request()))[-1]["finish_reason"] == "stop"


async def test_ws_max_tokens_cuts_the_answer_with_length(emulator: EmulatorServer, token: str) -> None:
    async with ws_session(emulator, token) as ws:
        frames = await ws_frames(ws, ws_request(parameters={"temperature": 0.2, "max_tokens": 5}))
    assert len(frames) == 5 and frames[-1]["finish_reason"] == "length"
    assert frames[-1]["usage"]["completion_tokens"] == 5


async def test_ws_init_other_than_v2_is_rejected_with_1008(emulator: EmulatorServer, token: str) -> None:
    async with websockets.connect(emulator.ws_url + WS_PATH, additional_headers=bearer(token)) as ws:
        await ws.send(json.dumps({"action": "init_stream", "protocol_version": "v1"}))
        rejected = json.loads(await ws.recv())
        assert rejected["status"] == "rejected" and rejected["error"]["code"]
        with pytest.raises(websockets.ConnectionClosed):
            await ws.recv()
    assert ws.close_code == 1008


async def test_ws_refusal_is_plain_http_before_upgrade(emulator: EmulatorServer, token: str) -> None:
    emulator.add_fault(endpoint="ws", kind="http_error", status=429, retry_after="3")
    with pytest.raises(websockets.InvalidStatus) as refused:
        await websockets.connect(emulator.ws_url + WS_PATH, additional_headers=bearer(token))
    response = refused.value.response
    assert response.status_code == 429
    assert response.headers["Retry-After"] == "3" and response.headers["ININ-Correlation-Id"]
    body = json.loads(response.body)
    assert body["code"] == "too.many.requests" and body["messageParams"] == {"retryAfter": "3"}
    assert body["limit"]["value"] == 300

    with pytest.raises(websockets.InvalidStatus) as unauthorized:
        await websockets.connect(emulator.ws_url + WS_PATH, additional_headers=bearer("bogus"))
    assert unauthorized.value.response.status_code == 401
    counters = emulator.counters()
    assert counters["ws_upgrades"] == 2 and counters["ws_connections"] == 0 and counters["faults_fired"] == 1


async def test_ws_compression_only_when_the_client_asks(emulator: EmulatorServer, token: str) -> None:
    async with ws_session(emulator, token, compression="deflate") as ws:
        assert ws.response is not None and "permessage-deflate" in ws.response.headers["Sec-WebSocket-Extensions"]
        assert (await ws_frames(ws, ws_request()))[-1]["finish_reason"] == "stop"
    async with ws_session(emulator, token) as ws:
        assert ws.response is not None and "Sec-WebSocket-Extensions" not in ws.response.headers


async def test_ws_idle_session_is_closed_with_1001(emulator: EmulatorServer, token: str) -> None:
    emulator.configure(idle_timeout=0.2)
    async with ws_session(emulator, token) as ws:
        with pytest.raises(websockets.ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 5)
    assert ws.close_code == 1001


# -- generated content -----------------------------------------------------------------------


async def test_output_is_deterministic_and_depends_on_the_request(emulator: EmulatorServer, token: str) -> None:
    async with ws_session(emulator, token) as ws:
        first = text_of(await ws_frames(ws, ws_request("x")))
        again = text_of(await ws_frames(ws, ws_request("y")))
        hotter = text_of(await ws_frames(ws, ws_request("z", parameters={"temperature": 1.5, "max_tokens": 1024})))
    assert first == again != hotter


async def test_json_format_output_parses_as_json_on_ws_and_sse(
    emulator: EmulatorServer, token: str, http: httpx.Client
) -> None:
    emulator.configure(completion_tokens=60)
    async with ws_session(emulator, token) as ws:
        frames = await ws_frames(ws, ws_request(context={"system": "Classify", "format": "json"}))
    answer = json.loads(text_of(frames))
    assert set(answer) == {"sentiment", "intent", "summary"} and len(frames) == 60
    events = sse_events(http, token, chat_body(system="Reply with a JSON object."))
    assert set(json.loads(sse_text(events))) == {"sentiment", "intent", "summary"}


# -- SSE -------------------------------------------------------------------------------------


def test_sse_stream_has_role_chunk_tokens_finish_usage_and_done(
    emulator: EmulatorServer, http: httpx.Client, token: str
) -> None:
    events = sse_events(http, token, chat_body(), request_id="sse-42")
    assert events[-1].data == "[DONE]"
    chunks = [json.loads(event.data) for event in events[:-1]]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert len({chunk["id"] for chunk in chunks}) == 1 and chunks[0]["id"].startswith("gen-")
    final = chunks[-1]
    assert final["choices"][0]["finish_reason"] == "stop" and final["choices"][0]["delta"] == {}
    assert final["usage"]["completion_tokens"] == len(chunks) - 2 == 48
    assert all(chunk["choices"][0]["finish_reason"] is None for chunk in chunks[:-1])
    assert emulator.counters()["request_ids"] == [{"endpoint": "sse", "request_id": "sse-42"}]


def test_sse_non_streaming_answer_matches_the_stream(http: httpx.Client, token: str) -> None:
    streamed = sse_text(sse_events(http, token, chat_body()))
    response = http.post(SSE_PATH, json=chat_body(stream=False), headers={**bearer(token), "X-Request-Id": "r"})
    assert response.status_code == 200 and response.headers["X-Request-Id"] == "r"
    body = response.json()
    assert body["choices"][0]["message"] == {"role": "assistant", "content": streamed}
    assert body["choices"][0]["finish_reason"] == "stop" and body["usage"]["completion_tokens"] == 48


def test_sse_validation_errors_are_400_error_bodies(http: httpx.Client, token: str) -> None:
    response = http.post(SSE_PATH, json=chat_body(temperature=1.5), headers=bearer(token))
    assert response.status_code == 400
    assert ERROR_BODY_KEYS <= set(response.json()) and "params.temperature" in response.json()["message"]
    assert http.post(SSE_PATH, content=b"{not json", headers=bearer(token)).status_code == 400


# -- embeddings, status, OpenAI route --------------------------------------------------------


def test_embeddings_are_unit_vectors_and_similar_texts_are_closer(
    emulator: EmulatorServer, http: httpx.Client, token: str
) -> None:
    texts = [
        "customer asked for a refund of the billing charge",
        "the customer wants a refund for a wrong billing charge",
        "technician visit scheduled to repair the outage",
    ]
    response = http.post(EMBEDDINGS_PATH, json={"model": "genesys-embed-v1", "input": texts}, headers=bearer(token))
    assert response.status_code == 200
    body = response.json()
    vectors = [item["embedding"] for item in body["data"]]
    assert [item["index"] for item in body["data"]] == [0, 1, 2] and body["usage"]["prompt_tokens"] > 0
    assert all(len(vector) == 384 and math.isclose(math.hypot(*vector), 1.0, abs_tol=1e-5) for vector in vectors)

    def cosine(a: list[float], b: list[float]) -> float:
        return sum(x * y for x, y in zip(a, b, strict=True))

    assert cosine(vectors[0], vectors[1]) > cosine(vectors[0], vectors[2]) + 0.2
    again = http.post(EMBEDDINGS_PATH, json={"model": "genesys-embed-v1", "input": texts[:1]}, headers=bearer(token))
    assert again.json()["data"][0]["embedding"] == vectors[0]
    assert emulator.counters()["embedding_inputs"] == 4


def test_embeddings_limits(emulator: EmulatorServer, http: httpx.Client, token: str) -> None:
    too_many = {"model": "genesys-embed-v1", "input": ["x"] * 257}
    assert http.post(EMBEDDINGS_PATH, json=too_many, headers=bearer(token)).status_code == 400
    wrong_model = {"model": "genesys-llm-v2", "input": ["x"]}
    assert http.post(EMBEDDINGS_PATH, json=wrong_model, headers=bearer(token)).status_code == 400
    emulator.configure(embedding_dim=8)
    small = http.post(EMBEDDINGS_PATH, json={"model": "genesys-embed-v1", "input": [""]}, headers=bearer(token))
    assert len(small.json()["data"][0]["embedding"]) == 8


def test_status_reports_config_models_and_rate_window(emulator: EmulatorServer, http: httpx.Client, token: str) -> None:
    first = http.get(STATUS_PATH, headers=bearer(token))
    body = first.json()
    assert body["status"] == "available"
    assert body["models"] == [{"id": "genesys-llm-v2", "max_tokens": 4096, "context_tokens": 8192}]
    assert body["rate_limit"]["limit"] == 300 and 0 < body["rate_limit"]["reset_seconds"] <= 60
    emulator.configure(status="degraded")
    second = http.get(STATUS_PATH, headers=bearer(token))
    assert second.json()["status"] == "degraded"
    assert second.json()["rate_limit"]["remaining"] == body["rate_limit"]["remaining"] - 1
    assert int(second.headers["inin-ratelimit-count"]) == int(first.headers["inin-ratelimit-count"]) + 1


def test_rate_limit_enforcement_when_switched_on(emulator: EmulatorServer, http: httpx.Client, token: str) -> None:
    emulator.configure(enforce_rate_limit=True, rate_limit_per_minute=2)
    statuses = [http.get(STATUS_PATH, headers=bearer(token)).status_code for _ in range(3)]
    assert statuses[-1] == 429
    refused = http.get(STATUS_PATH, headers=bearer(token))
    assert refused.headers["Retry-After"] == refused.headers["inin-ratelimit-reset"]


def test_openai_route_streams_and_answers_whole(http: httpx.Client) -> None:
    body = {"model": "genesys-llm-v2", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 20}
    whole = http.post(OPENAI_PATH, json=body, headers=bearer("any-key-works"))
    assert whole.status_code == 200
    answer = whole.json()
    assert answer["object"] == "chat.completion" and answer["choices"][0]["finish_reason"] == "length"
    assert answer["usage"]["completion_tokens"] == 20
    with httpx_sse.connect_sse(http, "POST", OPENAI_PATH, json={**body, "stream": True}) as source:
        events = [event.data for event in source.iter_sse() if event.data]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(data) for data in events[:-1]]
    assert all(chunk["object"] == "chat.completion.chunk" for chunk in chunks)
    text = "".join(chunk["choices"][0]["delta"].get("content", "") for chunk in chunks)
    assert text == answer["choices"][0]["message"]["content"]
    assert chunks[-1]["usage"]["completion_tokens"] == 20
    bad = http.post(OPENAI_PATH, json={**body, "temperature": 3})
    assert bad.status_code == 400 and bad.json()["error"]["type"] == "invalid_request_error"


# -- faults ----------------------------------------------------------------------------------


def test_http_error_on_oauth_uses_the_oauth_shape_and_skip_count(emulator: EmulatorServer, http: httpx.Client) -> None:
    emulator.add_fault(endpoint="oauth", kind="http_error", status=503, skip=1, count=2)
    data, auth = {"grant_type": "client_credentials"}, ("id", "secret")
    statuses = [http.post("/oauth/token", data=data, auth=auth) for _ in range(4)]
    assert [r.status_code for r in statuses] == [200, 503, 503, 200]
    assert statuses[1].json()["error"] == "temporarily_unavailable" and statuses[1].headers["Retry-After"] == "1"
    assert emulator.counters()["faults_fired"] == 2


def test_http_error_without_retry_after_falls_back_to_ratelimit_reset(
    emulator: EmulatorServer, http: httpx.Client, token: str
) -> None:
    emulator.add_fault(endpoint="any", kind="http_error", status=429, omit_retry_after=True, ratelimit_reset=7)
    response = http.get(STATUS_PATH, headers=bearer(token))
    assert response.status_code == 429 and "Retry-After" not in response.headers
    assert response.headers["inin-ratelimit-reset"] == "7" and response.json()["messageParams"] == {}


async def test_reject_init_fault(emulator: EmulatorServer, token: str) -> None:
    emulator.add_fault(endpoint="ws", kind="reject_init", code="rate_limited", retry_after=0.5)
    async with websockets.connect(emulator.ws_url + WS_PATH, additional_headers=bearer(token)) as ws:
        await ws.send(json.dumps({"action": "init_stream", "protocol_version": "v2"}))
        rejected = json.loads(await ws.recv())
        with pytest.raises(websockets.ConnectionClosed):
            await ws.recv()
    expected_error = {"code": "rate_limited", "message": "rate_limited (injected fault)", "retry_after": 0.5}
    assert rejected == {"status": "rejected", "error": expected_error}
    assert ws.close_code == 1008


async def test_ws_stream_error_ends_the_request_not_the_session(emulator: EmulatorServer, token: str) -> None:
    emulator.add_fault(endpoint="ws", kind="stream_error", after_tokens=3, code="model_overloaded", retry_after=0.25)
    async with ws_session(emulator, token) as ws:
        frames = await ws_frames(ws, ws_request())
        assert len(frames) == 4 and frames[-1]["error"]["code"] == "model_overloaded"
        assert frames[-1]["error"]["retry_after"] == 0.25
        assert (await ws_frames(ws, ws_request()))[-1]["finish_reason"] == "stop"


def test_sse_stream_error_is_an_error_event(emulator: EmulatorServer, http: httpx.Client, token: str) -> None:
    emulator.add_fault(endpoint="sse", kind="stream_error", after_tokens=2, code="rate_limited", retry_after=2)
    events = sse_events(http, token, chat_body())
    assert events[-1].event == "error"
    error = json.loads(events[-1].data)
    assert ERROR_BODY_KEYS <= set(error) and error["status"] == 429 and error["code"] == "rate_limited"
    assert error["messageParams"] == {"retryAfter": "2"}
    assert all(event.data != "[DONE]" for event in events)


async def test_close_mid_stream_on_ws_and_sse(emulator: EmulatorServer, http: httpx.Client, token: str) -> None:
    emulator.add_fault(endpoint="ws", kind="close_mid_stream", after_tokens=4)
    emulator.add_fault(endpoint="sse", kind="close_mid_stream", after_tokens=4)
    async with ws_session(emulator, token) as ws:
        await ws.send(json.dumps(ws_request()))
        received = []
        with pytest.raises(websockets.ConnectionClosedError):
            while True:
                received.append(json.loads(await ws.recv()))
    assert len(received) == 4 and ws.close_code == 1011
    with pytest.raises(httpx.RemoteProtocolError):
        sse_events(http, token, chat_body())


async def test_truncate_on_ws_and_sse(emulator: EmulatorServer, http: httpx.Client, token: str) -> None:
    emulator.add_fault(endpoint="ws", kind="truncate", after_tokens=2)
    emulator.add_fault(endpoint="sse", kind="truncate", after_tokens=2)
    async with ws_session(emulator, token) as ws:
        await ws.send(json.dumps(ws_request()))
        received = []
        with pytest.raises(websockets.ConnectionClosedOK):
            while True:
                received.append(json.loads(await ws.recv()))
    assert len(received) == 2 and ws.close_code == 1000
    events = sse_events(http, token, chat_body())
    assert events[-1].data == "[DONE]"
    chunks = [json.loads(event.data) for event in events[:-1]]
    assert len(chunks) == 3 and all(chunk["choices"][0]["finish_reason"] is None for chunk in chunks)


async def test_slow_first_token(emulator: EmulatorServer, token: str) -> None:
    emulator.add_fault(endpoint="ws", kind="slow_first_token", delay=0.3)
    async with ws_session(emulator, token) as ws:
        started = time.monotonic()
        frames = await ws_frames(ws, ws_request())
        assert time.monotonic() - started >= 0.3 and frames[-1]["finish_reason"] == "stop"


async def test_malformed_and_missing_key_frames_on_ws(emulator: EmulatorServer, token: str) -> None:
    emulator.add_fault(endpoint="ws", kind="malformed_frame", after_tokens=1)
    emulator.add_fault(endpoint="ws", kind="missing_key", after_tokens=1)
    async with ws_session(emulator, token) as ws:
        await ws.send(json.dumps(ws_request()))
        await ws.recv()
        with pytest.raises(json.JSONDecodeError):
            json.loads(await ws.recv())
        rest = [json.loads(await ws.recv()) for _ in range(47)]
        assert rest[-1]["finish_reason"] == "stop"
        frames = await ws_frames(ws, ws_request())
    assert "usage" not in frames[1] and {"token", "finish_reason"} <= set(frames[1])


def test_malformed_and_missing_key_chunks_on_sse(emulator: EmulatorServer, http: httpx.Client, token: str) -> None:
    emulator.add_fault(endpoint="sse", kind="malformed_frame", after_tokens=1)
    emulator.add_fault(endpoint="sse", kind="missing_key", after_tokens=1)
    malformed = sse_events(http, token, chat_body())
    with pytest.raises(json.JSONDecodeError):
        json.loads(malformed[2].data)
    missing = [json.loads(event.data) for event in sse_events(http, token, chat_body())[:-1]]
    assert "choices" not in missing[2]


async def test_bad_sequence_skips_one_number(emulator: EmulatorServer, token: str) -> None:
    emulator.add_fault(endpoint="ws", kind="bad_sequence", after_tokens=3)
    async with ws_session(emulator, token) as ws:
        frames = await ws_frames(ws, ws_request())
    assert [frame["sequence"] for frame in frames[:5]] == [0, 1, 2, 4, 5]


async def test_pii_output_is_split_across_frames(emulator: EmulatorServer, token: str) -> None:
    pii = "call me at 555-0100, jane.doe@example.com"
    emulator.add_fault(endpoint="ws", kind="pii_output", text=pii, split=4)
    async with ws_session(emulator, token) as ws:
        frames = await ws_frames(ws, ws_request(context={"system": "Classify", "format": "json"}))
    assert not any(pii in frame["token"] for frame in frames)
    assert pii in text_of(frames) and pii in json.loads(text_of(frames))["summary"]
    assert frames[-1]["usage"]["completion_tokens"] == len(frames)


async def test_endless_answer_streams_until_the_client_hangs_up(
    emulator: EmulatorServer, http: httpx.Client, token: str
) -> None:
    emulator.add_fault(endpoint="ws", kind="endless_answer", token_bytes=16)
    emulator.add_fault(endpoint="sse", kind="endless_answer", token_bytes=16)
    # hanging up mid-stream waits out close_timeout: the emulator answers a close only between requests
    async with ws_session(emulator, token, close_timeout=0.2) as ws:
        await ws.send(json.dumps(ws_request(parameters={"temperature": 0.7, "max_tokens": 8})))
        frames = [json.loads(await ws.recv()) for _ in range(500)]  # far past max_tokens=8
    assert all(len(f["token"]) == 16 and f["finish_reason"] is None for f in frames)
    assert [f["sequence"] for f in frames[:3]] == [0, 1, 2]
    with http.stream("POST", SSE_PATH, json=chat_body(), headers=bearer(token)) as response:
        received = 0
        for chunk in response.iter_bytes():
            received += len(chunk)
            if received > 200_000:  # far past the default 48 tokens
                break
    assert received > 200_000
    # the emulator noticed both hang-ups and still answers normally
    async with ws_session(emulator, token) as ws:
        assert (await ws_frames(ws, ws_request()))[-1]["finish_reason"] == "stop"


async def test_huge_and_nested_frames(emulator: EmulatorServer, http: httpx.Client, token: str) -> None:
    emulator.add_fault(endpoint="ws", kind="huge_frame", bytes=100_000, after_tokens=1)
    emulator.add_fault(endpoint="ws", kind="nested_frame", depth=5000, error=True, after_tokens=1)
    async with ws_session(emulator, token, max_size=None, close_timeout=0.2) as ws:
        frames = await ws_frames(ws, ws_request())
        assert len(frames[1]["token"]) == 100_000 and frames[-1]["finish_reason"] == "stop"
        await ws.send(json.dumps(ws_request()))
        await ws.recv()
        nested = await ws.recv()
    assert nested.startswith('{"error":[[[[') and nested.count("[") == 5000
    emulator.add_fault(endpoint="sse", kind="nested_frame", depth=3000, error=True, after_tokens=2)
    events = sse_events(http, token, chat_body())
    assert [e.event for e in events].count("error") == 1
    assert next(e for e in events if e.event == "error").data.count("[") == 3000


async def test_nested_json_refuses_the_ws_upgrade(emulator: EmulatorServer, token: str) -> None:
    emulator.add_fault(endpoint="ws", kind="nested_json", status=503, depth=2000)
    with pytest.raises(websockets.InvalidStatus) as caught:
        async with ws_session(emulator, token):
            pass
    assert caught.value.response.status_code == 503
    assert caught.value.response.body.startswith(b'{"message":[[[') and caught.value.response.body.count(b"[") == 2000


@pytest.mark.parametrize("endpoint", ["oauth", "sse", "embeddings", "status", "analytics_availability"])
def test_nested_json_answers_on_every_endpoint(emulator: EmulatorServer, http: httpx.Client, endpoint: str) -> None:
    emulator.add_fault(endpoint=endpoint, kind="nested_json", status=503, depth=2000)
    requests = {
        "oauth": lambda: http.post("/oauth/token", data={"grant_type": "client_credentials"}, auth=("id", "secret")),
        "sse": lambda: http.post(SSE_PATH, json=chat_body()),
        "embeddings": lambda: http.post(EMBEDDINGS_PATH, json={}),
        "status": lambda: http.get(STATUS_PATH),
        "analytics_availability": lambda: http.get("/api/v2/analytics/conversations/details/jobs/availability"),
    }
    response = requests[endpoint]()
    assert response.status_code == 503
    assert response.text.startswith('{"message":[[[') and response.text.count("[") == 2000


@pytest.mark.parametrize(
    "rule",
    [
        {"kind": "endless_answer", "token_bytes": 0},
        {"kind": "huge_frame"},
        {"kind": "huge_frame", "bytes": 0},
        {"kind": "nested_json", "depth": 0},
        {"kind": "nested_frame", "endpoint": "embeddings"},
        {"kind": "nested_frame", "error": "yes"},
    ],
)
def test_new_fault_kinds_validate_their_parameters(emulator: EmulatorServer, rule: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        emulator.add_fault(**rule)


async def test_fail_first_attempt_ratio_fails_only_the_first_sighting(
    emulator: EmulatorServer, http: httpx.Client, token: str
) -> None:
    emulator.add_fault(endpoint="any", kind="fail_first_attempt_ratio", ratio=1.0)
    async with ws_session(emulator, token) as ws:
        [failed] = await ws_frames(ws, ws_request("retry-me"))
        assert failed["error"]["code"] == "model_overloaded" and failed["error"]["retry_after"] == 0.05
        assert (await ws_frames(ws, ws_request("retry-me")))[-1]["finish_reason"] == "stop"
    headers = {**bearer(token), "X-Request-Id": "sse-retry"}
    first = http.post(SSE_PATH, json=chat_body(), headers=headers)
    assert first.status_code == 503 and first.headers["Retry-After"] == "0"
    assert sse_events(http, token, chat_body(), request_id="sse-retry")[-1].data == "[DONE]"
    emulator.reset()
    emulator.add_fault(kind="fail_first_attempt_ratio", ratio=0.0)
    assert sse_events(http, token, chat_body(), request_id="never-fails")[-1].data == "[DONE]"


# -- counters, control API, configuration ----------------------------------------------------


def test_counters_count_every_request_but_control(emulator: EmulatorServer, http: httpx.Client) -> None:
    token = get_token(http)
    http.get(STATUS_PATH, headers=bearer(token))
    http.get(STATUS_PATH, headers=bearer("bad"))
    http.post(OPENAI_PATH, json={"model": "genesys-llm-v2", "messages": [{"role": "user", "content": "x"}]})
    counters = http.get("/_emulator/counters").json()
    assert counters["total"] == 4 and counters["oauth"] == 1 and counters["status"] == 2 and counters["openai"] == 1
    assert counters["control"] == 1
    assert emulator.counters()["request_ids"][0]["endpoint"] == "openai"


def test_control_api_validates_and_reset_restores_startup_config(emulator: EmulatorServer, http: httpx.Client) -> None:
    assert http.post("/_emulator/faults", json={"kind": "explode"}).status_code == 400
    assert http.post("/_emulator/faults", json={"kind": "reject_init", "endpoint": "sse"}).status_code == 400
    assert http.post("/_emulator/faults", json={"kind": "truncate", "after_token": 3}).status_code == 400
    armed = http.post("/_emulator/faults", json={"kind": "truncate", "endpoint": "sse"}).json()
    assert armed == {"endpoint": "sse", "kind": "truncate", "count": 1, "skip": 0, "after_tokens": 0}
    assert http.post("/_emulator/config", json={"status": "on fire"}).status_code == 400
    assert http.post("/_emulator/config", json={"completion_tokens": 5}).json() == {"updated": ["completion_tokens"]}
    assert emulator.state.config.completion_tokens == 5
    assert http.post("/_emulator/reset", json={}).json() == {"reset": True}
    assert emulator.state.config.completion_tokens == 48 and emulator.state.faults == []


def test_reset_can_forget_tokens(emulator: EmulatorServer, http: httpx.Client, token: str) -> None:
    http.post("/_emulator/reset")
    assert http.get(STATUS_PATH, headers=bearer(token)).status_code == 200
    http.post("/_emulator/reset", json={"tokens": True})
    assert http.get(STATUS_PATH, headers=bearer(token)).status_code == 401


def test_startup_faults_are_rearmed_by_reset() -> None:
    state = EmulatorState(EmulatorConfig(), faults=[{"endpoint": "status", "kind": "http_error", "status": 503}])
    assert state.draw_fault("status", Phase.REQUEST) is not None
    assert state.draw_fault("status", Phase.REQUEST) is None
    state.reset()
    assert state.draw_fault("status", Phase.REQUEST) is not None
    with pytest.raises(ValueError, match="count"):
        EmulatorState(EmulatorConfig(), faults=[{"kind": "truncate", "count": 0}])


def test_every_config_field_can_be_patched() -> None:
    config = EmulatorConfig()
    values = {
        "clients": {"c": ["s", ["ai:llm:gateway:use"]]},
        "token_lifetime": 10,
        "token_delay": 0.5,
        "completion_tokens": 3,
        "embedding_dim": 16,
        "status": "unavailable",
        "models": {"m": {"max_tokens": 10, "context_tokens": 20}},
        "rate_limit_per_minute": 5,
        "enforce_rate_limit": True,
        "idle_timeout": 1,
        "max_embedding_inputs": 2,
        "org_max_concurrent_streams": 8,
        "org_requests_per_minute": 300,
        "org_retry_after_seconds": 2.5,
    }
    assert set(values) == {field.name for field in fields(EmulatorConfig)}
    patched = config.patched(values)
    assert patched.clients["c"].scopes == frozenset({"ai:llm:gateway:use"}) and patched.models["m"].max_tokens == 10
    assert config.completion_tokens == 48  # the original is untouched
    with pytest.raises(ValueError, match="token_delay"):
        config.patched({"token_delay": -1})


def test_token_delay_paces_the_stream(emulator: EmulatorServer, http: httpx.Client, token: str) -> None:
    emulator.configure(token_delay=0.02, completion_tokens=10)
    started = time.monotonic()
    sse_events(http, token, chat_body())
    assert time.monotonic() - started >= 9 * 0.02


def test_command_line_server_prints_its_url_and_stops_on_sigint() -> None:
    command = [
        sys.executable,
        "-m",
        "genesys_llm_emulator",
        "--port",
        "0",
        "--status",
        "degraded",
        "--client",
        "cli:pw",
        "--fault",
        '{"endpoint": "status", "kind": "http_error", "status": 503}',
    ]
    environment = {**os.environ, "PYTHONPATH": str(REPO_ROOT / "emulator")}  # the emulator alone
    with subprocess.Popen(
        command, cwd=REPO_ROOT, env=environment, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    ) as process:
        try:
            assert process.stdout is not None and process.stderr is not None
            line = process.stdout.readline().strip()
            assert line.startswith("emulator listening on http://127.0.0.1:")
            with httpx.Client(base_url=line.removeprefix("emulator listening on "), timeout=10) as http:
                token = get_token(http, auth=("cli", "pw"))
                assert http.get(STATUS_PATH, headers=bearer(token)).status_code == 503
                assert http.get(STATUS_PATH, headers=bearer(token)).json()["status"] == "degraded"
            process.send_signal(signal.SIGINT)
            assert process.wait(10) == 0
            assert process.stderr.read() == ""
        finally:
            if process.poll() is None:
                process.kill()
