"""Failure semantics of the batch engine, against the emulator and a real Postgres (issue 9).

A failing embedder or database stops the batch within a bound and keeps every paid completion;
the next attempt completes them without asking the gateway again; one bad item never fails its
neighbours; invalid items are streamed out, not held.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import socket
import time
import tracemalloc
from datetime import datetime

import pytest
from batch_items import TEST_ID_KEY, TEST_ID_KEY_TEXT, make_items
from pydantic import SecretStr
from test_batch import gateway_config, table_count

from airflow_provider_genesys_llm.batch.items import iter_jsonl
from airflow_provider_genesys_llm.batch.runner import BatchRunner, BatchSettings, BatchTimeoutError, RunContext
from airflow_provider_genesys_llm.client import GatewayClient
from airflow_provider_genesys_llm.client.auth import TOKEN_CACHE
from airflow_provider_genesys_llm.client.errors import (
    AnswerTooLargeError,
    GatewayAuthError,
    GatewayBadRequestError,
    GatewayCircuitOpenError,
    GatewayConnectionError,
    GatewayProtocolError,
    GatewayUnavailableError,
)
from airflow_provider_genesys_llm.governance.chain import AuditChainStore
from airflow_provider_genesys_llm.hooks.postgres import pgvector_store_from_airflow
from airflow_provider_genesys_llm.operators.batch import BatchFailedError, is_transient
from airflow_provider_genesys_llm.sinks.pgvector import PgVectorStore, PgVectorStoreError, SchemaMismatchError

#: Every failing run must end within this many seconds (issue 9: "fails within 60 s").
FAIL_WITHIN = 60


async def run(
    emulator,
    connect,
    items,
    *,
    chunk_size=10,
    concurrency=4,
    embed="completion",
    audit=None,
    config=None,
    total_hint=None,
    embedder=None,
):
    """One batch attempt on a fresh client (as a task retry would have), bounded in time."""
    TOKEN_CACHE.clear()
    store = PgVectorStore(connect, table="results", schema=connect.schema, dimension=384, index="none")
    store.ensure_schema()
    async with GatewayClient(config or gateway_config(emulator)) as client:
        runner = BatchRunner(
            client,
            store,
            embedder or client.embed,
            id_key=TEST_ID_KEY,
            settings=BatchSettings(
                concurrency=concurrency,
                chunk_size=chunk_size,
                window=50,
                embed=embed,
                sink_timeout_seconds=20,
                embed_timeout_seconds=20,
                cancel_grace_seconds=5,
            ),
            context=RunContext(dag_id="dag", task_id="task", run_id="run-1"),
            audit=audit,
            total_hint=total_hint,
        )
        try:
            async with asyncio.timeout(FAIL_WITHIN):
                await runner.run(items)
        finally:
            store.close()
    return runner.stats


def scalar(connect, query: str) -> object:
    with connect() as conn:
        return conn.execute(query).fetchone()[0]


def audit_store(connect) -> AuditChainStore:
    audit = AuditChainStore(connect, schema=connect.schema)
    audit.ensure_schema()
    return audit


async def rerun_completes_paid_rows_without_the_gateway(emulator, pg_connect, items, paid: int) -> None:
    """The next attempt sends only what was never paid for, and embeds what was."""
    emulator.reset()
    stats = await run(emulator, pg_connect, items)
    assert emulator.counters()["ws_requests"] == len(items) - paid
    assert (stats.embedded_earlier, stats.succeeded, stats.failed) == (paid, len(items) - paid, 0)
    assert scalar(pg_connect, "SELECT count(*) FROM results WHERE embedding IS NOT NULL") == len(items)
    assert stats.awaiting_embedding == 0


async def test_embeddings_always_500_fails_fast_keeps_paid_results_and_audits(emulator, pg_connect):
    items = make_items(40)
    audit = audit_store(pg_connect)
    emulator.add_fault(
        endpoint="embeddings", kind="http_error", status=500, count=None, omit_retry_after=True, ratelimit_reset=0
    )
    started = time.monotonic()
    with pytest.raises(GatewayUnavailableError):
        await run(emulator, pg_connect, items, audit=audit)
    assert time.monotonic() - started < FAIL_WITHIN
    assert emulator.counters()["embeddings"] >= 1
    paid = scalar(pg_connect, "SELECT count(*) FROM results")
    assert paid >= 10  # at least the first chunk was paid for, and it is stored
    assert scalar(pg_connect, "SELECT count(*) FROM results WHERE embedding IS NOT NULL") == 0
    audited = scalar(pg_connect, "SELECT count(*) FROM genesys_llm_audit WHERE record->>'status' = 'success'")
    assert audited == paid  # every stored (paid) completion has its audit record in the chain
    with PgVectorStore(pg_connect, table="results", schema=pg_connect.schema, dimension=384, index="none") as store:
        assert store.similarity_search([1.0] * 384, k=5) == []  # rows without a vector are never found

    await rerun_completes_paid_rows_without_the_gateway(emulator, pg_connect, items, paid)


async def test_database_write_failure_mid_batch_fails_fast_then_recovers(emulator, pg_connect):
    items = make_items(60)
    with PgVectorStore(pg_connect, table="results", schema=pg_connect.schema, dimension=384, index="none") as store:
        store.ensure_schema()
    with pg_connect() as conn:
        conn.execute(
            "CREATE FUNCTION refuse_vector() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
            "IF NEW.source_id = 'conv-000025' THEN RAISE EXCEPTION 'disk full (simulated)'; END IF; "
            "RETURN NEW; END $$"
        )
        conn.execute(
            "CREATE TRIGGER refuse_vector BEFORE UPDATE OF embedding ON results "
            "FOR EACH ROW WHEN (NEW.embedding IS NOT NULL) EXECUTE FUNCTION refuse_vector()"
        )
    started = time.monotonic()
    with pytest.raises(PgVectorStoreError, match="set_embeddings on .*results failed: RaiseException") as caught:
        await run(emulator, pg_connect, items)
    assert time.monotonic() - started < FAIL_WITHIN
    assert caught.value.sqlstate == "P0001"
    embedded = scalar(pg_connect, "SELECT count(*) FROM results WHERE embedding IS NOT NULL")
    paid = scalar(pg_connect, "SELECT count(*) FROM results")
    assert embedded >= 10 and paid > embedded  # chunks before the failure are complete, later ones await
    assert paid < len(items)  # the batch stopped instead of running to the end
    with pg_connect() as conn:
        conn.execute("DROP TRIGGER refuse_vector ON results")

    emulator.reset()
    stats = await run(emulator, pg_connect, items)
    assert emulator.counters()["ws_requests"] == len(items) - paid
    assert (stats.skipped_existing, stats.embedded_earlier) == (embedded, paid - embedded)
    assert scalar(pg_connect, "SELECT count(*) FROM results WHERE embedding IS NOT NULL") == len(items)


async def test_an_embedding_of_the_wrong_size_fails_the_batch_and_keeps_the_results(emulator, pg_connect):
    async def short_vectors(texts):
        return [[0.5] * 3 for _ in texts]

    items = make_items(20)
    with pytest.raises(SchemaMismatchError, match="3 dimensions, the table stores 384"):
        await run(emulator, pg_connect, items, embedder=short_vectors)
    assert not is_transient(SchemaMismatchError("x"))
    paid = scalar(pg_connect, "SELECT count(*) FROM results")
    assert paid >= 10
    await rerun_completes_paid_rows_without_the_gateway(emulator, pg_connect, items, paid)


async def test_a_hanging_embedder_is_bounded(emulator, pg_connect):
    async def never(texts):
        await asyncio.Event().wait()

    TOKEN_CACHE.clear()
    store = PgVectorStore(pg_connect, table="results", schema=pg_connect.schema, dimension=384, index="none")
    store.ensure_schema()
    started = time.monotonic()
    async with GatewayClient(gateway_config(emulator)) as client:
        runner = BatchRunner(
            client,
            store,
            never,
            id_key=TEST_ID_KEY,
            settings=BatchSettings(concurrency=4, chunk_size=5, embed_timeout_seconds=1, cancel_grace_seconds=1),
        )
        with pytest.raises(BatchTimeoutError, match="embed_timeout_seconds"):
            async with asyncio.timeout(FAIL_WITHIN):
                await runner.run(make_items(30))
    store.close()
    assert time.monotonic() - started < 15
    assert table_count(pg_connect, "results") >= 5


async def test_rerun_of_a_batch_that_passed_passes_and_sends_nothing(emulator, pg_connect):
    items = make_items(200, invalid_every=20)  # 10 invalid
    first = await run(emulator, pg_connect, items, chunk_size=50, concurrency=8)
    assert (first.succeeded, first.invalid, first.total) == (190, 10, 200)
    assert first.failed_ratio == pytest.approx(0.05) and first.failed_ratio <= 0.1

    emulator.reset()
    again = await run(emulator, pg_connect, items, chunk_size=50, concurrency=8)
    assert emulator.counters()["total"] == 0  # no token, no completion, no embedding request
    assert (again.skipped_existing, again.invalid, again.total) == (190, 10, 200)
    assert again.failed_ratio == first.failed_ratio
    counts = again.manifest()["counts"]
    assert counts == {
        "total": 200,
        "succeeded": 0,
        "failed": 0,
        "invalid": 10,
        "skipped_existing": 190,
        "embedded_earlier": 0,
        "rows_written": 0,
        "embeddings_written": 0,
        "awaiting_embedding": 0,
        "embedding_fallbacks": 0,
        "skipped_claimed": 0,
        "deferred_by_budget": 0,
        "claims_lost": 0,
        "reenriched": 0,
        "skipped_other_version": 0,
    }


def test_only_invalid_failures_are_not_retried() -> None:
    assert is_transient(BatchFailedError("x", transient=True))
    assert not is_transient(BatchFailedError("x", transient=False))
    assert not is_transient(GatewayAuthError("bad secret"))
    assert not is_transient(GatewayBadRequestError("bad request"))
    assert not is_transient(ValueError("table 'a.b' contains a '.'"))
    assert is_transient(GatewayUnavailableError("503"))
    assert is_transient(BatchTimeoutError("slow"))
    # The client's vocabulary: `retryable` (the client retried it) is not the task's decision.
    assert is_transient(GatewayProtocolError("bad frame")) and not GatewayProtocolError.retryable
    assert not is_transient(AnswerTooLargeError("endless answer"))
    assert is_transient(GatewayCircuitOpenError("breaker open"))


async def test_wrong_secret_stops_the_batch_at_once(emulator, pg_connect):
    config = gateway_config(emulator).model_copy(update={"client_secret": SecretStr("wrong")})
    started = time.monotonic()
    with pytest.raises(GatewayAuthError):
        await run(emulator, pg_connect, make_items(30), config=config)
    assert time.monotonic() - started < 30
    assert emulator.counters()["ws_requests"] == 0 and emulator.counters()["oauth"] <= 3
    assert table_count(pg_connect, "results_failures") == 0  # not 30 per-item failures


@pytest.mark.parametrize("transport", ["websocket", "sse"])
async def test_gateway_down_stops_the_batch_within_seconds(emulator, pg_connect, transport):
    """OAuth answers, the completion endpoints do not: one retry ladder, then the breaker, not 30."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead = sock.getsockname()[1]  # closed again before the batch starts: nothing listens there
    config = gateway_config(emulator).model_copy(
        update={
            "api_base_url": f"http://127.0.0.1:{dead}",
            "stream_base_url": f"ws://127.0.0.1:{dead}",
            "transport": transport,
            "backoff_initial_seconds": 0.05,
            "backoff_max_seconds": 0.2,
        }
    )
    started = time.monotonic()
    with pytest.raises((GatewayConnectionError, GatewayCircuitOpenError)):
        await run(emulator, pg_connect, make_items(30), config=config)
    assert time.monotonic() - started < 30
    assert emulator.counters()["oauth"] <= 3
    assert table_count(pg_connect, "results_failures") == 0


BAD_LINES = {
    "nul_in_id": b'{"id": "a\\u0000b", "text": "hello"}',
    "nul_in_metadata": b'{"id": "m", "text": "hello", "metadata": {"note": "x\\u0000"}}',
    "surrogate_in_text": b'{"id": "s", "text": "SURROGATE-TEXT \\ud800"}',
    "surrogate_in_id": b'{"id": "\\udc00", "text": "hello"}',
    "not_utf8": b'{"id": "u", "text": "LATIN1-TEXT caf\xe9"}',
    "not_json": b'{"id": "j", "text": ',
    "nan_metadata": b'{"id": "n", "text": "hello", "metadata": {"score": NaN}}',
    "too_deep": b'{"id": "d", "text": "hello", "metadata": ' + b"[" * 40 + b"]" * 40 + b"}",
    "parser_recursion": b"[" * 100_000 + b"]" * 100_000,
    "empty_text": b'{"id": "e", "text": ""}',
    "blank_text": b'{"id": "w", "text": " \\n\\t "}',
    "blank_messages": b'{"id": "bm", "messages": [{"role": "user", "content": "   "}]}',
    "not_a_mapping": b'["id", "x"]',
}
EXPECTED_CODES = {
    "nul_character": 2,
    "lone_surrogate": 2,
    "not_utf8": 1,
    "not_json": 2,
    "bad_number": 1,
    "too_deep": 1,
    "empty_prompt": 3,
    "not_mapping": 1,
}


async def test_bad_bytes_and_characters_make_only_their_item_invalid(emulator, pg_connect, tmp_path, caplog):
    good = make_items(12)
    lines = [json.dumps(item).encode() for item in good[:6]] + list(BAD_LINES.values())
    lines += [json.dumps(item).encode() for item in good[6:]]
    path = tmp_path / "items.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + b"\n".join(lines) + b"\n")
    caplog.set_level(logging.INFO, logger="airflow_provider_genesys_llm.batch.runner")

    stats = await run(emulator, pg_connect, iter_jsonl(path))

    assert (stats.succeeded, stats.invalid, stats.failed) == (12, len(BAD_LINES), 0)
    assert dict(stats.invalid_reasons) == EXPECTED_CODES
    assert emulator.counters()["ws_requests"] == 12
    assert table_count(pg_connect, "results") == 12
    with pg_connect() as conn:
        failures = dict(conn.execute("SELECT source_id, message FROM results_failures").fetchall())
    assert len(failures) == len(BAD_LINES)
    assert "#6" in failures and "NUL" in failures["#6"]  # the NUL id is replaced by its position
    assert "not valid UTF-8" in failures["items.jsonl:11"]
    log = caplog.text
    assert f"{len(BAD_LINES)} invalid items" in log and "empty_prompt=3" in log and "item #6 (nul_character)" in log
    assert "SURROGATE-TEXT" not in log and "LATIN1-TEXT" not in log  # reasons only, never item text


async def test_values_postgres_or_json_cannot_hold_are_invalid_items(emulator, pg_connect):
    items = make_items(6)
    items[1]["metadata"] = {"when": datetime(2026, 1, 1)}
    items[2]["metadata"] = {"blob": b"\x00\x01"}
    items[3]["metadata"] = {"big": "x" * 70_000}
    items[4]["metadata"] = {"ratio": math.inf}
    items[5]["metadata"] = {1: "not a string key"}
    items.append(dict(make_items(7)[6], temperature=[]))
    stats = await run(emulator, pg_connect, items, total_hint=len(items))
    assert (stats.succeeded, stats.invalid, stats.items_done) == (1, 6, 7)
    assert dict(stats.invalid_reasons) == {"bad_type": 3, "oversize_metadata": 1, "bad_number": 1, "empty_matrix": 1}


async def test_an_answer_with_a_nul_character_is_stored_not_lost(emulator, pg_connect):
    emulator.add_fault(endpoint="ws", kind="pii_output", text="nul \u0000 and \u0000 again", split=3, count=1)
    stats = await run(emulator, pg_connect, make_items(10))
    assert (stats.succeeded, stats.failed) == (10, 0)
    assert scalar(pg_connect, "SELECT count(*) FROM results WHERE content LIKE '%\ufffd%'") == 1


async def test_a_json_field_typo_is_a_counted_and_marked_fallback(emulator, pg_connect, caplog):
    items = [dict(item, response_format="json") for item in make_items(8)]
    caplog.set_level(logging.WARNING, logger="airflow_provider_genesys_llm.batch.runner")
    stats = await run(emulator, pg_connect, items, embed="json:summry")
    assert stats.embedding_fallbacks == 8
    assert stats.manifest()["embedding_fallback_reasons"] == {"answer has no field 'summry'": 8}
    assert scalar(pg_connect, "SELECT count(*) FROM results WHERE metadata ? 'embedding_fallback'") == 8
    assert "8 results embedded their whole answer instead of json:summry" in caplog.text


async def test_progress_counts_items_not_completions(emulator, pg_connect, caplog):
    items = [dict(item, temperature=[0.1, 0.5]) for item in make_items(4)]
    caplog.set_level(logging.INFO, logger="airflow_provider_genesys_llm.batch.runner")
    stats = await run(emulator, pg_connect, items, total_hint=len(items))
    assert stats.succeeded == 8
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("batch progress")]
    assert lines and lines[-1].startswith("batch progress: 4/4 items done")
    assert not any(line.startswith(("batch progress: 5/", "batch progress: 8/")) for line in lines)


async def test_many_invalid_items_are_streamed_not_held(emulator, pg_connect):
    """Five times the invalid items may not raise the peak: a run that held its failures (even only
    their ids, ~60 bytes each) would grow by more than a MiB between the two."""

    async def peak_of(count: int) -> int:
        tracemalloc.start()
        try:
            items = ({"id": f"x{count}-{n}", "text": " "} for n in range(count))
            stats = await run(emulator, pg_connect, items, chunk_size=1000)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        assert stats.invalid == count
        return peak

    small, large = await peak_of(5_000), await peak_of(25_000)
    assert table_count(pg_connect, "results_failures") == 30_000
    assert large < small + 2**20, f"peak {small / 2**20:.2f} MiB for 5,000 items, {large / 2**20:.2f} MiB for 25,000"
    assert emulator.counters()["ws_requests"] == 0


def test_jsonl_lines_longer_than_the_limit_are_skipped_without_being_held(tmp_path, monkeypatch):
    from airflow_provider_genesys_llm.batch import items as items_module

    monkeypatch.setattr(items_module, "MAX_LINE_BYTES", 64)
    path = tmp_path / "long.jsonl"
    path.write_bytes(b'{"id": "a", "text": "' + b"y" * 500 + b'"}\n{"id": "b", "text": "ok"}\n')
    first, second = list(iter_jsonl(path))
    assert (first.code, first.source_id) == ("line_too_long", "long.jsonl:1")
    assert second == {"id": "b", "text": "ok"}


@pytest.mark.parametrize(
    ("table", "dimension", "fails_without_retry"),
    [("analytics.insights", 384, True), ("results", 3, True), ("results", 384, False)],
)
async def test_operator_fails_without_airflow_retries_only_when_a_retry_cannot_help(
    emulator, pg_server, pg_connect, monkeypatch, table, dimension, fails_without_retry
):
    from airflow.sdk.exceptions import AirflowFailException
    from fixtures_postgres import export_airflow_connection

    from airflow_provider_genesys_llm.operators.batch import GenesysLLMBatchCompletionOperator

    export_airflow_connection(monkeypatch, "batch_pg", pg_server)
    monkeypatch.setenv("AIRFLOW_VAR_GENESYS_LLM_ID_KEY", TEST_ID_KEY_TEXT)
    if not fails_without_retry:  # a database that is not there (yet): transient, Airflow retries
        unreachable = {
            "conn_type": "postgres",
            "host": "/nonexistent",
            "port": 5432,
            "login": "postgres",
            "schema": "postgres",
            "extra": {"connect_timeout": 2},
        }
        monkeypatch.setenv("AIRFLOW_CONN_BATCH_PG", json.dumps(unreachable))
    monkeypatch.setenv(
        "AIRFLOW_CONN_GENESYS_LLM_DEFAULT",
        json.dumps(
            {
                "conn_type": "genesys_llm",
                "login": "emulator-client",
                "password": "emulator-secret",
                "extra": {
                    "api_base_url": emulator.base_url,
                    "login_base_url": emulator.base_url,
                    "stream_base_url": emulator.ws_url,
                },
            }
        ),
    )
    existing = pgvector_store_from_airflow("batch_pg", table="results", schema=pg_connect.schema, dimension=384)
    if fails_without_retry:
        with existing:
            existing.ensure_schema()  # a 384-d table, so dimension=3 is a mismatch
    operator = GenesysLLMBatchCompletionOperator(
        task_id="batch",
        items=make_items(3),
        table=table,
        schema=pg_connect.schema,
        postgres_conn_id="batch_pg",
        embedding_dimension=dimension,
        index_mode="none",
        audit_table=None,
    )
    with pytest.raises(Exception) as caught:
        await operator.aexecute({})
    assert isinstance(caught.value, AirflowFailException) is fails_without_retry
    assert emulator.counters()["ws_requests"] == 0


async def test_a_gateway_error_quoting_a_customer_is_recorded_masked(emulator, pg_connect):
    """The client keeps the gateway's words out of the message; the failures table gets them masked."""
    emulator.add_fault(
        endpoint="ws",
        kind="http_error",
        status=400,
        code="invalid_request",
        count=1,
        message="Rejected prompt for jane.doe@example.com, card 4111 1111 1111 1111",
    )
    stats = await run(emulator, pg_connect, make_items(3))
    assert (stats.succeeded, stats.failed) == (2, 1)
    with pg_connect() as conn:
        (message,) = conn.execute("SELECT message FROM results_failures").fetchone()
    assert "gateway said: Rejected prompt for [REDACTED:EMAIL], card [REDACTED:CARD]" in message
    assert "jane.doe" not in message and "4111" not in message
