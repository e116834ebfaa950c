"""A backfill on a real CeleryExecutor fleet against one organisation quota: how much of it is used.

Starts the fleet of `tests/fleet_harness.py` (Redis, the emulator with an org quota of Q
concurrent streams, pgserver, Airflow's scheduler, API server, DAG processor, triggerer and W
Celery workers), runs `genesys_transcript_backfill` over `--days` days of synthetic transcripts
and prints one line:

`fleet: workers=W items=N wall_s=S quota=Q utilization=U max_inflight=M rate_429=R duplicates_paid=D`

- items: result rows stored; wall_s: the backfill run's duration (Airflow's start to end dates);
- utilization: measured throughput (items / wall_s) over the quota-bound throughput, quota / mean
  completion latency, the latency measured in the same run once the backfill is done: 8
  completions, one at a time, on the same emulator (the stored rows' `total_ms` includes waiting
  for a slot and 429 back-off, so it would flatter or punish the fleet);
- max_inflight, rate_429 (quota 429s / completion requests) and duplicates_paid (completions paid
  beyond the first per prompt) come from the emulator's counters.

A second line, `phase: ...`, gives the same utilization over the enrichment window only (first
`enrich_day` start to last end), which leaves out the DAG's landing and indexing tasks.
Run: `.venv/bin/python bench/fleet_backfill.py [--workers 3] [--days 30] [--per-day 10]`.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
import psycopg  # noqa: E402
from fleet_harness import Fleet, FleetSettings, coordination_extras  # noqa: E402

from airflow_provider_genesys_llm.client import GatewayClient, GatewayConfig  # noqa: E402

BACKFILL = "genesys_transcript_backfill"
PROBE_SAMPLES = 8


def seconds_between(start: str, end: str) -> float:
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


def stored(conninfo: str) -> tuple[int, float]:
    """(result rows, their mean `total_ms` in seconds). That total includes waiting for a slot
    and 429 back-off, so it is printed for reference, not used as the completion latency."""
    with psycopg.connect(conninfo) as conn:
        rows, mean_ms = conn.execute(
            "SELECT count(*), avg((timings->>'total_ms')::float) FROM transcript_insights"
        ).fetchone()
    return int(rows), float(mean_ms or 0.0) / 1000.0


async def probe_latency(fleet: Fleet, samples: int = PROBE_SAMPLES) -> float:
    """Mean seconds of one completion alone on the gateway, measured after the backfill on the same
    emulator: the time a stream holds a quota slot, without queueing (the first call, which also
    fetches a token, is not counted)."""
    ws_url = fleet.emulator_url.replace("http://", "ws://")
    config = GatewayConfig(
        client_id="emulator-client",
        client_secret="emulator-secret",
        api_base_url=fleet.emulator_url,
        login_base_url=fleet.emulator_url,
        stream_base_url=ws_url,
        max_attempts=1,
    )
    durations = []
    async with GatewayClient(config) as client:
        for n in range(samples + 1):
            request = client.request(messages=[{"role": "user", "content": f"Latency probe {n}: summarise a call."}])
            started = time.perf_counter()
            await client.complete(request)
            durations.append(time.perf_counter() - started)
    return statistics.mean(durations[1:])


def enrich_window(task_instances: list[dict[str, Any]]) -> float:
    enrich = [ti for ti in task_instances if ti["task_id"] == "enrich_day" and ti["start_date"] and ti["end_date"]]
    return seconds_between(min(ti["start_date"] for ti in enrich), max(ti["end_date"] for ti in enrich))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=3, help="Celery worker slots per worker")
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument(
        "--per-day",
        type=int,
        default=FleetSettings.conversations_per_day,
        help="the emulator's conversations_per_day (mean)",
    )
    parser.add_argument("--quota", type=int, default=8, help="the emulator's org_max_concurrent_streams")
    parser.add_argument("--pool-slots", type=int, default=6, help="Airflow pool genesys_llm_gateway")
    parser.add_argument("--timeout", type=float, default=1800.0, help="seconds the backfill run may take")
    args = parser.parse_args()

    settings = FleetSettings(
        workers=args.workers,
        worker_concurrency=args.concurrency,
        quota=args.quota,
        pool_slots=args.pool_slots,
        conversations_per_day=args.per_day,
        gateway_extras=coordination_extras(args.quota),
    )
    end = datetime(2026, 10, 1).toordinal() + args.days
    conf = {"start": "2026-10-01", "end": datetime.fromordinal(end).date().isoformat()}
    with Fleet(settings) as fleet:
        run_id = fleet.trigger(BACKFILL, conf=conf)
        run = fleet.wait_for_run(BACKFILL, run_id, args.timeout)
        if run["state"] != "success":
            print(f"backfill run {run_id} ended {run['state']}; logs in {fleet.logs}", file=sys.stderr)
            return 1
        counters = fleet.counters()  # before the probe, whose completions are not the backfill's
        items, stored_latency = stored(fleet.conninfo)
        latency = asyncio.run(probe_latency(fleet))
        window = enrich_window(fleet.task_instances(BACKFILL, run_id))
    wall = seconds_between(run["start_date"], run["end_date"])
    bound = args.quota / latency  # completions per second the quota allows at this latency
    requests = counters["ws_requests"] + counters["sse"] + counters["openai"]
    duplicates = sum(n - 1 for n in counters["paid_by_prompt_hash"].values())
    print(
        f"fleet: workers={args.workers} items={items} wall_s={wall:.1f} quota={args.quota} "
        f"utilization={items / wall / bound:.2f} max_inflight={counters['max_concurrent_streams']} "
        f"rate_429={counters['quota_429s'] / max(requests, 1):.4f} duplicates_paid={duplicates}"
    )
    print(
        f"phase: enrich_window_s={window:.1f} utilization={items / window / bound:.2f} "
        f"latency_s={latency:.2f} stored_total_s={stored_latency:.2f} requests={requests} "
        f"quota_429s={counters['quota_429s']}"
    )
    return 0


if __name__ == "__main__":
    started = time.monotonic()
    code = main()
    print(f"bench wall (setup included): {time.monotonic() - started:.0f} s", file=sys.stderr)
    raise SystemExit(code)
