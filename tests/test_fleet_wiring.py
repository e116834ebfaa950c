"""Fleet coordination wired into the provider, end to end: batch runners in separate OS processes
claim items and share the gateway quota through a real Postgres, against the emulator's
organisation-wide quota; budgets stop a batch and the next day finishes it; a plan estimates
what a real run then costs.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing
from collections.abc import Sequence
from datetime import date
from decimal import Decimal
from multiprocessing.synchronize import Barrier
from typing import Any

import psycopg
import pytest
from batch_items import TEST_ID_KEY, TEST_ID_KEY_TEXT, make_items
from test_coordination import conninfo_of, run_processes

from airflow_provider_genesys_llm.batch.fleet import FleetControls
from airflow_provider_genesys_llm.batch.plan import plan_batch
from airflow_provider_genesys_llm.batch.runner import BatchRunner, BatchSettings, RunContext
from airflow_provider_genesys_llm.client import GatewayClient, GatewayConfig, GatewayTimeoutError
from airflow_provider_genesys_llm.client.auth import TOKEN_CACHE
from airflow_provider_genesys_llm.coordination import (
    BudgetLedger,
    BudgetSettings,
    CoordinationSettings,
    GatewayCoordinator,
    ItemClaims,
    PriceTable,
    SampleCompletion,
    SpendScope,
)
from airflow_provider_genesys_llm.governance.audit import AuditRecord
from airflow_provider_genesys_llm.hooks.postgres import pgvector_store_from_airflow
from airflow_provider_genesys_llm.sinks.pgvector import PgVectorStore

SPAWN = multiprocessing.get_context("spawn")
CONN_ID = "genesys_llm_default"
MODEL = "genesys-llm-v2"
PRICES = PriceTable(currency="USD", models={MODEL: {"prompt_per_1k": "1.00", "completion_per_1k": "2.00"}})
PROCESS_TIMEOUT = 120.0


def emulator_config(base_url: str, ws_url: str, **overrides: Any) -> GatewayConfig:
    values: dict[str, Any] = {
        "client_id": "emulator-client",
        "client_secret": "emulator-secret",
        "api_base_url": base_url,
        "login_base_url": base_url,
        "stream_base_url": ws_url,
        "max_concurrency": 8,
        "requests_per_minute": 1_000_000,
        "backoff_initial_seconds": 0.05,
        "backoff_max_seconds": 1.0,
    }
    return GatewayConfig(**{**values, **overrides})


def open_store(conninfo: str, schema: str) -> PgVectorStore:
    def connect() -> psycopg.Connection[Any]:
        return psycopg.connect(conninfo)

    return PgVectorStore(connect, table="results", schema=schema, dimension=384, index="none")


def prepare(conninfo: str, schema: str) -> None:
    """The result table and a report table, made before the workers start (two workers creating
    one table at the same instant collide in the catalog, which is not what these tests are about)."""
    with open_store(conninfo, schema) as store:
        store.ensure_schema()
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("CREATE TABLE report (worker text PRIMARY KEY, stats jsonb)")


def report(conninfo: str, worker: str, stats: dict[str, Any]) -> None:
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("INSERT INTO report VALUES (%s, %s)", (worker, json.dumps(stats)))


def reports(conninfo: str) -> dict[str, dict[str, Any]]:
    with psycopg.connect(conninfo) as conn:
        return {worker: stats for worker, stats in conn.execute("SELECT worker, stats FROM report")}


def stored_rows(conninfo: str) -> tuple[int, int]:
    with psycopg.connect(conninfo) as conn:
        row = conn.execute("SELECT count(*), count(DISTINCT id) FROM results").fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


# --- worker processes ---------------------------------------------------------------------


def deliver(conninfo: str, schema: str, base_url: str, ws_url: str, worker: str, offset: int, barrier: Barrier) -> None:
    """One delivery of the same 200-item task (as a broker redelivery would run it), starting at `offset`."""
    asyncio.run(_deliver(conninfo, schema, base_url, ws_url, worker, offset, barrier))


async def _deliver(
    conninfo: str, schema: str, base_url: str, ws_url: str, worker: str, offset: int, barrier: Barrier
) -> None:
    items = make_items(200)
    items = items[offset:] + items[:offset]
    claims = ItemClaims(conninfo, f"{schema}.results", f"dag/run-1/enrich/-1/{worker}", lease_seconds=5.0)
    await claims.start()
    with open_store(conninfo, schema) as store:
        async with GatewayClient(emulator_config(base_url, ws_url)) as client:
            runner = BatchRunner(
                client,
                store,
                client.embed,
                id_key=TEST_ID_KEY,
                settings=BatchSettings(concurrency=8, chunk_size=10, window=20),
                fleet=FleetControls(claims=claims, prices=PRICES, claim_wait_seconds=60.0),
            )
            barrier.wait(30)  # both deliveries start together
            stats = await runner.run(items)
    report(
        conninfo,
        worker,
        {
            "succeeded": stats.succeeded,
            "skipped_existing": stats.skipped_existing,
            "skipped_claimed": stats.skipped_claimed,
            "claims_lost": stats.claims_lost,
            "cost": str(stats.cost),
        },
    )


def gated_batch(
    conninfo: str, schema: str, base_url: str, ws_url: str, worker: str, settings_json: str, count: int
) -> None:
    """A batch of `count` items of its own, each completion attempt inside a fleet slot."""
    asyncio.run(
        _gated_batch(
            conninfo, schema, base_url, ws_url, worker, CoordinationSettings.model_validate_json(settings_json), count
        )
    )


async def _gated_batch(
    conninfo: str, schema: str, base_url: str, ws_url: str, worker: str, settings: CoordinationSettings, count: int
) -> None:
    items = [
        {**item, "id": f"{worker}-{item['id']}", "text": f"{worker}: {item['text']}"} for item in make_items(count)
    ]
    gate = GatewayCoordinator(conninfo, CONN_ID, settings)
    with open_store(conninfo, schema) as store:
        async with GatewayClient(emulator_config(base_url, ws_url), gate=gate, priority="backfill") as client:
            runner = BatchRunner(
                client,
                store,
                client.embed,
                id_key=TEST_ID_KEY,
                settings=BatchSettings(concurrency=8, chunk_size=20, window=40),
            )
            stats = await runner.run(items)
            requests = client.stats.requests_sent
    report(conninfo, worker, {"succeeded": stats.succeeded, "failed": stats.failed, "requests": requests})


# --- across processes ---------------------------------------------------------------------


def test_two_deliveries_in_separate_processes_pay_each_item_once(pg_connect, emulator) -> None:
    conninfo = conninfo_of(pg_connect)
    prepare(conninfo, pg_connect.schema)
    emulator.configure(completion_tokens=20, token_delay=0.005)
    barrier = SPAWN.Barrier(2)
    run_processes(
        [
            SPAWN.Process(
                target=deliver,
                args=(conninfo, pg_connect.schema, emulator.base_url, emulator.ws_url, worker, offset, barrier),
            )
            for worker, offset in (("a", 0), ("b", 0))
        ],
        timeout=PROCESS_TIMEOUT,
    )
    counters = emulator.counters()
    assert counters["completions_paid"] == 200
    assert counters["paid_twice_prompts"] == 0 and counters["paid_twice_request_ids"] == 0
    assert stored_rows(conninfo) == (200, 200)
    done = reports(conninfo)
    print(f"claims: paid={counters['completions_paid']} per_worker={done}")
    assert sum(r["succeeded"] for r in done.values()) == 200  # each item paid by exactly one delivery
    assert all(r["succeeded"] > 0 for r in done.values()), done  # both really worked (no serial run)
    # what one did not pay for, the other stored: it was counted as stored, never as lost or still held
    assert all(r["succeeded"] + r["skipped_existing"] == 200 for r in done.values()), done
    assert all(r["skipped_claimed"] == 0 and r["claims_lost"] == 0 for r in done.values()), done
    total_cost = sum(Decimal(r["cost"]) for r in done.values())
    assert total_cost > 0


def test_two_gated_processes_stay_within_the_org_quota(pg_connect, emulator) -> None:
    conninfo = conninfo_of(pg_connect)
    prepare(conninfo, pg_connect.schema)
    emulator.configure(org_max_concurrent_streams=8, completion_tokens=20, token_delay=0.01)
    settings = CoordinationSettings(
        enabled=True,
        postgres_conn_id="coordination_db",
        max_concurrency=8,
        requests_per_minute=None,
        lease_seconds=5.0,
        poll_max_seconds=0.3,
    )
    run_processes(
        [
            SPAWN.Process(
                target=gated_batch,
                args=(
                    conninfo,
                    pg_connect.schema,
                    emulator.base_url,
                    emulator.ws_url,
                    worker,
                    settings.model_dump_json(),
                    80,
                ),
            )
            for worker in ("a", "b")
        ],
        timeout=PROCESS_TIMEOUT,
    )
    counters = emulator.counters()
    done = reports(conninfo)
    requests = counters["completions_paid"] + counters["quota_429s"]  # completion requests the gateway answered
    print(f"gate: max_streams={counters['max_concurrent_streams']} 429s={counters['quota_429s']} requests={requests}")
    assert counters["max_concurrent_streams"] <= 8  # 2 x 8 streams wanted 16
    assert counters["max_concurrent_streams"] >= 6, counters["max_concurrent_streams"]  # and the quota was used
    assert counters["quota_429s"] <= 0.01 * requests, (counters["quota_429s"], requests)
    assert sum(r["succeeded"] for r in done.values()) == 160 and counters["completions_paid"] == 160
    assert stored_rows(conninfo) == (160, 160)


# --- in one process -----------------------------------------------------------------------


async def test_a_429_inside_a_slot_is_reported_to_the_fleet_and_a_busy_gate_is_a_typed_timeout(
    pg_connect, emulator
) -> None:
    TOKEN_CACHE.clear()
    conninfo = conninfo_of(pg_connect)
    settings = CoordinationSettings(
        enabled=True,
        postgres_conn_id="coordination_db",
        max_concurrency=2,
        requests_per_minute=None,
        lease_seconds=2.0,
        recovery_window_seconds=600,
    )
    config = emulator_config(emulator.base_url, emulator.ws_url, max_attempts=1, timeout_seconds=1.0)
    emulator.configure(org_max_concurrent_streams=1, completion_tokens=30, token_delay=0.01)
    async with GatewayClient(config, gate=GatewayCoordinator(conninfo, CONN_ID, settings)) as client:
        request = client.request(messages=[{"role": "user", "content": "first"}])
        outcomes = await asyncio.gather(
            client.complete(request),
            client.complete(client.request(messages=[{"role": "user", "content": "2"}])),
            return_exceptions=True,
        )
        assert client.gate is not None
        snapshot = await client.gate.snapshot()
        assert sum(isinstance(o, Exception) for o in outcomes) == 1  # the emulator's quota refused one
        assert snapshot.limit == 1  # the 429 halved the fleet's limit (2 -> 1)
        assert sum(snapshot.in_flight.values()) == 0  # every slot given back
        async with client.gate.slot("interactive", timeout=5):  # the only slot, held elsewhere
            with pytest.raises(GatewayTimeoutError, match="fleet"):
                await client.complete(client.request(messages=[{"role": "user", "content": "third"}]))


async def test_a_consumer_that_stops_early_gives_the_fleet_slot_back_at_once(pg_connect, emulator) -> None:
    from contextlib import aclosing

    TOKEN_CACHE.clear()
    settings = CoordinationSettings(
        enabled=True,
        postgres_conn_id="coordination_db",
        max_concurrency=1,
        requests_per_minute=None,
        lease_seconds=30.0,
    )
    emulator.configure(completion_tokens=200, token_delay=0.02)
    gate = GatewayCoordinator(conninfo_of(pg_connect), CONN_ID, settings)
    async with GatewayClient(emulator_config(emulator.base_url, emulator.ws_url), gate=gate) as client:
        stream = client.stream(client.request(messages=[{"role": "user", "content": "a long answer"}]))
        async with aclosing(aiter(stream)) as events:
            async for _ in events:
                break
        assert sum((await gate.snapshot()).in_flight.values()) == 0
        # the one slot is free at once (not after the 30 s lease): the next completion gets it
        result = await asyncio.wait_for(
            client.complete(client.request(messages=[{"role": "user", "content": "x"}])), 10
        )
        assert result.usage.completion_tokens > 0


class CollectedAudit:
    """An audit sink that keeps the records (the chain itself is tested in test_audit_chain.py)."""

    def __init__(self) -> None:
        self.records: list[AuditRecord] = []

    def append(self, records: Sequence[AuditRecord]) -> list[int]:
        self.records += records
        return list(range(len(self.records) - len(records), len(self.records)))


class NextDayLedger(BudgetLedger):
    """The same ledger on the day after `today`: what a run tomorrow would see."""

    def __init__(self, *args: Any, today: date, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._tomorrow = date.fromordinal(today.toordinal() + 1)

    async def reserve(self, scope: SpendScope, amount: Decimal, *, day: date | None = None) -> Any:
        return await super().reserve(scope, amount, day=day or self._tomorrow)


async def run_budgeted(
    emulator, pg_connect, items: list[dict[str, Any]], ledger: BudgetLedger, claim_wait: float = 0.0
) -> Any:
    conninfo = conninfo_of(pg_connect)
    scope = SpendScope(CONN_ID, dag_run="backfill/run-1", task="backfill/enrich/-1")
    claims = ItemClaims(conninfo, f"{pg_connect.schema}.results", "backfill/run-1/enrich/-1/1")
    with open_store(conninfo, pg_connect.schema) as store:
        async with GatewayClient(emulator_config(emulator.base_url, emulator.ws_url)) as client:
            runner = BatchRunner(
                client,
                store,
                client.embed,
                id_key=TEST_ID_KEY,
                settings=BatchSettings(concurrency=4, chunk_size=10, window=20),
                context=RunContext(dag_id="backfill", task_id="enrich", run_id="run-1"),
                request_defaults={"max_tokens": 40},
                fleet=FleetControls(claims, ledger, PRICES, scope, claim_wait),
            )
            return await runner.run(items)


async def test_a_daily_budget_stops_the_batch_and_the_next_days_run_finishes_it(pg_connect, emulator) -> None:
    TOKEN_CACHE.clear()
    conninfo = conninfo_of(pg_connect)
    prepare(conninfo, pg_connect.schema)
    emulator.configure(completion_tokens=20)
    items = make_items(40)
    budget = BudgetSettings(per_day=Decimal("1.00"))
    first = await run_budgeted(emulator, pg_connect, items, BudgetLedger(conninfo, budget))
    print(f"budget: day 1 sent={first.succeeded} cost={first.cost} deferred={first.deferred_by_budget}")
    assert first.deferred_by_budget > 0 and first.succeeded > 0, (first.succeeded, first.deferred_by_budget)
    assert first.succeeded + first.deferred_by_budget == 40 and first.failed == 0
    assert stored_rows(conninfo)[0] == first.succeeded == emulator.counters()["completions_paid"]
    async with BudgetLedger(conninfo, budget) as ledger:
        spent = await ledger.committed(SpendScope(CONN_ID))
    assert first.cost is not None and spent["per_day"] == first.cost <= budget.per_day  # settled = real cost
    manifest = first.manifest()
    assert manifest["counts"]["deferred_by_budget"] == first.deferred_by_budget
    assert manifest["cost"] == {"amount": str(first.cost), "currency": "USD"}

    with psycopg.connect(conninfo) as conn:
        row = conn.execute("SELECT (clock_timestamp() AT TIME ZONE 'UTC')::date").fetchone()
    assert row is not None
    day, stored, left = row[0], first.succeeded, first.deferred_by_budget
    for _ in range(4):  # each following day sends what the day before deferred, within the same budget
        # claim_wait 0: the deferred items' claims were given back, or they would be skipped as held
        run = await run_budgeted(emulator, pg_connect, items, NextDayLedger(conninfo, budget, today=day))
        assert run.skipped_claimed == 0 and run.failed == 0
        assert run.skipped_existing == stored and run.succeeded + run.deferred_by_budget == left
        assert run.succeeded > 0 and run.cost is not None and run.cost <= budget.per_day
        day, stored, left = date.fromordinal(day.toordinal() + 1), stored + run.succeeded, run.deferred_by_budget
        print(f"budget: next day sent={run.succeeded} cost={run.cost} deferred={run.deferred_by_budget}")
        if not left:
            break
    assert left == 0 and stored_rows(conninfo) == (40, 40)
    assert emulator.counters()["completions_paid"] == 40 and emulator.counters()["paid_twice_prompts"] == 0


async def test_a_plan_prints_the_work_and_a_real_run_costs_within_20_percent(pg_connect, emulator, capsys) -> None:
    TOKEN_CACHE.clear()
    conninfo = conninfo_of(pg_connect)
    prepare(conninfo, pg_connect.schema)
    items = [
        {
            "id": f"call-{n}",
            "text": f"Customer {n} calls about invoice {n * 37} and a late delivery " + "detail " * (n % 13),
        }
        for n in range(60)
    ]
    config = emulator_config(emulator.base_url, emulator.ws_url)
    with open_store(conninfo, pg_connect.schema) as store:
        async with GatewayClient(config) as client:
            audit = CollectedAudit()

            def runner() -> BatchRunner:
                return BatchRunner(
                    client,
                    store,
                    client.embed,
                    id_key=TEST_ID_KEY,
                    settings=BatchSettings(concurrency=8, chunk_size=20, window=40),
                    fleet=FleetControls(prices=PRICES),
                    audit=audit,
                )

            await runner().run(items[:5])  # an earlier run: the sample
            paid_before = emulator.counters()["completions_paid"]
            sample = [SampleCompletion(*row) for row in store.usage_sample(MODEL)]
            plan = plan_batch(
                items,
                config=config,
                request_defaults={},
                id_key=TEST_ID_KEY,
                stored_ids=store.existing_ids,
                sample=sample,
                prices=PRICES,
                max_concurrency=8,
                requests_per_minute=300,
            )
            print(plan.summary())
            assert emulator.counters()["completions_paid"] == paid_before  # planning spent nothing
            stats = await runner().run(items)
    printed = capsys.readouterr().out
    with capsys.disabled():
        print(f"{plan.summary()} real_cost={stats.cost}")
    for field in (
        "items=60",
        "already_stored=5",
        "to_send=55",
        "prompt_tokens=",
        "completion_tokens=",
        "cost=",
        "USD",
        "time_s=",
    ):
        assert field in printed, (field, printed)
    assert stats.succeeded == 55 and stats.skipped_existing == 5
    assert stats.cost is not None and abs(plan.estimate.cost - stats.cost) <= Decimal("0.2") * stats.cost, (
        plan.summary(),
        stats.cost,
    )
    assert plan.estimate.seconds >= 55 * 60 / 300 - 1  # the request rate binds: 55 requests at 300/min
    # every completion's audit record carries its cost; together they are the batches' cost
    assert len(audit.records) == 60 and all(r.cost is not None and r.cost.currency == "USD" for r in audit.records)
    assert sum(r.cost.amount for r in audit.records[5:] if r.cost) == stats.cost


async def test_the_operator_plans_from_connection_settings_without_spending(
    pg_server, pg_connect, emulator, monkeypatch, capsys
) -> None:
    from fixtures_postgres import export_airflow_connection

    from airflow_provider_genesys_llm.hooks.genesys_llm import GenesysLLMHook
    from airflow_provider_genesys_llm.operators.batch import GenesysLLMBatchCompletionOperator

    TOKEN_CACHE.clear()
    export_airflow_connection(monkeypatch, "batch_pg", pg_server)
    monkeypatch.setenv("AIRFLOW_VAR_GENESYS_LLM_ID_KEY", TEST_ID_KEY_TEXT)
    extras = {
        "api_base_url": emulator.base_url,
        "login_base_url": emulator.base_url,
        "stream_base_url": emulator.ws_url,
        "coordination": {
            "enabled": True,
            "postgres_conn_id": "batch_pg",
            "max_concurrency": 8,
            "requests_per_minute": 600,
            "table_schema": pg_connect.schema,
        },
        "price_table": PRICES.model_dump(mode="json"),
        "budgets": {"per_day": "50"},
    }
    monkeypatch.setenv(
        "AIRFLOW_CONN_GENESYS_LLM_DEFAULT",
        json.dumps(
            {"conn_type": "genesys_llm", "login": "emulator-client", "password": "emulator-secret", "extra": extras}
        ),
    )
    hook = GenesysLLMHook(priority="interactive")
    client = await hook.aget_async_client()
    assert client.gate is not None and client.priority == "interactive"
    assert client.config.budgets.per_day == Decimal(50) and client.config.coordination.max_concurrency == 8
    await client.aclose()
    plain = GatewayConfig(
        client_id="x",
        client_secret="y",
        api_base_url=emulator.base_url,
        login_base_url=emulator.base_url,
        stream_base_url=emulator.ws_url,
    )
    assert GatewayClient(plain).gate is None  # the default: per-process limits, nothing to set up

    # made as the operator makes it (pgvector's type must be where the operator's connection looks)
    with pgvector_store_from_airflow(
        "batch_pg", table="results", schema=pg_connect.schema, dimension=384, index="none"
    ) as store:
        store.ensure_schema()
        async with GatewayClient(emulator_config(emulator.base_url, emulator.ws_url)) as history:
            await BatchRunner(history, store, history.embed, id_key=TEST_ID_KEY).run(make_items(5))
    paid = emulator.counters()["completions_paid"]
    operator = GenesysLLMBatchCompletionOperator(
        task_id="plan",
        items=make_items(30),
        table="results",
        schema=pg_connect.schema,
        postgres_conn_id="batch_pg",
        index_mode="none",
        audit_table=None,
        dry_run=True,
        plan_sample_items=0,
        priority="interactive",
    )
    plan = await operator.aexecute({})
    assert emulator.counters()["completions_paid"] == paid
    assert (plan["items"], plan["already_stored"], plan["to_send"], plan["sampled_now"]) == (30, 5, 25, 0)
    assert Decimal(plan["cost"]["amount"]) > 0 and plan["cost"]["currency"] == "USD"
    assert plan["seconds"] >= 25 * 60 / 600 - 1  # the fleet's shared rate, from the connection
    assert "already_stored=5" in capsys.readouterr().out


def test_connection_settings_are_validated_with_the_fix_named() -> None:
    base = {"client_id": "x", "client_secret": "y", "region": "mypurecloud.com"}
    with pytest.raises(ValueError, match="price_table is empty"):
        GatewayConfig(**base, budgets={"per_day": "10"}, coordination={"postgres_conn_id": "pg"})
    with pytest.raises(ValueError, match="postgres_conn_id is empty"):
        GatewayConfig(**base, budgets={"per_day": "10"}, price_table=PRICES)
    with pytest.raises(ValueError, match="extra"):
        GatewayConfig(**base, coordination={"enabeld": True})
    with pytest.raises(ValueError, match="postgres_conn_id"):
        GatewayConfig(**base, coordination={"enabled": True})


@pytest.mark.parametrize("outcome", ["fail", "skip", "succeed"])
def test_on_budget_exhausted_decides_the_task_state(outcome: str) -> None:
    from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

    from airflow_provider_genesys_llm.operators.batch import GenesysLLMBatchCompletionOperator

    operator = GenesysLLMBatchCompletionOperator(task_id="t", items=[], table="results", on_budget_exhausted=outcome)
    expected = {"fail": AirflowFailException, "skip": AirflowSkipException}.get(outcome)
    if expected is None:
        operator._budget_exhausted(3)  # succeeds, with a warning in the task log
    else:
        with pytest.raises(expected, match="3 completions were left unsent"):
            operator._budget_exhausted(3)
    with pytest.raises(ValueError, match="on_budget_exhausted"):
        GenesysLLMBatchCompletionOperator(task_id="t", items=[], table="results", on_budget_exhausted="ignore")
    with pytest.raises(ValueError, match="priority"):
        GenesysLLMBatchCompletionOperator(task_id="t", items=[], table="results", priority="urgent")


def test_a_dag_plans_then_spends_within_its_budget_on_real_airflow(airflow_home, emulator, pg_server) -> None:
    """Real Airflow (``airflow dags test``): the plan task samples 5 items for real (there is no
    history) and plans the rest; the batch behind the fleet gate stops at the DAG-run budget and
    succeeds as asked; cost is in the task log, the manifest and the task's audit record."""
    from pathlib import Path

    from airflow_runner import airflow_env, dags_test

    env = airflow_env(airflow_home, Path(__file__).resolve().parent / "dags", emulator, pg_server)
    genesys = json.loads(env["AIRFLOW_CONN_GENESYS_LLM_DEFAULT"])
    genesys["extra"] |= {
        "coordination": {
            "enabled": True,
            "postgres_conn_id": "genesys_pgvector",
            "max_concurrency": 4,
            "requests_per_minute": 6000,
        },
        "price_table": PRICES.model_dump(mode="json"),
        "budgets": {"per_dag_run": "1.50"},
    }
    env["AIRFLOW_CONN_GENESYS_LLM_DEFAULT"] = json.dumps(genesys)
    emulator.configure(completion_tokens=20, org_max_concurrent_streams=4)
    done = dags_test(env, "genesys_llm_fleet_test", "2026-11-21")
    output = done.stdout + done.stderr
    assert done.returncode == 0, output[-4000:]
    assert "plan: items=30 invalid=0 completions=30 already_stored=5 to_send=25" in output, output[-4000:]
    with psycopg.connect(pg_server.conninfo) as conn:
        rows = conn.execute("SELECT count(*) FROM fleet_results").fetchone()
        cost = conn.execute(
            "SELECT record->'cost' FROM genesys_llm_audit WHERE kind = 'task' AND record->>'task_id' = 'enrich'"
        ).fetchone()
    assert rows is not None and 5 < rows[0] < 30  # the budget stopped it part-way
    assert cost is not None and cost[0]["currency"] == "USD" and Decimal(cost[0]["amount"]) <= Decimal("1.50")
    assert "batch cost: " in output and "'deferred_by_budget': " + str(30 - rows[0]) in output
    assert "on_budget_exhausted='succeed'" in output
    print(*(line[-220:] for line in output.splitlines() if "plan: items" in line or "batch cost:" in line), sep="\n")
    counters = emulator.counters()
    assert counters["max_concurrent_streams"] <= 4 and counters["paid_twice_prompts"] == 0
