"""The batch engine end to end: emulator over real sockets into a real pgvector table."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest
from batch_items import TEST_ID_KEY, make_items

from airflow_provider_genesys_llm.batch.runner import BatchRunner, BatchSettings, RunContext
from airflow_provider_genesys_llm.batch.stats import BatchStats
from airflow_provider_genesys_llm.client import GatewayClient, GatewayConfig
from airflow_provider_genesys_llm.client.auth import TOKEN_CACHE
from airflow_provider_genesys_llm.sinks.pgvector import PgVectorStore

HERE = Path(__file__).resolve().parent


def gateway_config(emulator) -> GatewayConfig:
    return GatewayConfig(
        client_id="emulator-client",
        client_secret="emulator-secret",
        api_base_url=emulator.base_url,
        login_base_url=emulator.base_url,
        stream_base_url=emulator.ws_url,
        max_concurrency=16,
        requests_per_minute=1_000_000,
        backoff_initial_seconds=0.01,
        backoff_max_seconds=0.05,
    )


async def run_batch(emulator, connect, items, *, embed="completion", chunk_size=100, index="none", governance=None):
    """Run one batch; the store comes back closed (a later call on it opens a new connection)."""
    TOKEN_CACHE.clear()
    store = PgVectorStore(connect, table="results", schema=connect.schema, dimension=384, index=index)
    with store:
        store.ensure_schema()
        async with GatewayClient(gateway_config(emulator)) as client:
            runner = BatchRunner(
                client,
                store,
                client.embed,
                settings=BatchSettings(concurrency=16, chunk_size=chunk_size, window=200, embed=embed),
                id_key=TEST_ID_KEY,
                context=RunContext(dag_id="dag", task_id="task", run_id="run-1"),
                governance=governance,
            )
            stats = await runner.run(items)
    return store, stats


def table_count(connect, table: str) -> int:
    with connect() as conn:
        return conn.execute(f'SELECT count(*) FROM "{table}"').fetchone()[0]


async def test_1000_items_with_invalid_and_transient_failures_then_rerun_sends_nothing(emulator, pg_connect):
    items = make_items(1000, invalid_every=20)  # 50 invalid
    emulator.add_fault(endpoint="ws", kind="fail_first_attempt_ratio", ratio=0.05)
    store, stats = await run_batch(emulator, pg_connect, items)
    assert (stats.succeeded, stats.invalid, stats.failed) == (950, 50, 0)
    assert stats.attempts > 950  # transient failures really happened and were retried
    assert table_count(pg_connect, "results") == 950
    assert table_count(pg_connect, "results_failures") == 50
    with pg_connect() as conn:
        classes = conn.execute("SELECT DISTINCT error_class FROM results_failures").fetchall()
        reasons = [r[0] for r in conn.execute("SELECT message FROM results_failures").fetchall()]
    assert classes == [("RequestValidationError",)]
    assert any("temperature 3.5" in r for r in reasons) and any("role" in r for r in reasons)

    emulator.reset()
    _, again = await run_batch(emulator, pg_connect, items)
    assert emulator.counters()["ws_requests"] == 0
    assert (again.succeeded, again.skipped_existing, again.invalid) == (0, 950, 50)
    assert table_count(pg_connect, "results") == 950


async def test_gateway_failures_are_recorded_and_a_rerun_sends_only_them(emulator, pg_connect):
    items = make_items(40)
    emulator.add_fault(endpoint="ws", kind="stream_error", code="invalid_request", count=3)
    _, stats = await run_batch(emulator, pg_connect, items)
    assert (stats.succeeded, stats.failed) == (37, 3)
    with pg_connect() as conn:
        failed = conn.execute("SELECT error_class, attempts FROM results_failures").fetchall()
    assert failed == [("GatewayBadRequestError", 1)] * 3

    emulator.reset()
    _, rerun = await run_batch(emulator, pg_connect, items)
    assert emulator.counters()["ws_requests"] == 3
    assert (rerun.succeeded, rerun.skipped_existing) == (3, 37)
    with pg_connect() as conn:
        assert conn.execute("SELECT count(*) FROM results_failures WHERE NOT resolved").fetchone()[0] == 0


async def test_killed_mid_batch_then_rerun_stores_each_item_exactly_once(emulator, pg_connect):
    emulator.configure(token_delay=0.002)
    env = {
        **os.environ,
        "BATCH_BASE_URL": emulator.base_url,
        "BATCH_WS_URL": emulator.ws_url,
        "BATCH_CONNINFO": pg_connect.server.conninfo,
        "BATCH_SCHEMA": pg_connect.schema,
        "PYTHONPATH": os.pathsep.join([str(HERE), str(HERE.parent)]),
    }
    child = subprocess.Popen([sys.executable, str(HERE / "batch_child.py")], env=env)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                stored = table_count(pg_connect, "results")
            except psycopg.errors.UndefinedTable:
                stored = 0
            if stored >= 100:
                break
            assert child.poll() is None, "the batch finished before it could be killed"
            time.sleep(0.05)
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.wait(timeout=30)
    partial = table_count(pg_connect, "results")
    assert 100 <= partial < 600

    emulator.reset()
    _, stats = await run_batch(emulator, pg_connect, make_items(600))
    assert stats.skipped_existing + stats.embedded_earlier == partial  # killed before embedding: awaiting rows
    assert emulator.counters()["ws_requests"] == 600 - partial
    with pg_connect() as conn:
        rows, distinct, embedded = conn.execute(
            "SELECT count(*), count(DISTINCT source_id), count(embedding) FROM results"
        ).fetchone()
    assert rows == distinct == embedded == 600


async def test_similarity_search_finds_the_expected_neighbour(emulator, pg_connect):
    items = make_items(25)
    store, _ = await run_batch(emulator, pg_connect, items, embed="source", index="hnsw")
    async with GatewayClient(gateway_config(emulator)) as client:
        [query] = await client.embed(["router drops the connection every evening around eight (call 7)"])
    with store:
        matches = store.similarity_search(query, k=3)
        billing = store.similarity_search(query, k=3, filters={"source_id": "conv-000002"})
    assert matches[0].source_id == "conv-000007"
    assert [m.source_id for m in billing] == ["conv-000002"]


async def test_json_field_embedding_and_manifest_stay_small(emulator, pg_connect):
    items = [dict(item, response_format="json") for item in make_items(30)]
    _, stats = await run_batch(emulator, pg_connect, items, embed="json:summary")
    manifest = stats.manifest()
    assert stats.embedding_fallbacks == 0
    assert manifest["counts"]["succeeded"] == 30 and manifest["tokens"]["completion"] > 0
    assert manifest["latency_ms"]["p95"] >= manifest["latency_ms"]["p50"] > 0
    assert len(repr(manifest)) < 2200  # counts and per-version rows included


@pytest.mark.parametrize("bad", ["conv-1", b"bytes", {"id": "x"}, 42])
async def test_bad_item_sources_are_refused_before_any_request(emulator, pg_connect, bad):
    with pytest.raises(TypeError):
        await run_batch(emulator, pg_connect, bad)
    assert emulator.counters()["total"] == 0


async def test_fail_masking_policy_fails_the_item_and_records_why_without_the_value(emulator, pg_connect):
    from airflow_provider_genesys_llm.governance.policy import Governance

    emulator.add_fault(endpoint="ws", kind="pii_output", text="card 4111 1111 1111 1111", split=5, count=2)
    _, stats = await run_batch(emulator, pg_connect, make_items(10), governance=Governance(output_policy="fail"))
    assert (stats.succeeded, stats.failed) == (8, 2)
    with pg_connect() as conn:
        failures = conn.execute("SELECT error_class, message FROM results_failures").fetchall()
        stored = " ".join(row[0] for row in conn.execute("SELECT content FROM results"))
    assert [f[0] for f in failures] == ["PiiDetectedError"] * 2
    assert all("CARD=1" in f[1] and "4111" not in f[1] for f in failures)
    assert "4111" not in stored


def test_manifest_counts_every_outcome_and_write_counter_by_name():
    """The manifest's counts come from the declared counters: a set value shows under its name."""
    stats = BatchStats(succeeded=3, failed=1, invalid=2, skipped_claimed=4, claims_lost=1, awaiting_embedding=5)
    counts = stats.manifest()["counts"]
    assert set(counts) == {
        "total", "succeeded", "failed", "invalid", "skipped_existing", "embedded_earlier", "skipped_claimed",
        "deferred_by_budget", "claims_lost", "rows_written", "embeddings_written", "awaiting_embedding",
        "embedding_fallbacks", "reenriched", "skipped_other_version",
    }  # fmt: skip
    assert "output_valid" not in counts  # output counts only for runs that validated answers
    assert BatchStats(output_reasked=2).manifest()["counts"]["output_reasked"] == 2
    assert counts["total"] == 3 + 1 + 2 + 4  # claims_lost and awaiting_embedding are not outcomes of their own
    assert counts["skipped_claimed"] == 4 and counts["claims_lost"] == 1 and counts["awaiting_embedding"] == 5
