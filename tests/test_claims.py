"""Item claims across OS processes on a real Postgres: each item is paid for once, however many
deliveries of the same work run at once, and a killed (or stalled) claimer's items move on."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import random
import signal
import time
from multiprocessing.synchronize import Barrier

import psycopg
from test_coordination import PROCESS_TIMEOUT, conninfo_of, run_processes, wait_for_marker

from airflow_provider_genesys_llm.coordination import ItemClaims

SPAWN = multiprocessing.get_context("spawn")
NAMESPACE = "results"
IDS = [f"item-{n:04d}" for n in range(200)]


def create_tables(conninfo: str) -> None:
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("CREATE TABLE paid (item_id text, worker text)")
        conn.execute("CREATE TABLE marker (worker text PRIMARY KEY)")
        conn.execute("CREATE TABLE go (worker text PRIMARY KEY)")
        conn.execute("CREATE TABLE lost (worker text, item_id text)")


# --- worker processes ---------------------------------------------------------------------


def claim_and_pay(conninfo: str, worker: str, order: str, barrier: Barrier) -> None:
    """One delivery of the whole batch (as a duplicate task would run it): claim, pay, complete."""
    asyncio.run(_claim_and_pay(conninfo, worker, order, barrier))


async def _claim_and_pay(conninfo: str, worker: str, order: str, barrier: Barrier) -> None:
    ids = {"up": IDS, "down": IDS[::-1], "shuffled": random.sample(IDS, len(IDS))}[order]
    async with (
        ItemClaims(conninfo, NAMESPACE, "dag/run-1/enrich/0", lease_seconds=2.0) as claims,
        await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as db,
    ):
        await claims.start()
        barrier.wait(30)  # all deliveries start together, as a redelivered task would race the first
        for start in range(0, len(ids), 20):
            outcome = await claims.claim(ids[start : start + 20], wait=20)
            assert not outcome.busy, outcome.busy  # waited until the other deliveries finished them
            async with db.cursor() as cursor:
                await cursor.executemany("INSERT INTO paid VALUES (%s, %s)", [(i, worker) for i in outcome.granted])
            await asyncio.sleep(0.02 * len(outcome.granted))  # the completions being paid for
            assert await claims.complete(outcome.granted) == ()


def claim_then_wait(conninfo: str, worker: str, count: int, lease: float) -> None:
    """Claim `count` items, say so in `marker`; once `go` names this worker, complete them and
    record the ids whose claim was lost meanwhile."""
    asyncio.run(_claim_then_wait(conninfo, worker, count, lease))


async def _claim_then_wait(conninfo: str, worker: str, count: int, lease: float) -> None:
    async with ItemClaims(conninfo, NAMESPACE, f"dag/run-1/enrich/{worker}", lease_seconds=lease) as claims:
        outcome = await claims.claim(IDS[:count])
        assert len(outcome.granted) == count
        with psycopg.connect(conninfo, autocommit=True) as conn:
            conn.execute("INSERT INTO marker VALUES (%s)", (worker,))
            deadline = time.monotonic() + PROCESS_TIMEOUT
            while conn.execute("SELECT 1 FROM go WHERE worker = %s", (worker,)).fetchone() is None:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.05)
            lost = await claims.complete(outcome.granted)
            with conn.cursor() as cursor:
                cursor.executemany("INSERT INTO lost VALUES (%s, %s)", [(worker, item) for item in lost])


# --- tests --------------------------------------------------------------------------------


def test_three_deliveries_of_the_same_batch_pay_each_item_once(pg_connect) -> None:
    conninfo = conninfo_of(pg_connect)
    create_tables(conninfo)
    barrier = SPAWN.Barrier(3)
    run_processes(
        [
            SPAWN.Process(target=claim_and_pay, args=(conninfo, order, order, barrier))
            for order in ("up", "down", "shuffled")
        ]
    )
    with psycopg.connect(conninfo) as conn:
        paid = conn.execute("SELECT item_id, count(*) FROM paid GROUP BY item_id").fetchall()
        workers = conn.execute("SELECT count(DISTINCT worker) FROM paid").fetchone()
        states = conn.execute("SELECT status, count(*) FROM genesys_llm_item_claims GROUP BY status").fetchall()
    assert sorted(item for item, _ in paid) == IDS  # every item paid for ...
    assert {count for _, count in paid} == {1}  # ... exactly once
    assert workers == (3,)  # and the deliveries really overlapped
    assert states == [("done", 200)]


def test_a_killed_claimers_items_are_taken_over_after_the_lease(pg_connect) -> None:
    conninfo = conninfo_of(pg_connect)
    create_tables(conninfo)
    lease = 1.5
    victim = SPAWN.Process(target=claim_then_wait, args=(conninfo, "victim", 50, lease))
    victim.start()
    try:
        wait_for_marker(conninfo, "victim")

        async def scenario() -> float:
            async with ItemClaims(conninfo, NAMESPACE, "dag/run-1/enrich/retry", lease_seconds=lease) as claims:
                await asyncio.sleep(2 * lease)  # the victim's heartbeat keeps its claims alive
                outcome = await claims.claim(IDS[:60])
                assert len(outcome.busy) == 50 and len(outcome.granted) == 10
                assert victim.pid is not None
                os.kill(victim.pid, signal.SIGKILL)
                killed = time.monotonic()
                outcome = await claims.claim(IDS[:50], wait=10)
                assert sorted(outcome.granted) == IDS[:50] and sorted(outcome.taken_over) == IDS[:50]
                await claims.complete(IDS[:60])
                return time.monotonic() - killed

        waited = asyncio.run(scenario())
    finally:
        victim.kill()
        victim.join(10)
    assert waited <= lease + 1.0
    with psycopg.connect(conninfo) as conn:
        assert conn.execute(
            "SELECT min(attempts), max(attempts) FROM genesys_llm_item_claims WHERE item_id = ANY(%s)", (IDS[:50],)
        ).fetchone() == (2, 2)


def test_a_stalled_claimer_learns_its_items_were_taken_over(pg_connect) -> None:
    conninfo = conninfo_of(pg_connect)
    create_tables(conninfo)
    lease = 1.0
    stalled = SPAWN.Process(target=claim_then_wait, args=(conninfo, "stalled", 10, lease))
    stalled.start()
    try:
        wait_for_marker(conninfo, "stalled")
        assert stalled.pid is not None
        os.kill(stalled.pid, signal.SIGSTOP)  # a worker frozen longer than its lease (GC pause, swap, ...)

        async def take_over() -> tuple[str, ...]:
            async with ItemClaims(conninfo, NAMESPACE, "dag/run-2/enrich/0", lease_seconds=lease) as claims:
                outcome = await claims.claim(IDS[:10], wait=10)
                await claims.complete(outcome.granted)
                return outcome.taken_over

        assert sorted(asyncio.run(take_over())) == IDS[:10]
        os.kill(stalled.pid, signal.SIGCONT)
        with psycopg.connect(conninfo, autocommit=True) as conn:
            conn.execute("INSERT INTO go VALUES ('stalled')")
        stalled.join(PROCESS_TIMEOUT)
        assert stalled.exitcode == 0
    finally:
        if stalled.is_alive():
            stalled.kill()
            stalled.join(10)
    with psycopg.connect(conninfo) as conn:
        lost = [row[0] for row in conn.execute("SELECT item_id FROM lost ORDER BY item_id")]
    assert lost == IDS[:10]  # the resumed worker is told; it does not mark them done a second time


async def test_a_retry_of_the_same_task_waits_and_a_release_hands_items_over(pg_connect) -> None:
    conninfo = conninfo_of(pg_connect)
    owner = "dag/run-1/enrich/0"  # the same task-instance key: still two deliveries
    async with (
        ItemClaims(conninfo, NAMESPACE, owner, lease_seconds=1.0) as first,
        ItemClaims(conninfo, NAMESPACE, owner, lease_seconds=1.0) as second,
    ):
        assert (await first.claim(IDS[:4])).granted == tuple(IDS[:4])
        await asyncio.sleep(2.5)  # beyond the lease: the heartbeat renewed it
        outcome = await second.claim(IDS[:4])
        assert outcome.busy == tuple(IDS[:4]) and outcome.granted == ()
        assert await first.complete(IDS[:2]) == ()
        assert await first.release(IDS[2:4]) == ()
        outcome = await second.claim(IDS[:4])
        assert outcome.done == tuple(IDS[:2]) and outcome.granted == tuple(IDS[2:4]) and outcome.taken_over == ()
        assert second.held == frozenset(IDS[2:4])
        # Completing what one does not hold is refused and reported, never recorded.
        assert await first.complete(IDS[2:4]) == tuple(IDS[2:4])
    async with ItemClaims(conninfo, NAMESPACE, owner) as third:  # closing released the unfinished claims
        assert (await third.claim(IDS[2:4])).granted == tuple(IDS[2:4])
