"""Spend: prices, a plan from a small sample checked against a real run on the emulator, and
budgets that hold across OS processes on a real Postgres."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
from datetime import date, timedelta
from decimal import Decimal

import psycopg
import pytest
from test_coordination import conninfo_of, run_processes, wait_for_marker

from airflow_provider_genesys_llm.client import GatewayClient, GatewayConfig
from airflow_provider_genesys_llm.client.auth import TOKEN_CACHE
from airflow_provider_genesys_llm.coordination import (
    BudgetDenied,
    BudgetLedger,
    BudgetSettings,
    PriceTable,
    Reservation,
    SampleCompletion,
    SpendScope,
    UnknownModelPriceError,
    estimate,
)

SPAWN = multiprocessing.get_context("spawn")
PRICES = PriceTable(currency="USD", models={"genesys-llm-v2": {"prompt_per_1k": "0.50", "completion_per_1k": "1.50"}})
#: An explicit day well before today: the test that reserves without a day checks that the
#: database's own UTC date counts, which must be neither this day nor the next.
DAY = date.today() - timedelta(days=30)


# --- prices and plans ---------------------------------------------------------------------


def test_prices_are_exact_and_an_unpriced_model_is_an_error() -> None:
    assert PRICES.cost("genesys-llm-v2", 1000, 1000) == Decimal("2.00")
    assert PRICES.cost("genesys-llm-v2", 3, 7) == Decimal("0.012")  # 0.0015 + 0.0105, no float rounding
    assert PRICES.worst_case("genesys-llm-v2", 100, 4096) > PRICES.cost("genesys-llm-v2", 100, 4095)
    with pytest.raises(UnknownModelPriceError, match=r"'other-model'.*add it to the connection's price table"):
        PRICES.cost("other-model", 1, 1)
    with pytest.raises(ValueError):
        PriceTable(currency="dollars")


def test_estimate_scales_the_sample_and_takes_the_tighter_quota() -> None:
    sample = [SampleCompletion(100, 50, 2.0), SampleCompletion(300, 50, 4.0)]
    plan = estimate(1000, sample, PRICES, "genesys-llm-v2", max_concurrency=10, requests_per_minute=None)
    assert (plan.prompt_tokens, plan.completion_tokens) == (200_000, 50_000)
    assert plan.cost == Decimal("175.00") and plan.currency == "USD"
    assert plan.seconds == pytest.approx(300.0)  # 3 s mean latency / 10 streams per item
    slow = estimate(1000, sample, PRICES, "genesys-llm-v2", max_concurrency=10, requests_per_minute=60)
    assert slow.seconds == pytest.approx(1000.0)  # the request rate binds harder
    with pytest.raises(ValueError, match="sample is empty"):
        estimate(10, [], PRICES, "genesys-llm-v2", max_concurrency=1, requests_per_minute=None)


async def test_a_plan_from_five_items_is_within_20_percent_of_the_real_run(emulator) -> None:
    TOKEN_CACHE.clear()
    config = GatewayConfig(
        client_id="emulator-client",
        client_secret="emulator-secret",
        api_base_url=emulator.base_url,
        login_base_url=emulator.base_url,
        stream_base_url=emulator.ws_url,
    )
    texts = [
        f"Customer {n} calls about invoice {n * 37} and a late delivery " + "detail " * (n % 13) for n in range(60)
    ]
    async with GatewayClient(config) as client:

        async def run(batch: list[str]) -> list:
            return await asyncio.gather(
                *(client.complete(client.request(messages=[{"role": "user", "content": t}])) for t in batch)
            )

        sample = [
            SampleCompletion(r.usage.prompt_tokens, r.usage.completion_tokens, r.total_ms / 1000)
            for r in await run(texts[:5])
        ]
        plan = estimate(len(texts) - 5, sample, PRICES, config.model, max_concurrency=10, requests_per_minute=300)
        results = await run(texts[5:])
    real = sum(PRICES.cost(r.model, r.usage.prompt_tokens, r.usage.completion_tokens) for r in results)
    assert abs(plan.cost - real) <= Decimal("0.2") * real, (plan.summary(), real)


# --- budgets across processes -------------------------------------------------------------


def reserve_until_denied(conninfo: str, worker: str, amount: str, budget: str) -> None:
    asyncio.run(_reserve_until_denied(conninfo, worker, Decimal(amount), Decimal(budget)))


async def _reserve_until_denied(conninfo: str, worker: str, amount: Decimal, budget: Decimal) -> None:
    scope = SpendScope("genesys-gw", dag_run="backfill-1", task=f"enrich/{worker}")
    async with BudgetLedger(conninfo, BudgetSettings(per_day=budget)) as ledger:
        granted = 0
        for _ in range(40):
            answer = await ledger.reserve(scope, amount, day=DAY)
            if isinstance(answer, BudgetDenied):
                assert answer.level == "per_day"
                continue
            granted += 1
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("INSERT INTO granted VALUES (%s, %s)", (worker, granted))


def reserve_and_hang(conninfo: str, amount: str) -> None:
    asyncio.run(_reserve_and_hang(conninfo, Decimal(amount)))


async def _reserve_and_hang(conninfo: str, amount: Decimal) -> None:
    async with BudgetLedger(conninfo, BudgetSettings(per_day=Decimal(1), reservation_seconds=1.5)) as ledger:
        assert isinstance(await ledger.reserve(SpendScope("genesys-gw"), amount, day=DAY), Reservation)
        with psycopg.connect(conninfo, autocommit=True) as conn:
            conn.execute("INSERT INTO marker VALUES ('victim')")
        await asyncio.sleep(90)


def test_concurrent_reservations_never_exceed_the_budget(pg_connect) -> None:
    conninfo = conninfo_of(pg_connect)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("CREATE TABLE granted (worker text, n integer)")
    run_processes(
        [SPAWN.Process(target=reserve_until_denied, args=(conninfo, f"w{n}", "0.07", "1.00")) for n in range(4)]
    )
    with psycopg.connect(conninfo) as conn:
        total = conn.execute("SELECT sum(n), count(*) FROM granted").fetchone()
        reserved = conn.execute("SELECT sum(amount) FROM genesys_llm_spend").fetchone()
    assert total == (14, 4)  # floor(1.00 / 0.07), whatever the interleaving of 160 attempts
    assert reserved == (Decimal("0.98"),)


def test_a_killed_workers_reservation_expires(pg_connect) -> None:
    conninfo = conninfo_of(pg_connect)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("CREATE TABLE marker (worker text PRIMARY KEY)")
    victim = SPAWN.Process(target=reserve_and_hang, args=(conninfo, "0.9"))
    victim.start()
    try:
        wait_for_marker(conninfo, "victim")
        assert victim.pid is not None

        async def scenario() -> None:
            async with BudgetLedger(conninfo, BudgetSettings(per_day=Decimal(1))) as ledger:
                denied = await ledger.reserve(SpendScope("genesys-gw"), Decimal("0.5"), day=DAY)
                assert isinstance(denied, BudgetDenied) and denied.committed == Decimal("0.9")
                assert "per_day of 1 USD would be exceeded" in denied.message
                os.kill(victim.pid, signal.SIGKILL)
                await asyncio.sleep(1.6)
                assert isinstance(await ledger.reserve(SpendScope("genesys-gw"), Decimal("0.5"), day=DAY), Reservation)

        asyncio.run(scenario())
    finally:
        victim.kill()
        victim.join(10)


async def test_settle_frees_the_difference_and_the_next_day_is_fresh(pg_connect) -> None:
    conninfo = conninfo_of(pg_connect)
    scope = SpendScope("genesys-gw", dag_run="backfill-1", task="enrich/0")
    async with BudgetLedger(conninfo, BudgetSettings(per_day=Decimal("1.0"))) as ledger:
        first = await ledger.reserve(scope, Decimal("0.6"), day=DAY)
        assert isinstance(first, Reservation)
        assert isinstance(await ledger.reserve(scope, Decimal("0.6"), day=DAY), BudgetDenied)
        await ledger.settle(first, Decimal("0.1"))  # the real cost: 0.5 of the worst case comes back
        second = await ledger.reserve(scope, Decimal("0.6"), day=DAY)
        assert isinstance(second, Reservation)
        assert (await ledger.committed(scope, day=DAY))["per_day"] == Decimal("0.7")
        await ledger.release(second)  # never sent: costs nothing
        assert (await ledger.committed(scope, day=DAY))["per_day"] == Decimal("0.1")
        assert isinstance(await ledger.reserve(scope, Decimal("0.95"), day=DAY), BudgetDenied)
        assert isinstance(await ledger.reserve(scope, Decimal("0.95"), day=DAY + timedelta(days=1)), Reservation)
        # Without an explicit day the database's UTC date counts (one clock for the fleet).
        today = await ledger.reserve(scope, Decimal("0.2"))
        assert isinstance(today, Reservation)
        assert (await ledger.committed(scope, day=today.day))["per_day"] >= Decimal("0.2")


async def test_task_and_dag_run_budgets_hold_alongside_the_daily_one(pg_connect) -> None:
    conninfo = conninfo_of(pg_connect)
    settings = BudgetSettings(per_task=Decimal("0.3"), per_dag_run=Decimal("0.5"), per_day=Decimal("10"))
    async with BudgetLedger(conninfo, settings) as ledger:
        task_a = SpendScope("genesys-gw", dag_run="run-1", task="enrich/0")
        task_b = SpendScope("genesys-gw", dag_run="run-1", task="enrich/1")
        assert isinstance(await ledger.reserve(task_a, Decimal("0.2"), day=DAY), Reservation)
        denied = await ledger.reserve(task_a, Decimal("0.2"), day=DAY)
        assert isinstance(denied, BudgetDenied) and denied.level == "per_task"
        assert isinstance(await ledger.reserve(task_b, Decimal("0.2"), day=DAY), Reservation)
        denied = await ledger.reserve(task_b, Decimal("0.2"), day=DAY)
        assert isinstance(denied, BudgetDenied) and denied.level == "per_dag_run"
        other_run = SpendScope("genesys-gw", dag_run="run-2", task="enrich/0")
        assert isinstance(await ledger.reserve(other_run, Decimal("0.2"), day=DAY), Reservation)
        # Another connection has budgets of its own.
        assert isinstance(
            await ledger.reserve(SpendScope("other-gw", "run-1", "enrich/0"), Decimal("0.3"), day=DAY), Reservation
        )
        with pytest.raises(ValueError):
            await ledger.reserve(task_a, Decimal("-1"), day=DAY)
