"""W worker processes share one gateway quota through the Postgres coordinator.

The emulator runs in its own process with an organisation-wide quota of Q concurrent streams;
pgserver holds the shared state. Every worker gets the whole item list (each starting at a
different offset, as duplicated or overlapping deliveries would), claims items before paying
for them (`ItemClaims`), and runs `--streams` streams, each completion wrapped in a coordinator
slot (`GatewayCoordinator`) around the raw `GatewayClient.complete`. The client retries nothing
itself (`max_attempts=1`): a 429 is reported to the slot (the fleet halves its limit and
pauses) and the item is tried again through the gate.

Prints one line:
`fleet: workers=W items=N wall_s=S quota=Q utilization=U max_inflight=M rate_429=R duplicates_paid=D`
where utilization is the measured throughput over the quota-bound throughput (quota / mean
completion latency, measured in the same run), and max_inflight, rate_429 and duplicates_paid
come from the emulator's counters. Run: `.venv/bin/python bench/fleet_coordination.py`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import statistics
import sys
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from multiprocessing.synchronize import Barrier
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _emulator_process import emulator_process  # noqa: E402
from _pgserver_process import pgserver_conninfo  # noqa: E402

from airflow_provider_genesys_llm.client import GatewayClient, GatewayConfig, GatewayRateLimitError  # noqa: E402
from airflow_provider_genesys_llm.coordination import (  # noqa: E402
    ClaimOutcome,
    CoordinationSettings,
    GatewayCoordinator,
    ItemClaims,
    Slot,
)

CONN_ID = "genesys_llm_default"
SLOT_TIMEOUT = 300.0
WORKER_TIMEOUT = 900.0


def prompt(item: int) -> str:
    return f"Summarise transcript {item}: the customer calls about invoice {item * 37} and a late delivery."


class PerProcessGate:
    """Today's default, for comparison: no shared gate, only each client's own `max_concurrency`."""

    def __init__(self, settings: CoordinationSettings) -> None:
        self.settings = settings

    @asynccontextmanager
    async def slot(self, priority: str, timeout: float) -> AsyncIterator[Slot]:
        slot = Slot(uuid.uuid4(), "backfill", 0.0)
        yield slot
        if slot.status == 429:  # nobody else pauses: this stream alone waits out its Retry-After
            await asyncio.sleep(slot.retry_after or self.settings.default_retry_after_seconds)


@dataclass(frozen=True)
class Job:
    """What every worker process is told (picklable: it crosses the spawn boundary)."""

    conninfo: str
    base_url: str
    ws_url: str
    settings_json: str
    workers: int
    items: int
    streams: int
    claims: bool


class NoClaims:
    """Without claims every delivery pays for every item it is given: what duplicates cost."""

    async def claim(self, item_ids: list[str], *, wait: float) -> ClaimOutcome:
        return ClaimOutcome(tuple(item_ids) if not wait else (), (), ())

    async def complete(self, item_ids: list[str]) -> tuple[str, ...]:
        return ()


def worker(job: Job, index: int, barrier: Barrier, results: Any) -> None:
    results.put(asyncio.run(_worker(job, index, barrier)))


async def _worker(job: Job, index: int, barrier: Barrier) -> dict[str, Any]:
    settings = CoordinationSettings.model_validate_json(job.settings_json)
    config = GatewayConfig(
        client_id="emulator-client",
        client_secret="emulator-secret",
        api_base_url=job.base_url,
        login_base_url=job.base_url,
        stream_base_url=job.ws_url,
        max_concurrency=job.streams,
        requests_per_minute=1_000_000,
        max_attempts=1,
    )
    offset = index * job.items // job.workers
    order = [f"item-{(offset + n) % job.items:06d}" for n in range(job.items)]
    latencies: list[float] = []
    shared = GatewayCoordinator(job.conninfo, CONN_ID, settings) if settings.enabled else None
    gate = shared or PerProcessGate(settings)
    item_claims = ItemClaims(job.conninfo, "bench", f"bench/worker-{index}", lease_seconds=10)
    claims = item_claims if job.claims else NoClaims()
    async with GatewayClient(config) as client, item_claims:
        await client.status()  # token and connections warm before the clock starts
        if shared is not None:
            await shared.start()
        barrier.wait(60)
        started = time.time()
        queue: asyncio.Queue[str | None] = asyncio.Queue(maxsize=2 * job.streams)

        async def produce() -> None:
            taken: set[str] = set()
            for wait in (0.0, SLOT_TIMEOUT):  # first skip items others hold, then wait for the rest
                pending = [item_id for item_id in order if item_id not in taken]
                for start in range(0, len(pending), job.streams):
                    outcome = await claims.claim(pending[start : start + job.streams], wait=wait)
                    taken.update(outcome.granted)
                    for item_id in outcome.granted:
                        await queue.put(item_id)
            for _ in range(job.streams):
                await queue.put(None)

        async def stream() -> None:
            while (item_id := await queue.get()) is not None:
                request = client.request(messages=[{"role": "user", "content": prompt(int(item_id[5:]))}])
                while True:
                    async with gate.slot("backfill", timeout=SLOT_TIMEOUT) as slot:
                        try:
                            result = await client.complete(request)
                        except GatewayRateLimitError as exc:
                            slot.report(status=429, retry_after=exc.retry_after)
                            continue
                    latencies.append(result.total_ms / 1000)
                    break
                await claims.complete([item_id])

        await asyncio.gather(produce(), *(stream() for _ in range(job.streams)))
        finished = time.time()
        if shared is not None:
            await shared.aclose()
    return {"started": started, "finished": finished, "latencies": latencies}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--items", type=int, default=400)
    parser.add_argument("--quota", type=int, default=8, help="the emulator's concurrent-stream quota")
    parser.add_argument("--streams", type=int, default=8, help="streams each worker runs (demand > quota)")
    parser.add_argument("--token-delay", type=float, default=0.01, help="emulator seconds between tokens")
    parser.add_argument("--completion-tokens", type=int, default=40)
    parser.add_argument(
        "--limit",
        type=int,
        default=None,
        help="the coordinator's max_concurrency (default: the quota); above it AIMD finds the quota",
    )
    parser.add_argument(
        "--no-claims",
        action="store_true",
        help="every worker pays for every item (what redelivered work costs without claims)",
    )
    parser.add_argument(
        "--per-process",
        action="store_true",
        help="no coordinator: each worker keeps only its own limit (today's default), for comparison",
    )
    args = parser.parse_args()
    spawn = multiprocessing.get_context("spawn")
    settings = CoordinationSettings(
        enabled=not args.per_process,
        postgres_conn_id="bench",
        max_concurrency=args.limit or args.quota,
        requests_per_minute=None,
        lease_seconds=5.0,
        recovery_window_seconds=5.0,
    )
    with pgserver_conninfo() as conninfo, emulator_process() as emulator:
        emulator.configure(
            org_max_concurrent_streams=args.quota,
            token_delay=args.token_delay,
            completion_tokens=args.completion_tokens,
        )
        barrier = spawn.Barrier(args.workers)
        results = spawn.Queue()
        job = Job(
            conninfo,
            emulator.base_url,
            emulator.ws_url,
            settings.model_dump_json(),
            args.workers,
            args.items,
            args.streams,
            claims=not args.no_claims,
        )
        processes = [spawn.Process(target=worker, args=(job, n, barrier, results)) for n in range(args.workers)]
        for process in processes:
            process.start()
        reports = [results.get(timeout=WORKER_TIMEOUT) for _ in processes]
        for process in processes:
            process.join(30)
        counters = emulator.counters()
    wall = max(r["finished"] for r in reports) - min(r["started"] for r in reports)
    latencies = [value for r in reports for value in r["latencies"]]
    mean_latency = statistics.fmean(latencies)
    # Throughput counts every completion paid for, duplicates included (there are none with claims).
    utilization = (len(latencies) / wall) / (args.quota / mean_latency)
    requests = counters["ws_requests"]
    duplicates = sum(n - 1 for n in counters["paid_by_prompt_hash"].values() if n > 1)
    print(
        f"fleet: workers={args.workers} items={args.items} wall_s={wall:.1f} quota={args.quota} "
        f"utilization={utilization:.2f} max_inflight={counters['max_concurrent_streams']} "
        f"rate_429={counters['quota_429s'] / max(1, requests):.4f} duplicates_paid={duplicates}"
    )
    print(
        json.dumps(
            {
                "completed": len(latencies),
                "per_worker": [len(r["latencies"]) for r in reports],
                "mean_latency_s": round(mean_latency, 4),
                "completion_requests": requests,
                "quota_429s": counters["quota_429s"],
                "completions_paid": counters["completions_paid"],
            }
        )
    )


if __name__ == "__main__":
    main()
