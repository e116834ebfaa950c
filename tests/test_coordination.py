"""Fleet-wide gateway coordination: several OS processes share one gate in a real Postgres, and
the emulator enforces an organisation-wide quota across clients.

Each worker process records the database-clock interval it spent inside every slot (taken after
the grant committed and before the release), so the greatest overlap of those intervals is a
lower bound of what the gate let run at once: it must never exceed the limit.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
import subprocess
import sys
import time
from datetime import datetime

import httpx
import psycopg
import pytest
from psycopg.conninfo import make_conninfo

from airflow_provider_genesys_llm.client import GatewayClient, GatewayConfig, GatewayRateLimitError
from airflow_provider_genesys_llm.client.auth import TOKEN_CACHE
from airflow_provider_genesys_llm.coordination import (
    CoordinationSettings,
    CoordinationUnavailableError,
    GatewayCoordinator,
    SlotTimeoutError,
)
from airflow_provider_genesys_llm.coordination.policy import Aimd, Bucket, grant

SPAWN = multiprocessing.get_context("spawn")
CONN_ID = "genesys-gw"
PROCESS_TIMEOUT = 90.0


def conninfo_of(pg_connect) -> str:
    """The test schema's conninfo, for child processes (they open their own connections)."""
    return make_conninfo(pg_connect.server.conninfo, options=f"-c search_path={pg_connect.schema},public")


def gate_settings(**overrides: object) -> CoordinationSettings:
    values: dict[str, object] = {
        "enabled": True,
        "postgres_conn_id": "coordination_db",
        "max_concurrency": 3,
        "requests_per_minute": None,
        "lease_seconds": 2.0,
        "min_backfill_share": 0.25,
        "recovery_window_seconds": 60.0,
        "poll_max_seconds": 0.3,
    }
    return CoordinationSettings(**{**values, **overrides})


def create_probe_tables(conninfo: str) -> None:
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS probe (worker text, priority text, started timestamptz,"
            " ended timestamptz, waited double precision)"
        )
        conn.execute("CREATE TABLE IF NOT EXISTS marker (worker text PRIMARY KEY)")


# --- worker processes (spawned: top-level functions, fresh interpreters) ------------------


def hammer(conninfo: str, settings_json: str, worker: str, priority: str, tasks: int, slots: int, hold: float) -> None:
    asyncio.run(
        _hammer(conninfo, CoordinationSettings.model_validate_json(settings_json), worker, priority, tasks, slots, hold)
    )


async def _hammer(
    conninfo: str, settings: CoordinationSettings, worker: str, priority: str, tasks: int, slots: int, hold: float
) -> None:
    rows: list[tuple[object, ...]] = []
    async with (
        GatewayCoordinator(conninfo, CONN_ID, settings) as gate,
        await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as probe,
    ):

        async def clock() -> datetime:
            cursor = await probe.execute("SELECT clock_timestamp()")
            row = await cursor.fetchone()
            assert row is not None
            return row[0]

        async def task() -> None:
            for _ in range(slots):
                async with gate.slot(priority, timeout=60) as slot:  # type: ignore[arg-type]
                    started = await clock()
                    await asyncio.sleep(hold)
                    rows.append((worker, priority, started, await clock(), slot.waited_seconds))

        await asyncio.gather(*(task() for _ in range(tasks)))
        async with probe.cursor() as cursor:
            await cursor.executemany("INSERT INTO probe VALUES (%s, %s, %s, %s, %s)", rows)


def hold_and_wait(conninfo: str, settings_json: str, worker: str, slots: int) -> None:
    """Take `slots` slots, say so in `marker`, and keep them (heartbeat running) until killed."""
    asyncio.run(_hold_and_wait(conninfo, CoordinationSettings.model_validate_json(settings_json), worker, slots))


async def _hold_and_wait(conninfo: str, settings: CoordinationSettings, worker: str, slots: int) -> None:
    async with GatewayCoordinator(conninfo, CONN_ID, settings) as gate:
        entered = asyncio.Event()
        count = 0

        async def holder() -> None:
            nonlocal count
            async with gate.slot("backfill", timeout=30):
                count += 1
                if count == slots:
                    entered.set()
                await asyncio.sleep(PROCESS_TIMEOUT)

        holders = [asyncio.create_task(holder()) for _ in range(slots)]
        await asyncio.wait_for(entered.wait(), 30)
        with psycopg.connect(conninfo, autocommit=True) as conn:
            conn.execute("INSERT INTO marker VALUES (%s)", (worker,))
        await asyncio.gather(*holders)


def report_429(conninfo: str, settings_json: str, retry_after: float) -> None:
    asyncio.run(_report_429(conninfo, CoordinationSettings.model_validate_json(settings_json), retry_after))


async def _report_429(conninfo: str, settings: CoordinationSettings, retry_after: float) -> None:
    async with GatewayCoordinator(conninfo, CONN_ID, settings) as gate:
        async with gate.slot("backfill", timeout=10) as slot:
            slot.report(status=429, retry_after=retry_after)


def complete_through_gate(
    conninfo: str, settings_json: str, base_url: str, ws_url: str, worker: str, streams: int, items: int
) -> None:
    asyncio.run(
        _complete_through_gate(
            conninfo, CoordinationSettings.model_validate_json(settings_json), base_url, ws_url, worker, streams, items
        )
    )


async def _complete_through_gate(
    conninfo: str, settings: CoordinationSettings, base_url: str, ws_url: str, worker: str, streams: int, items: int
) -> None:
    """`streams` streams, each wrapping the raw client's `complete` in a slot; no client retries."""
    config = GatewayConfig(
        client_id="emulator-client",
        client_secret="emulator-secret",
        api_base_url=base_url,
        login_base_url=base_url,
        stream_base_url=ws_url,
        max_concurrency=streams,
        max_attempts=1,
    )
    async with GatewayClient(config) as client, GatewayCoordinator(conninfo, CONN_ID, settings) as gate:

        async def stream(n: int) -> None:
            for item in range(items):
                request = client.request(messages=[{"role": "user", "content": f"{worker} stream {n} item {item}"}])
                async with gate.slot("backfill", timeout=60):
                    await client.complete(request)  # a 429 would fail the worker, and the test

        await asyncio.gather(*(stream(n) for n in range(streams)))


# --- helpers of the parent ----------------------------------------------------------------


def run_processes(processes: list[multiprocessing.process.BaseProcess], timeout: float = PROCESS_TIMEOUT) -> None:
    for process in processes:
        process.start()
    deadline = time.monotonic() + timeout
    try:
        for process in processes:
            process.join(max(0.0, deadline - time.monotonic()))
        assert all(p.exitcode == 0 for p in processes), [p.exitcode for p in processes]
    finally:
        for process in processes:
            if process.is_alive():
                process.kill()
                process.join(5)


def max_overlap(conninfo: str, where: str = "true") -> int:
    """The most probe intervals open at one instant (an end and a start at the same instant do not overlap)."""
    with psycopg.connect(conninfo) as conn:
        row = conn.execute(
            "SELECT coalesce(max(open), 0) FROM (SELECT sum(delta) OVER (ORDER BY at, delta ROWS UNBOUNDED PRECEDING)"
            " AS open FROM (SELECT started AS at, 1 AS delta FROM probe WHERE "
            + where
            + " UNION ALL SELECT ended, -1 FROM probe WHERE "
            + where
            + ") AS events) AS running"
        ).fetchone()
    assert row is not None
    return int(row[0])


def wait_for_marker(conninfo: str, worker: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    with psycopg.connect(conninfo, autocommit=True) as conn:
        while conn.execute("SELECT 1 FROM marker WHERE worker = %s", (worker,)).fetchone() is None:
            assert time.monotonic() < deadline, f"worker {worker} never took its slots"
            time.sleep(0.05)


# --- the policy, as pure arithmetic -------------------------------------------------------


def test_grant_serves_interactive_first_and_keeps_backfill_share() -> None:
    # 4 slots, share 1: interactive may take 3 while backfill demands, backfill keeps 1.
    assert grant(4, 0.25, {}, {"interactive": 9, "backfill": 9}, {"interactive": 9, "backfill": 9}, 100) == {
        "interactive": 3,
        "backfill": 1,
    }
    # Backfill alone fills everything; with interactive waiting elsewhere it stops at its share.
    assert grant(4, 0.25, {}, {"backfill": 9}, {"backfill": 9}, 100) == {"interactive": 0, "backfill": 4}
    assert grant(4, 0.25, {"backfill": 1}, {"interactive": 2, "backfill": 9}, {"backfill": 9}, 100)["backfill"] == 0
    # No backfill demand: interactive may use every slot; a share of 0 lets it starve backfill.
    assert grant(4, 0.25, {}, {"interactive": 9}, {"interactive": 9}, 100)["interactive"] == 4
    assert grant(4, 0.0, {}, {"interactive": 9, "backfill": 9}, {"interactive": 9, "backfill": 9}, 100) == {
        "interactive": 4,
        "backfill": 0,
    }
    # The rate bucket and the limit both cap grants.
    assert sum(grant(4, 0.25, {}, {"backfill": 9}, {"backfill": 9}, 2).values()) == 2
    assert sum(grant(4, 0.25, {"interactive": 4}, {"backfill": 9}, {"backfill": 9}, 9).values()) == 0


def test_aimd_halves_once_per_pause_and_recovers_one_per_window() -> None:
    aimd = Aimd(ceiling=8, window_seconds=2.0)
    assert aimd.decreased(8.0, already_paused=False) == 4.0
    assert aimd.decreased(4.0, already_paused=True) == 4.0
    assert aimd.decreased(1.0, already_paused=False) == 1.0
    assert aimd.recovered(4.0, since_change=5.0) == (6.0, 4.0)  # two whole windows used, 1 s carried
    assert aimd.recovered(7.0, since_change=100.0)[0] == 8.0


def test_bucket_never_lets_a_sliding_minute_exceed_the_quota() -> None:
    for quota in (2, 59, 60, 300, 1000):
        bucket = Bucket(quota)
        assert bucket.capacity + bucket.rate * 60 <= quota + 1e-9, quota


def test_settings_name_the_missing_database_and_reject_bad_values() -> None:
    assert CoordinationSettings().enabled is False  # the default stays per process: nothing to set up
    with pytest.raises(ValueError, match="postgres_conn_id"):
        CoordinationSettings(enabled=True)
    for bad in ({"max_concurrency": 0}, {"min_backfill_share": 1.5}, {"lease_seconds": 0.1}, {"unknown": 1}):
        with pytest.raises(ValueError):
            CoordinationSettings(**bad)  # type: ignore[arg-type]


def test_the_settings_and_prices_import_without_psycopg() -> None:
    """The client reads a connection's coordination settings even without the postgres extra."""
    code = (
        "import sys\n"
        "from airflow_provider_genesys_llm.coordination import CoordinationSettings, PriceTable, BudgetSettings\n"
        "assert 'psycopg' not in sys.modules, sorted(m for m in sys.modules if 'psycopg' in m)\n"
        "from airflow_provider_genesys_llm.coordination import GatewayCoordinator\n"
        "assert 'psycopg' in sys.modules\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr[-2000:]


async def test_an_unreachable_database_fails_fast_with_a_typed_error_without_the_password() -> None:
    gate = GatewayCoordinator(
        "host=/nonexistent-socket-dir port=1 user=u password=hunter2-secret dbname=d", CONN_ID, gate_settings()
    )
    started = time.monotonic()
    with pytest.raises(CoordinationUnavailableError, match="a retry reconnects") as failure:
        async with gate.slot("interactive", timeout=5):
            pass
    assert time.monotonic() - started < 5
    assert "hunter2" not in str(failure.value) and failure.value.retryable
    await gate.aclose()


# --- several OS processes against one gate ------------------------------------------------


def test_max_in_flight_never_exceeds_the_shared_limit(pg_connect) -> None:
    conninfo = conninfo_of(pg_connect)
    create_probe_tables(conninfo)
    settings = gate_settings(max_concurrency=3).model_dump_json()
    workers = [
        SPAWN.Process(target=hammer, args=(conninfo, settings, f"w{n}", "backfill", 4, 5, 0.05)) for n in range(4)
    ]
    run_processes(workers)
    with psycopg.connect(conninfo) as conn:
        assert conn.execute("SELECT count(*) FROM probe").fetchone() == (80,)
        assert conn.execute("SELECT count(*) FROM genesys_llm_gate_leases").fetchone() == (0,)
    # Never above the limit, and the limit was really used (16 tasks wanted far more).
    assert max_overlap(conninfo) == 3


def test_a_killed_process_slots_come_back_within_the_lease(pg_connect) -> None:
    conninfo = conninfo_of(pg_connect)
    create_probe_tables(conninfo)
    settings = gate_settings(max_concurrency=3, lease_seconds=1.5)
    holder = SPAWN.Process(target=hold_and_wait, args=(conninfo, settings.model_dump_json(), "holder", 3))
    holder.start()
    try:
        wait_for_marker(conninfo, "holder")

        async def blocked_then_recovered() -> float:
            async with GatewayCoordinator(conninfo, CONN_ID, settings) as gate:
                await asyncio.sleep(2 * settings.lease_seconds)  # longer than a lease: the heartbeat renews
                with pytest.raises(SlotTimeoutError, match="max_concurrency"):
                    async with gate.slot("interactive", timeout=0.5):
                        pass
                assert holder.pid is not None
                os.kill(holder.pid, signal.SIGKILL)
                killed = time.monotonic()

                async def take() -> None:
                    async with gate.slot("interactive", timeout=10):
                        await asyncio.sleep(0.2)

                await asyncio.gather(take(), take(), take())
                return time.monotonic() - killed - 0.2

        waited = asyncio.run(blocked_then_recovered())
    finally:
        holder.kill()
        holder.join(10)
    assert holder.exitcode == -signal.SIGKILL
    assert waited <= settings.lease_seconds + 1.0


def test_interactive_is_served_before_backfill_which_keeps_its_share(pg_connect) -> None:
    conninfo = conninfo_of(pg_connect)
    create_probe_tables(conninfo)
    settings = gate_settings(max_concurrency=4, min_backfill_share=0.25).model_dump_json()
    backfill = SPAWN.Process(target=hammer, args=(conninfo, settings, "b", "backfill", 8, 30, 0.05))
    interactive = SPAWN.Process(target=hammer, args=(conninfo, settings, "i", "interactive", 8, 6, 0.05))
    backfill.start()
    try:
        time.sleep(2.0)  # backfill alone: it fills the whole limit
        run_processes([interactive])
        backfill.join(PROCESS_TIMEOUT)
        assert backfill.exitcode == 0
    finally:
        if backfill.is_alive():
            backfill.kill()
            backfill.join(5)
    with psycopg.connect(conninfo) as conn:
        first, last = conn.execute("SELECT min(started), max(ended) FROM probe WHERE worker = 'i'").fetchone()
        within = "started >= %s AND ended <= %s"
        counts = dict(
            conn.execute(
                "SELECT priority, count(*) FROM probe WHERE " + within + " GROUP BY priority", (first, last)
            ).fetchall()
        )
        waits = dict(
            conn.execute(
                "SELECT priority, avg(waited) FROM probe WHERE " + within + " GROUP BY priority", (first, last)
            ).fetchall()
        )
    assert max_overlap(conninfo) <= 4
    assert max_overlap(conninfo, "priority = 'backfill'") == 4  # alone, backfill used all slots
    # While interactive work waited, it got about three slots in four; backfill kept its one.
    assert counts["interactive"] >= 2 * counts.get("backfill", 0)
    assert counts.get("backfill", 0) >= 3
    assert waits["interactive"] < waits["backfill"]


def test_a_429_halves_the_fleet_limit_and_pauses_every_worker(pg_connect) -> None:
    conninfo = conninfo_of(pg_connect)
    settings = gate_settings(max_concurrency=8, recovery_window_seconds=1.0)

    async def scenario() -> None:
        async with GatewayCoordinator(conninfo, CONN_ID, settings) as gate:
            async with gate.slot("interactive", timeout=10) as early:
                # Another process's stream hits the quota: the whole fleet halves and pauses.
                run_processes([SPAWN.Process(target=report_429, args=(conninfo, settings.model_dump_json(), 1.5))])
                snapshot = await gate.snapshot()
                assert snapshot.limit == 4 and snapshot.paused_seconds > 0.5
                # This stream, sent before the pause, got its 429 from the same overload: no second halving,
                # and its shorter Retry-After does not shorten the pause.
                early.report(status=429, retry_after=0.1)
            assert (await gate.snapshot()).limit == 4
            async with gate.slot("interactive", timeout=10) as later:
                pass
            assert later.waited_seconds >= snapshot.paused_seconds - 0.3  # this worker was paused too
            await asyncio.sleep(1.2)
            assert 5 <= (await gate.snapshot()).limit <= 6  # +1 per quiet window
            await asyncio.sleep(4.0)
            assert (await gate.snapshot()).limit == 8  # back to the ceiling, never above it

    asyncio.run(scenario())


def test_the_shared_rate_bucket_paces_all_processes(pg_connect) -> None:
    conninfo = conninfo_of(pg_connect)
    create_probe_tables(conninfo)
    settings = gate_settings(max_concurrency=50, requests_per_minute=600)
    workers = [
        SPAWN.Process(target=hammer, args=(conninfo, settings.model_dump_json(), f"w{n}", "backfill", 4, 5, 0))
        for n in range(2)
    ]
    run_processes(workers)
    bucket = Bucket(600)
    with psycopg.connect(conninfo) as conn:
        starts = [row[0] for row in conn.execute("SELECT started FROM probe ORDER BY started")]
    assert len(starts) == 40
    for index, started in enumerate(starts):
        earliest = (index + 1 - bucket.capacity) / bucket.rate
        assert (started - starts[0]).total_seconds() >= earliest - 0.25, index


def test_two_processes_through_the_gate_stay_within_the_emulators_quota(pg_connect, emulator) -> None:
    conninfo = conninfo_of(pg_connect)
    emulator.configure(org_max_concurrent_streams=4, completion_tokens=20, token_delay=0.01)
    settings = gate_settings(max_concurrency=4).model_dump_json()
    run_processes(
        [
            SPAWN.Process(
                target=complete_through_gate,
                args=(conninfo, settings, emulator.base_url, emulator.ws_url, f"w{n}", 6, 4),
            )
            for n in range(2)
        ]
    )
    counters = emulator.counters()
    assert counters["max_concurrent_streams"] == 4  # 12 streams wanted more; the gate held them at the quota
    assert counters["quota_429s"] == 0
    assert counters["completions_paid"] == 48 and counters["paid_twice_prompts"] == 0


# --- the emulator's organisation-wide quota -----------------------------------------------


def _token(emulator, client_id: str, secret: str) -> str:
    answer = httpx.post(
        emulator.base_url + "/oauth/token",
        auth=(client_id, secret),
        data={"grant_type": "client_credentials"},
        timeout=10,
    )
    answer.raise_for_status()
    return answer.json()["access_token"]


def _chat_body(text: str) -> dict[str, object]:
    return {"messages": [{"role": "user", "content": text}], "params": {"model_id": "genesys-llm-v2"}}


async def test_the_ninth_stream_across_two_clients_gets_429_with_retry_after(emulator) -> None:
    emulator.configure(org_max_concurrent_streams=8, completion_tokens=20, token_delay=0.05)
    tokens = [_token(emulator, "id", "secret"), _token(emulator, "emulator-client", "emulator-secret")]
    url = emulator.base_url + "/api/v2/ai/generations/chat/completions"
    async with httpx.AsyncClient(timeout=30) as http:
        opened = []
        for n in range(8):
            request = http.build_request(
                "POST",
                url,
                json=_chat_body(f"item {n}"),
                headers={"Authorization": f"Bearer {tokens[n % 2]}", "X-Request-Id": f"req-{n}"},
            )
            response = await http.send(request, stream=True)
            assert response.status_code == 200
            opened.append(response)
        ninth = await http.post(
            url, json=_chat_body("item 8"), headers={"Authorization": f"Bearer {tokens[0]}", "X-Request-Id": "req-8"}
        )
        assert ninth.status_code == 429
        assert ninth.headers["Retry-After"] == "1"
        assert ninth.json()["code"] == "too.many.requests"
        for response in opened:
            body = (await response.aread()).decode()
            assert "[DONE]" in body
            await response.aclose()
        after = await http.post(
            url, json=_chat_body("item 8"), headers={"Authorization": f"Bearer {tokens[1]}", "X-Request-Id": "req-8"}
        )
        assert after.status_code == 200
    counters = emulator.counters()
    assert counters["max_concurrent_streams"] == 8
    assert counters["quota_429s"] == 1
    assert counters["paid_by_request_id"] == {f"req-{n}": 1 for n in range(9)}  # the refusal was free
    assert counters["completions_paid"] == 9 and counters["paid_twice_prompts"] == 0


async def test_websocket_streams_share_the_quota_and_a_refused_request_is_rate_limited(emulator) -> None:
    TOKEN_CACHE.clear()
    emulator.configure(org_max_concurrent_streams=2, completion_tokens=20, token_delay=0.05)
    urls = {
        "api_base_url": emulator.base_url,
        "login_base_url": emulator.base_url,
        "stream_base_url": emulator.ws_url,
        "max_attempts": 1,
    }
    first_config = GatewayConfig(client_id="emulator-client", client_secret="emulator-secret", **urls)
    async with (
        GatewayClient(first_config) as first,
        GatewayClient(GatewayConfig(client_id="id", client_secret="secret", **urls)) as second,
    ):
        running = [
            asyncio.create_task(client.complete(client.request(messages=[{"role": "user", "content": f"x{n}"}])))
            for n, client in enumerate((first, second))
        ]
        await asyncio.sleep(0.3)
        with pytest.raises(GatewayRateLimitError) as refused:
            await first.complete(first.request(messages=[{"role": "user", "content": "third"}]))
        assert refused.value.retry_after == 1.0
        results = await asyncio.wait_for(asyncio.gather(*running), 30)
    assert all(result.finish_reason == "stop" for result in results)
    counters = emulator.counters()
    assert counters["max_concurrent_streams"] == 2 and counters["quota_429s"] == 1
    assert counters["completions_paid"] == 2


async def test_requests_per_minute_quota_and_paid_twice_counters(emulator) -> None:
    emulator.configure(org_requests_per_minute=3)
    token = _token(emulator, "id", "secret")
    url = emulator.base_url + "/api/v2/ai/generations/chat/completions"
    async with httpx.AsyncClient(timeout=30) as http:
        statuses = []
        for _ in range(4):  # the same request id and prompt three times: paid three times
            answer = await http.post(
                url, json=_chat_body("same prompt"), headers={"Authorization": f"Bearer {token}", "X-Request-Id": "dup"}
            )
            statuses.append(answer.status_code)
        assert statuses == [200, 200, 200, 429]
        assert 1 <= int(answer.headers["Retry-After"]) <= 60
    counters = emulator.counters()
    assert counters["paid_by_request_id"] == {"dup": 3}
    assert counters["paid_twice_request_ids"] == 1 and counters["paid_twice_prompts"] == 1
    assert list(counters["paid_by_prompt_hash"].values()) == [3]
