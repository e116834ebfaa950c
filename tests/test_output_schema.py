"""Structured output end to end: emulator over real sockets, real Postgres, real audit chain.

A schema with an enum field; the emulator's ``invalid_output`` fault makes some items answer
invalid JSON on the first ask only (fixed by the re-ask) and some answer a sentiment outside the
enum on every ask (failed with a reason after ``output_retries`` re-asks). What is promised: valid
rows stored with typed columns, every paid attempt counted and audited, reasons that name the
field and rule but no value, mistakes refused before any request, and a re-run that does not pay
for stored rows again.
"""

from __future__ import annotations

import json
import logging
from typing import Literal

import pytest
from batch_items import TEST_ID_KEY
from pydantic import BaseModel
from test_batch import gateway_config

from airflow_provider_genesys_llm.batch.output_schema import OutputSchema, OutputSchemaError
from airflow_provider_genesys_llm.batch.runner import BatchRunner, BatchSettings, RunContext
from airflow_provider_genesys_llm.client import GatewayClient
from airflow_provider_genesys_llm.client.auth import TOKEN_CACHE
from airflow_provider_genesys_llm.governance.chain import AuditChainStore, verify_chain
from airflow_provider_genesys_llm.governance.policy import Governance
from airflow_provider_genesys_llm.sinks.output_columns import OutputColumnError
from airflow_provider_genesys_llm.sinks.pgvector import PgVectorStore

SENTIMENTS = ["positive", "neutral", "negative"]
SCHEMA = {
    "type": "object",
    "properties": {
        "sentiment": {"type": "string", "enum": SENTIMENTS},
        "intent": {"type": "string"},
        "summary": {"type": "string"},
    },
    "required": ["sentiment", "intent", "summary"],
}
ONCE, ALWAYS = "[[invalid-once]]", "[[invalid-always]]"
CARD = "4111 1111 1111 1111"
TEXTS = (
    "I was charged twice for my March invoice and I am furious, I want a refund",
    "Thanks, the technician fixed my router, everything works great now",
    "Please update my service address, I moved last week",
)


def items(count: int, once: int, always: int) -> list[dict[str, object]]:
    """``count`` items; the first ``once`` answer invalid JSON on their first ask, the next ``always`` on every ask."""
    made = []
    for number in range(count):
        marker = ONCE if number < once else ALWAYS if number < once + always else ""
        made.append({"id": f"conv-{number:03d}", "text": f"{TEXTS[number % len(TEXTS)]} {marker} (call {number})"})
    return made


async def run(emulator, connect, batch, *, retries=2, columns=("sentiment",), governance=None, embed="completion"):
    TOKEN_CACHE.clear()
    store = PgVectorStore(connect, table="results", schema=connect.schema, dimension=384, index="none")
    store.ensure_schema()
    schema = OutputSchema.of(SCHEMA)
    if columns:
        store.ensure_output_columns(schema.sql_columns(columns))
    audit = AuditChainStore(connect, table="audit", schema=connect.schema)
    audit.ensure_schema()
    async with GatewayClient(gateway_config(emulator)) as client:
        runner = BatchRunner(
            client,
            store,
            client.embed,
            settings=BatchSettings(
                concurrency=4, chunk_size=5, window=10, output_schema=schema, output_retries=retries, embed=embed
            ),
            id_key=TEST_ID_KEY,
            context=RunContext(dag_id="dag", task_id="task", run_id="run-1"),
            request_defaults={"response_format": "json"},
            governance=governance,
            audit=audit,
        )
        stats = await runner.run(batch)
    store.close()
    return stats


def rows(connect, query: str) -> list[tuple]:
    with connect() as conn:
        return conn.execute(query).fetchall()


async def test_invalid_answers_are_reasked_then_failed_and_valid_ones_stored_with_typed_columns(emulator, pg_connect):
    emulator.add_fault(kind="invalid_output", contains=ONCE, asks=1, answer="not_json")
    emulator.add_fault(kind="invalid_output", contains=ALWAYS, asks=None, answer="bad_enum")
    stats = await run(emulator, pg_connect, items(12, once=3, always=2), retries=2)

    # 12 first asks, 3 re-asks that fix the once-invalid items, 2 x 2 re-asks of the always-invalid ones.
    assert emulator.counters()["ws_requests"] == 12 + 3 + 4
    assert (stats.succeeded, stats.failed, stats.output_valid, stats.output_reasked, stats.output_invalid) == (
        10,
        2,
        10,
        7,
        2,
    )
    counts = stats.manifest()["counts"]
    assert (counts["output_valid"], counts["output_reasked"], counts["output_invalid"]) == (10, 7, 2)

    grouped = dict(rows(pg_connect, "SELECT sentiment, count(*) FROM results GROUP BY sentiment"))
    assert sum(grouped.values()) == 10 and set(grouped) <= set(SENTIMENTS) and len(grouped) >= 2
    [(column_type,)] = rows(
        pg_connect,
        "SELECT data_type FROM information_schema.columns WHERE table_name = 'results' AND "
        f"column_name = 'sentiment' AND table_schema = '{pg_connect.schema}'",
    )
    assert column_type == "text"
    assert rows(pg_connect, "SELECT count(*) FROM results WHERE output->>'sentiment' <> sentiment") == [(0,)]
    assert rows(pg_connect, "SELECT count(*) FROM results WHERE output IS NULL") == [(0,)]

    failures = rows(pg_connect, "SELECT id, error_class, message, attempts FROM results_failures")
    assert len(failures) == 2
    for _, error_class, message, attempts in failures:
        assert error_class == "OutputValidationError" and attempts == 3
        assert "'sentiment'" in message and "enum" in message and "2 re-ask" in message
        assert "ecstatic" not in message  # the answer's value, never quoted

    # One audit record per paid attempt, in the chain, which still verifies; usage on every one.
    records = [record for (record,) in rows(pg_connect, "SELECT record FROM audit ORDER BY seq")]
    assert len(records) == 19 == stats.audit_records
    checks = [(r["parameters"]["output_check"], r["parameters"]["output_reask"], r["status"]) for r in records]
    assert sum(1 for c in checks if c[0] == "invalid") == 3 + 6
    assert all(status == ("failed" if check == "invalid" else "success") for check, _, status in checks)
    assert sorted(reask for _, reask, _ in checks if reask) == [1, 1, 1, 1, 1, 2, 2]
    assert sum(r["usage"]["completion_tokens"] for r in records) == stats.completion_tokens
    assert verify_chain(pg_connect, table="audit", schema=pg_connect.schema).ok

    # A retry of the task pays only for the failed items (the fault is gone: valid on their first ask).
    emulator.reset()
    again = await run(emulator, pg_connect, items(12, once=3, always=2), retries=2)
    assert emulator.counters()["ws_requests"] == 2
    assert (again.skipped_existing, again.succeeded, again.output_reasked) == (10, 2, 0)
    assert rows(pg_connect, "SELECT count(*) FROM results") == [(12,)]


async def test_a_card_number_in_an_invalid_answer_never_leaves_unmasked(emulator, pg_connect, caplog, capfd):
    """Under ``output_masking="flag"`` the answer keeps the value; the reason, the failure row, the log
    and the re-ask sent to the gateway must not."""
    answer = json.dumps({"sentiment": CARD, "intent": "billing", "summary": "x"})
    emulator.add_fault(kind="invalid_output", contains=ALWAYS, asks=None, text=answer)
    caplog.set_level(logging.DEBUG)
    stats = await run(emulator, pg_connect, items(2, once=0, always=1), governance=Governance(output_policy="flag"))
    assert (stats.output_invalid, stats.output_reasked, stats.succeeded) == (1, 2, 1)

    digits = CARD.replace(" ", "")
    [(message,)] = rows(pg_connect, "SELECT message FROM results_failures")
    sent = "\n".join(emulator.received_payloads())
    assert "Your previous answer was not valid" in sent  # the re-asks did go out
    out, err = capfd.readouterr()
    for where, text in (("failure", message), ("re-ask", sent), ("log", caplog.text + out + err)):
        assert CARD not in text and digits not in text, where


@pytest.mark.parametrize(
    ("schema", "settings", "match"),
    [
        ({"type": "array", "items": {"type": "string"}}, {}, "must describe a JSON object"),
        ({"type": "object", "properties": {"a": {"type": "nonsense"}}}, {}, "not a valid JSON schema"),
        (SCHEMA, {"embed": "json:topic"}, "embed='json:topic' names field 'topic'"),
        (SCHEMA, {"output_columns": ["topic"]}, "output_columns names field 'topic'"),
        (
            {"type": "object", "properties": {"tags": {"type": "array"}}},
            {"output_columns": ["tags"]},
            "no SQL column type",
        ),
        ({"type": "object", "properties": {"content": {"type": "string"}}}, {"output_columns": ["content"]}, "clash"),
        ('{"type": "object", "properties": ', {}, "not JSON"),
    ],
)
def test_schema_column_and_embed_mistakes_fail_before_any_request(emulator, schema, settings, match) -> None:
    from airflow_provider_genesys_llm.operators.batch import GenesysLLMBatchCompletionOperator

    with pytest.raises((OutputSchemaError, OutputColumnError), match=match):
        GenesysLLMBatchCompletionOperator(
            task_id="t", table="results", items=[{"id": "a", "text": "b"}], output_schema=schema, **settings
        )
    assert emulator.counters()["ws_requests"] == 0


def test_a_user_column_of_the_same_name_is_refused(emulator, pg_connect) -> None:
    store = PgVectorStore(pg_connect, table="results", schema=pg_connect.schema, dimension=384, index="none")
    store.ensure_schema()
    with pg_connect() as conn:
        conn.execute("ALTER TABLE results ADD COLUMN sentiment integer")
    with pytest.raises(OutputColumnError, match="not generated"):
        store.ensure_output_columns({"sentiment": "text"})
    store.close()


class Classified(BaseModel):
    sentiment: Literal["positive", "neutral", "negative"]
    priority: int
    escalate: bool | None = None


@pytest.mark.parametrize(
    ("answer", "valid", "reason"),
    [
        ('```json\n{"sentiment": "neutral", "priority": 2}\n```', True, None),
        ('{"sentiment": "furious", "priority": 2}', False, "field 'sentiment' is invalid (literal_error"),
        ('{"sentiment": "neutral"}', False, "field 'priority' is invalid (missing"),
        ("[" * 5000 + "]" * 5000, False, "nested too deeply"),
        ("Sure! sentiment: neutral", False, "is not valid JSON"),
        ('["neutral"]', False, "a JSON array, not an object"),
    ],
)
def test_a_pydantic_model_validates_answers_and_maps_column_types(answer, valid, reason) -> None:
    schema = OutputSchema.of(Classified)
    checked = schema.check(answer)
    assert checked.valid is valid
    if reason:
        assert reason in (checked.reason or "") and "retry" not in (checked.reason or "")
        assert "furious" not in (checked.reason or "")
    assert schema.sql_columns(["sentiment", "priority", "escalate"]) == {
        "sentiment": "text",
        "priority": "bigint",
        "escalate": "boolean",
    }


def test_typed_columns_hold_null_for_a_value_of_another_kind_instead_of_failing_the_write(pg_connect) -> None:
    """A number beyond bigint or a string in a number column must not refuse a chunk of paid rows."""
    store = PgVectorStore(pg_connect, table="results", schema=pg_connect.schema, dimension=384, index="none")
    store.ensure_schema()
    store.ensure_output_columns({"priority": "bigint", "score": "double precision", "escalate": "boolean"})
    from airflow_provider_genesys_llm.sinks.pgvector import ResultRow

    store.upsert(
        [
            ResultRow(id="a", content="x", embedding=None, output={"priority": 1e30, "score": "high", "escalate": 1}),
            ResultRow(id="b", content="y", embedding=None, output={"priority": 3, "score": 0.5, "escalate": True}),
        ]
    )
    assert rows(pg_connect, "SELECT id, priority, score, escalate FROM results ORDER BY id") == [
        ("a", None, None, None),
        ("b", 3, 0.5, True),
    ]
    store.close()


@pytest.mark.parametrize(
    ("rule", "match"),
    [
        ({"answer": "gibberish"}, "'answer' must be one of"),
        ({"asks": 0}, "'asks' must be at least 1"),
        ({}, "needs parameter 'contains'"),
    ],
)
def test_the_invalid_output_fault_refuses_bad_rules_when_armed(emulator, rule, match) -> None:
    rule = {"contains": ONCE, **rule} if rule else {}
    with pytest.raises(ValueError, match=match):
        emulator.add_fault(kind="invalid_output", **rule)


def test_a_key_the_answer_made_up_is_never_named_in_a_reason() -> None:
    """Under ``additionalProperties`` (or a ``dict`` field) the answer's own keys may be customer data."""
    schema = OutputSchema.of(
        {"type": "object", "properties": {"scores": {"type": "object", "additionalProperties": {"type": "integer"}}}}
    )
    checked = schema.check(json.dumps({"scores": {"jane.doe@example.com": "high"}}))
    assert checked.reason == "field 'scores.<key>' must be of type integer (rule type)"


@pytest.mark.parametrize("mistake", ["rendered_schema", "user_column"])
async def test_the_batch_operator_refuses_a_rendered_schema_or_column_clash_before_any_request(
    emulator, pg_server, pg_connect, monkeypatch, mistake
) -> None:
    """What only shows at run time (a templated schema, a column someone added) fails the task
    without Airflow's retries and before the first completion."""
    from airflow.sdk.exceptions import AirflowFailException
    from batch_items import TEST_ID_KEY_TEXT
    from fixtures_postgres import export_airflow_connection

    from airflow_provider_genesys_llm.hooks.postgres import pgvector_store_from_airflow
    from airflow_provider_genesys_llm.operators.batch import GenesysLLMBatchCompletionOperator

    export_airflow_connection(monkeypatch, "batch_pg", pg_server)
    monkeypatch.setenv("AIRFLOW_VAR_GENESYS_LLM_ID_KEY", TEST_ID_KEY_TEXT)
    genesys = {
        "api_base_url": emulator.base_url,
        "login_base_url": emulator.base_url,
        "stream_base_url": emulator.ws_url,
    }
    monkeypatch.setenv(
        "AIRFLOW_CONN_GENESYS_LLM_DEFAULT",
        json.dumps({"conn_type": "genesys_llm", "login": "id", "password": "secret", "extra": genesys}),
    )
    operator = GenesysLLMBatchCompletionOperator(
        task_id="batch",
        items=items(3, once=0, always=0),
        table="results",
        schema=pg_connect.schema,
        postgres_conn_id="batch_pg",
        index_mode="none",
        audit_table=None,
        output_schema="{{ params.schema }}",
        output_columns=["sentiment"],
    )
    if mistake == "rendered_schema":
        operator.output_schema = json.dumps({"type": "object", "properties": {"mood": {"type": "string"}}})
        match = "output_columns names field 'sentiment'"
    else:
        operator.output_schema = json.dumps(SCHEMA)
        with pgvector_store_from_airflow("batch_pg", table="results", schema=pg_connect.schema, dimension=384) as store:
            store.ensure_schema()
        with pg_connect() as conn:
            conn.execute("ALTER TABLE results ADD COLUMN sentiment integer")
        match = "not generated from output"
    with pytest.raises(AirflowFailException, match=match):
        await operator.aexecute({})
    assert emulator.counters()["ws_requests"] == 0
