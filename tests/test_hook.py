"""GenesysLLMHook with a real Airflow connection, against the emulator."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from airflow_provider_genesys_llm.client import RequestValidationError, TokenEvent
from airflow_provider_genesys_llm.client.auth import TOKEN_CACHE
from airflow_provider_genesys_llm.hooks.genesys_llm import GenesysLLMHook

USER = [{"role": "user", "content": "The router keeps dropping the connection every evening."}]


def connection_json(emulator, **extra) -> str:
    return json.dumps(
        {
            "conn_type": "genesys_llm",
            "login": "id",
            "password": "secret",
            "extra": {
                "api_base_url": emulator.base_url,
                "login_base_url": emulator.base_url,
                "stream_base_url": emulator.ws_url,
                **extra,
            },
        }
    )


@pytest.fixture
def hook(emulator, monkeypatch):
    TOKEN_CACHE.clear()
    monkeypatch.setenv("AIRFLOW_CONN_GENESYS_LLM_DEFAULT", connection_json(emulator))
    hook = GenesysLLMHook()
    yield hook
    hook.close()


@pytest.fixture
async def async_hook(hook):
    """The hook for a coroutine test: its client on the test's loop is closed with the loop."""
    yield hook
    await hook.aclose()


def test_sequential_complete_calls_reuse_the_session_and_token(hook, emulator):
    first = hook.complete(USER)
    second = hook.complete(USER, temperature=0.1, max_tokens=64)
    third = hook.complete(USER, transport="sse", system="Answer in JSON.")
    assert first.text and second.temperature == 0.1 and third.transport == "sse"
    counters = emulator.counters()
    assert counters["ws_connections"] == 1 and counters["ws_requests"] == 2
    assert counters["oauth"] == 1


def test_token_cache_is_shared_across_hook_instances(hook, emulator):
    hook.complete(USER)
    other = GenesysLLMHook()
    try:
        other.complete(USER)
    finally:
        other.close()
    assert emulator.counters()["oauth"] == 1


def test_test_connection_makes_no_billed_call(hook, emulator):
    ok, message = hook.test_connection()
    assert ok and "available" in message
    counters = emulator.counters()
    assert counters["ws_requests"] == 0 and counters["sse"] == 0 and counters["status"] == 1


def test_test_connection_reports_bad_credentials_without_the_secret(emulator, monkeypatch):
    TOKEN_CACHE.clear()
    conn = json.loads(connection_json(emulator))
    conn["password"] = "not-the-secret-xyz"
    monkeypatch.setenv("AIRFLOW_CONN_GENESYS_LLM_DEFAULT", json.dumps(conn))
    hook = GenesysLLMHook()
    ok, message = hook.test_connection()
    assert hook._loop is None  # test_connection left no loop thread or sockets behind
    assert not ok and "invalid_client" in message and "not-the-secret-xyz" not in message


def test_validation_error_before_any_request(hook, emulator):
    with pytest.raises(RequestValidationError, match="max_tokens 9999"):
        hook.complete(USER, max_tokens=9999)
    assert emulator.counters()["total"] == 0


def test_unknown_extra_is_named(emulator, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_GENESYS_LLM_DEFAULT", connection_json(emulator, reigon="mypurecloud.com"))
    with pytest.raises(ValueError, match="reigon"):
        _ = GenesysLLMHook().config


def test_tokens_are_registered_with_the_secrets_masker(hook):
    from airflow.sdk._shared.secrets_masker.secrets_masker import redact

    hook.complete(USER)
    token = TOKEN_CACHE.get(hook.get_conn()._auth._key).value
    assert token not in str(redact(f"header Bearer {token}"))
    assert "secret" not in str(redact("password=secret")).replace("password=", "")


async def test_async_stream_in_chunks(async_hook):
    events = [e async for e in async_hook.astream(USER, chunk_tokens=4)]
    whole = await async_hook.acomplete(USER)
    assert "".join(e.text for e in events if isinstance(e, TokenEvent)) == whole.text


def test_airflow_cli_lists_provider_and_tests_a_cli_added_connection(emulator, airflow_home):
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(airflow_home),
        "AIRFLOW__CORE__TEST_CONNECTION": "Enabled",
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    }
    airflow = [sys.executable, "-m", "airflow"]

    def run(*args: str) -> str:
        done = subprocess.run([*airflow, *args], env=env, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-2000:]
        return done.stdout

    assert "airflow-provider-genesys-llm" in run("providers", "list")
    extra = json.loads(connection_json(emulator))["extra"]
    run(
        "connections",
        "add",
        "genesys_llm_cli",
        "--conn-type",
        "genesys_llm",
        "--conn-login",
        "id",
        "--conn-password",
        "secret",
        "--conn-extra",
        json.dumps(extra),
    )
    assert "Connection success!" in run("connections", "test", "genesys_llm_cli")
    assert emulator.counters()["status"] == 1  # the CLI's test really reached the gateway


PII_PROMPT = [{"role": "user", "content": "Refund card 4111 1111 1111 1111 for jane.doe@example.com"}]
PII_ANSWER = "Refunded 5500 0000 0000 0004, mail sent to jane.doe@example.com."


def test_hook_governs_by_default_and_the_opt_out_is_explicit(hook, emulator):
    emulator.add_fault(endpoint="any", kind="pii_output", text=PII_ANSWER, split=4, count=None)
    governed = hook.complete(PII_PROMPT)
    sse = hook.complete(PII_PROMPT, transport="sse")
    vectors = hook.embed(["card 4111 1111 1111 1111"])
    received = "\n".join(emulator.received_payloads())
    for text in (governed.text, sse.text, received):
        assert "4111 1111 1111 1111" not in text and "5500 0000 0000 0004" not in text
        assert "jane.doe@example.com" not in text
    assert "[REDACTED:CARD]" in governed.text and "[REDACTED:EMAIL]" in sse.text and len(vectors) == 1

    raw = GenesysLLMHook(governance=False)
    try:
        assert "5500 0000 0000 0004" in raw.complete(PII_PROMPT).text  # the fault really sends PII
    finally:
        raw.close()


async def test_hook_stream_masks_a_value_split_across_chunks(async_hook, emulator):
    hook = async_hook
    emulator.add_fault(endpoint="ws", kind="pii_output", text=PII_ANSWER, split=9, count=None)
    events = [e async for e in hook.astream(PII_PROMPT, chunk_tokens=1)]
    streamed = "".join(e.text for e in events if isinstance(e, TokenEvent))
    assert "5500 0000 0000 0004" not in streamed and "[REDACTED:CARD]" in streamed
    raw = GenesysLLMHook(governance=False)
    try:
        pieces = [e.text async for e in raw.astream(PII_PROMPT, chunk_tokens=1) if isinstance(e, TokenEvent)]
    finally:
        await raw.aclose()
    assert len(pieces) > 1 and "5500 0000 0000 0004" in "".join(pieces)  # it did arrive split, and raw
