"""Prompt versions end to end: emulator over real sockets into a real pgvector table.

A prompt change re-sends exactly the items stored at the old version (counted at the emulator),
``reenrich="never"`` sends nothing for stored items, ``previous_versions`` keeps or replaces the
old rows, and erasure finds rows by the keyed ``source_key`` even when masking altered the id.
"""

from __future__ import annotations

from typing import Any

import pytest
from batch_items import TEST_ID_KEY, make_items
from psycopg import sql
from test_batch import gateway_config

from airflow_provider_genesys_llm.batch.items import plan_item
from airflow_provider_genesys_llm.batch.plan import plan_batch
from airflow_provider_genesys_llm.batch.prompt_version import judge_item, prompt_version
from airflow_provider_genesys_llm.batch.runner import BatchRunner, BatchSettings, RunContext
from airflow_provider_genesys_llm.client import GatewayClient, GatewayConfig
from airflow_provider_genesys_llm.client.auth import TOKEN_CACHE
from airflow_provider_genesys_llm.client.limits import build_request
from airflow_provider_genesys_llm.coordination import PriceTable, SampleCompletion
from airflow_provider_genesys_llm.governance.keys import IdKey
from airflow_provider_genesys_llm.sinks.erasure import ErasureTargets, erase, id_digest
from airflow_provider_genesys_llm.sinks.pgvector import PgVectorStore

TABLE = "enriched"
V1 = {"system": "Summarise the call in one sentence."}
V2 = {"system": "Summarise the call in one sentence, then name the customer's intent."}


def store_of(connect) -> PgVectorStore:
    store = PgVectorStore(connect, table=TABLE, schema=connect.schema, dimension=384, index="none")
    store.ensure_schema()
    return store


async def run(
    emulator, connect, items, defaults: dict[str, Any], *, fault: dict[str, Any] | None = None, **settings: Any
):
    """One batch; returns (stats, completions the emulator was asked for)."""
    TOKEN_CACHE.clear()
    emulator.reset()
    if fault:
        emulator.add_fault(**fault)
    with store_of(connect) as store:
        async with GatewayClient(gateway_config(emulator)) as client:
            runner = BatchRunner(
                client,
                store,
                client.embed,
                settings=BatchSettings(concurrency=8, chunk_size=7, window=5, **settings),
                id_key=TEST_ID_KEY,
                context=RunContext(dag_id="dag", task_id="task", run_id="run"),
                request_defaults=defaults,
            )
            stats = await runner.run(items)
    return stats, emulator.counters()["ws_requests"]


def rows(connect, query: str, *params: Any) -> list[tuple[Any, ...]]:
    with connect() as conn:
        conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(connect.schema)))
        return conn.execute(query, params).fetchall()


def versions_by_item(connect) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for source_id, version in rows(connect, f"SELECT source_id, prompt_version FROM {TABLE} ORDER BY 1, 2"):
        found.setdefault(source_id, []).append(version)
    return found


def version_of(defaults: dict[str, Any], config: GatewayConfig) -> str:
    planned = plan_item({"id": "any", "text": "any"}, 0, config, defaults, TEST_ID_KEY)
    assert isinstance(planned, list)
    return planned[0].prompt_version


# -- the version itself -----------------------------------------------------------------------


def test_the_version_follows_prompt_model_and_parameters_never_the_content_or_the_label(emulator) -> None:
    config = gateway_config(emulator)

    def version(item: dict[str, Any], extra: dict[str, Any] | None = None, **fields: Any) -> str:
        request = build_request(config, messages=item.get("messages"), variables=item.get("variables"), **fields)
        return prompt_version(request, TEST_ID_KEY, extra)

    text = {"messages": [{"role": "user", "content": "I want a refund"}]}
    base = version(text, system="S1")
    assert version({"messages": [{"role": "user", "content": "Cancel it"}]}, system="S1") == base  # content
    changed = [
        version(text, system="S2"),
        version(text, system="S1", model="genesys-llm-v3"),
        version(text, system="S1", temperature=0.2),
        version(text, system="S1", max_tokens=64),
        version(text, system="S1", response_format="json"),
        version(text, {"output_schema": {"type": "object"}}, system="S1"),
        version({"messages": [{"role": "system", "content": "Be brief"}, *text["messages"]]}, system="S1"),
        version({"variables": {"transcript": "x"}}, system="S1", prompt_id="summary-v1"),
    ]
    assert base not in changed and len(set(changed)) == len(changed)
    # a template's variable names are the template, their values are the item's content
    assert version({"variables": {"transcript": "a"}}, prompt_id="p") == version(
        {"variables": {"transcript": "b"}}, prompt_id="p"
    )
    assert version({"variables": {"transcript": "a"}}, prompt_id="p") != version(
        {"variables": {"call": "a"}}, prompt_id="p"
    )
    # keyed: another deployment's key gives another version of the same prompt
    request = build_request(config, messages=text["messages"], system="S1")
    assert prompt_version(request, IdKey("another-deployment-key-0123456789")) != base


def test_judge_item_decides_per_item() -> None:
    assert judge_item({"v2"}, False, {"v1"}, "outdated") == "stored"
    assert judge_item({"v2"}, True, None, "outdated") == "new"
    assert judge_item({"v2"}, True, {"v1", None}, "outdated") == "reenrich"
    assert judge_item({"v2"}, True, {"v2"}, "outdated") == "new"  # same prompt, new content: as before
    assert judge_item({"v2"}, True, {"v1"}, "never") == "kept"


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"reenrich": "sometimes"}, "reenrich"),
        ({"previous_versions": "drop"}, "previous_versions"),
        ({"prompt_label": "x" * 201}, "prompt_label"),
    ],
)
def test_bad_version_settings_are_refused(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        BatchSettings(**settings)


# -- against the emulator and Postgres ----------------------------------------------------------


async def test_a_prompt_change_resends_exactly_the_old_version_items(emulator, pg_connect) -> None:
    items = make_items(12)
    first, sent = await run(emulator, pg_connect, items, V1, prompt_label="v1")
    assert (first.succeeded, sent) == (12, 12)
    # some items are moved to v2 already (another DAG run, say)
    early, sent = await run(emulator, pg_connect, items[8:], V2, prompt_label="v2")
    assert (sent, early.reenriched) == (4, 4)
    # the whole batch at v2: only the 8 items still at v1 are sent
    stats, sent = await run(emulator, pg_connect, items, V2, prompt_label="v2")
    assert sent == 8
    assert (stats.reenriched, stats.succeeded, stats.skipped_existing) == (8, 8, 4)
    v1, v2 = version_of(V1, gateway_config(emulator)), version_of(V2, gateway_config(emulator))
    assert stats.versions == {v1: {"label": "v1", "rows": 12}, v2: {"label": "v2", "rows": 12}}
    manifest = stats.manifest()
    assert manifest["counts"]["reenriched"] == 8 and manifest["versions"][v2]["rows"] == 12
    assert all(sorted(found) == sorted([v1, v2]) for found in versions_by_item(pg_connect).values())  # "keep"
    # a third run sends nothing at all
    again, sent = await run(emulator, pg_connect, items, V2, prompt_label="v2")
    assert (sent, again.reenriched, again.skipped_existing) == (0, 0, 12)


async def test_relabelling_sends_nothing_and_the_label_follows(emulator, pg_connect) -> None:
    items = make_items(5)
    await run(emulator, pg_connect, items, V1, prompt_label="first name")
    stats, sent = await run(emulator, pg_connect, items, V1, prompt_label="better name")
    assert (sent, stats.skipped_existing) == (0, 5)
    assert [entry["rows"] for entry in stats.versions.values()] == [5]


async def test_reenrich_never_sends_nothing_for_stored_items(emulator, pg_connect) -> None:
    items = make_items(10)
    await run(emulator, pg_connect, items[:6], V1)
    stats, sent = await run(emulator, pg_connect, items, V2, reenrich="never")
    assert sent == 4  # only the items never stored
    assert (stats.skipped_other_version, stats.reenriched, stats.succeeded) == (6, 0, 4)
    assert stats.total == 10 and stats.manifest()["counts"]["skipped_other_version"] == 6


async def test_replace_leaves_one_row_per_item_at_the_new_version(emulator, pg_connect) -> None:
    items = make_items(9)
    items[2]["temperature"] = 3.5  # invalid: a failure row of v1
    await run(emulator, pg_connect, items, V1)
    # an item whose v2 completion fails keeps its v1 row: nothing replaced it
    fault = {"endpoint": "ws", "kind": "stream_error", "code": "invalid_request", "count": 1}
    stats, sent = await run(emulator, pg_connect, items, V2, fault=fault, previous_versions="replace")
    assert sent == 8 and stats.failed == 1 and stats.reenriched == 8
    v1, v2 = version_of(V1, gateway_config(emulator)), version_of(V2, gateway_config(emulator))
    by_item = versions_by_item(pg_connect)
    assert sorted(map(tuple, by_item.values())) == sorted([(v2,)] * 7 + [(v1,)])
    # the item that failed at v2 goes once a retry stores its v2 row
    stats, sent = await run(emulator, pg_connect, items, V2, previous_versions="replace")
    assert sent == 1 and set(map(tuple, versions_by_item(pg_connect).values())) == {(v2,)}
    assert stats.versions == {v2: {"label": None, "rows": 8}}
    unresolved = rows(
        pg_connect, f"SELECT count(*) FROM {TABLE}_failures WHERE NOT resolved AND prompt_version IS NOT NULL"
    )
    assert unresolved == [(0,)]


async def test_replace_cleans_items_stored_at_both_versions_without_sending(emulator, pg_connect) -> None:
    items = make_items(4)
    await run(emulator, pg_connect, items, V1)
    await run(emulator, pg_connect, items, V2)  # keep: both versions
    assert len(rows(pg_connect, f"SELECT 1 FROM {TABLE}")) == 8
    stats, sent = await run(emulator, pg_connect, items, V2, previous_versions="replace")
    assert (sent, stats.skipped_existing) == (0, 4)
    assert len(rows(pg_connect, f"SELECT 1 FROM {TABLE}")) == 4


async def test_plan_counts_items_per_version_without_sending(emulator, pg_connect) -> None:
    items = make_items(10)
    await run(emulator, pg_connect, items[:6], V1)
    await run(emulator, pg_connect, items[4:6], V2)
    config = gateway_config(emulator)
    v1, v2 = version_of(V1, config), version_of(V2, config)
    model = config.model
    prices = PriceTable(currency="USD", models={model: {"prompt_per_1k": "1.00", "completion_per_1k": "2.00"}})
    emulator.reset()
    with store_of(pg_connect) as store:
        plans = {
            reenrich: plan_batch(
                items,
                config=config,
                request_defaults=V2,
                id_key=TEST_ID_KEY,
                stored_ids=store.existing_ids,
                sample=[SampleCompletion(100, 50, 0.5)],
                prices=prices,
                max_concurrency=4,
                requests_per_minute=None,
                window=3,
                stored_versions=store.stored_versions,
                reenrich=reenrich,
            )
            for reenrich in ("outdated", "never")
        }
    assert emulator.counters()["ws_requests"] == 0
    outdated, never = plans["outdated"], plans["never"]
    assert (outdated.already_stored, outdated.reenrich, outdated.to_send) == (2, 4, 8)
    assert outdated.versions == {v1: {"reenrich": 4, "skip": 0}, v2: {"reenrich": 0, "skip": 2}}
    assert (never.kept, never.to_send) == (4, 4)
    assert never.versions == {v1: {"reenrich": 0, "skip": 4}, v2: {"reenrich": 0, "skip": 2}}
    assert never.to_dict()["versions"] == never.versions and "reenrich=4" in outdated.summary()


# -- source keys and erasure: ids that masking changes -----------------------------------------

PHONE_A = "415-555-0123"
PHONE_B = "415-555-0199"
CARD = "4111 1111 1111 1111"


def all_text(connect) -> str:
    """Every row of every table of the test's schema, as text."""
    tables = [name for (name,) in rows(connect, "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")]
    return "\n".join(
        str(row) for table in tables for row in rows(connect, f'SELECT row_to_json(t)::text FROM "{table}" AS t')
    )


async def test_an_id_masking_changes_is_keyed_apart_and_erased_without_trace(emulator, pg_connect) -> None:
    items = [
        {"id": PHONE_A, "text": "I was charged twice"},
        {"id": PHONE_B, "text": "Cancel my plan"},
        {"id": CARD, "text": "Card problem", "temperature": 3.5},  # invalid: a failures row
        {"id": "conv-keep", "text": "Router drops"},
    ]
    await run(emulator, pg_connect, items, V1)
    await run(emulator, pg_connect, items, V2)  # two versions of each
    keys = dict(rows(pg_connect, f"SELECT source_id, count(DISTINCT source_key) FROM {TABLE} GROUP BY 1"))
    assert PHONE_A not in keys and PHONE_B not in keys  # masked ...
    assert sum(keys.values()) == 3  # ... yet three distinct source keys: the two phones do not collide
    stored = all_text(pg_connect)
    for raw in (PHONE_A, PHONE_B, CARD, CARD.replace(" ", "")):
        assert raw not in stored

    report = erase(pg_connect, [PHONE_A, CARD], TEST_ID_KEY, targets=ErasureTargets(schema=pg_connect.schema))
    assert report.deleted[f"{pg_connect.schema}.{TABLE}"] == 2  # both versions of PHONE_A
    assert report.deleted[f"{pg_connect.schema}.{TABLE}_failures"] == 1  # CARD's invalid item (one id per item)
    gone = [id_digest(TEST_ID_KEY, PHONE_A), id_digest(TEST_ID_KEY, CARD)]
    for table in (TABLE, f"{TABLE}_failures"):
        assert rows(pg_connect, f"SELECT count(*) FROM {table} WHERE source_key = ANY(%s)", gone) == [(0,)]
    left = rows(pg_connect, f"SELECT source_key FROM {TABLE}")
    assert len(left) == 4 and {key for (key,) in left} == {
        id_digest(TEST_ID_KEY, PHONE_B),
        id_digest(TEST_ID_KEY, "conv-keep"),
    }
    # the tombstone is the same keyed hash as the rows' source_key: one hash, not a second one
    tombstones = {digest for (digest,) in rows(pg_connect, "SELECT id_hmac FROM genesys_erasure_tombstones")}
    assert set(gone) <= tombstones


def test_a_table_from_before_versions_gets_the_columns_and_counts_as_unversioned(pg_connect) -> None:
    with pg_connect() as conn:
        conn.execute(
            sql.SQL(
                "CREATE EXTENSION IF NOT EXISTS vector; CREATE TABLE {} (id text PRIMARY KEY, source_id text,"
                " content text, embedding vector(384), model text, prompt_id text, temperature double precision,"
                " finish_reason text, usage jsonb, timings jsonb, request_id text, correlation_id text, dag_id text,"
                " task_id text, run_id text, content_hash text NOT NULL, metadata jsonb,"
                " created_at timestamptz NOT NULL DEFAULT now(), updated_at timestamptz NOT NULL DEFAULT now());"
                " INSERT INTO {} (id, content, content_hash) VALUES ('old', 'x', 'h')"
            ).format(sql.Identifier(pg_connect.schema, TABLE), sql.Identifier(pg_connect.schema, TABLE))
        )
    with store_of(pg_connect) as store:
        store.ensure_schema()  # twice: idempotent
        assert store.version_counts() == {"unversioned": {"label": None, "rows": 1}}
    indexes = {
        name for (name,) in rows(pg_connect, "SELECT indexname FROM pg_indexes WHERE schemaname = current_schema()")
    }
    assert {f"{TABLE}_source_key", f"{TABLE}_prompt_ver", f"{TABLE}_failed_srckey"} <= indexes


def test_the_operator_refuses_unknown_version_options_when_the_dag_is_parsed() -> None:
    from airflow_provider_genesys_llm.operators.batch import GenesysLLMBatchCompletionOperator

    for bad in ({"reenrich": "always"}, {"previous_versions": "merge"}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            GenesysLLMBatchCompletionOperator(task_id="t", table="t", items=[], **bad)
    operator = GenesysLLMBatchCompletionOperator(
        task_id="t",
        table="t",
        items=[],
        prompt_label="{{ params.label }}",
        reenrich="never",
        previous_versions="replace",
    )
    assert "prompt_label" in operator.template_fields
    assert (operator.reenrich, operator.previous_versions) == ("never", "replace")


def test_the_operator_puts_its_output_schema_into_the_version() -> None:
    """A schema shapes the answer and every re-ask: changing it must re-enrich like a prompt change."""
    from airflow_provider_genesys_llm.operators.batch import GenesysLLMBatchCompletionOperator

    def schema(values: list[str]) -> dict[str, Any]:
        return {"type": "object", "properties": {"sentiment": {"enum": values}}, "required": ["sentiment"]}

    def version_parameters(output_schema: dict[str, Any] | None) -> dict[str, Any]:
        operator = GenesysLLMBatchCompletionOperator(task_id="t", table="t", items=[], output_schema=output_schema)
        return operator._version_parameters()

    assert version_parameters(None) == {}
    first, second = version_parameters(schema(["positive", "negative"])), version_parameters(schema(["positive"]))
    assert first != second and first == version_parameters(schema(["positive", "negative"]))
    assert first["output_schema"]["properties"]["sentiment"]["enum"] == ["positive", "negative"]
