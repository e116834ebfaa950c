"""End to end: lazily generated items -> ``BatchRunner`` -> gateway emulator -> embeddings -> pgvector.

One run pushes ``--items`` items (default 10,000), generated one at a time (the bench holds no list
of them), through ``BatchRunner`` with concurrency 32: completions over WebSocket from the gateway
emulator in its own process (``token_delay=0``, 48 completion tokens), 384-d embeddings from the
emulator's embeddings endpoint, rows upserted into a ``PgVectorStore`` on an embedded Postgres 16 +
pgvector (pgserver, also its own processes). The table is created with ``index="deferred"`` by
default: the HNSW index is built once at the end and timed on its own, outside every other figure
(``--index none`` skips it).

Printed per run:

* items/s end to end (wall time of ``BatchRunner.run``, item generation included);
* rows/s into Postgres: rows written / seconds spent inside ``sink.upsert``;
* peak RSS of the bench process (``resource.getrusage(RUSAGE_SELF).ru_maxrss``; the emulator and
  Postgres are child processes and not counted);
* client CPU per item (``time.process_time()``: every thread of the bench, the sink's included);
* where wall time goes: the share of it during which at least one completion, one embeddings call
  (together: gateway I/O) or one sink call was in flight. Measured by thin timing wrappers composed
  around the sink and the embedder, and a ``GatewayClient`` subclass that times ``complete``; the
  shares overlap (completions keep running while a chunk is being written).

``--compare 10000,100000`` runs each count in a fresh subprocess, so each peak RSS is that run's own,
and checks that the last run's peak RSS is within ``--max-rss-ratio`` (1.5) of the first's::

    .venv/bin/python bench/batch_to_pgvector.py [--items 10000] [--index deferred|none]
    .venv/bin/python bench/batch_to_pgvector.py --compare 10000,100000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import resource
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _emulator_process import emulator_process  # noqa: E402
from _pgserver_process import pgserver_conninfo  # noqa: E402

from airflow_provider_genesys_llm.batch.runner import BatchRunner, BatchSettings, Embedder, RunContext  # noqa: E402
from airflow_provider_genesys_llm.client import (  # noqa: E402
    CompletionRequest,
    CompletionResult,
    GatewayClient,
    GatewayConfig,
)
from airflow_provider_genesys_llm.governance.keys import IdKey  # noqa: E402
from airflow_provider_genesys_llm.sinks.pgvector import FailureRow, IndexMode, PgVectorStore, ResultRow  # noqa: E402

CONCURRENCY = 32
COMPLETION_TOKENS = 48
DIMENSION = 384
TABLE = "bench_results"
#: Marks the machine-readable line a ``--compare`` child prints last.
RESULT_MARKER = "BENCH_RESULT "
TOPICS = (
    "I was charged twice for my March invoice and want a refund",
    "Please cancel my subscription, the price went up again",
    "My router drops the connection every evening around eight",
    "The mobile app crashes when I open my billing history",
    "I moved house and need to update my service address",
)


def generate_items(count: int) -> Iterator[dict[str, Any]]:
    """``count`` distinct call transcripts, made one at a time as the runner reads them."""
    for number in range(count):
        yield {
            "id": f"conv-{number:08d}",
            "text": f"{TOPICS[number % len(TOPICS)]} (call {number})",
            "metadata": {"queue": "billing" if number % 2 else "support"},
        }


class BusyClock:
    """Calls of one kind: how many, their summed duration, and ``busy``, the wall time during which
    at least one was in flight (the union of their intervals, so concurrent calls count once).

    A call also keeps each ``parent`` busy, which gives the union over several kinds of call.
    Thread-safe: the sink's calls run in the runner's sink thread.
    """

    def __init__(self, *parents: BusyClock) -> None:
        self._parents = parents
        self._lock = threading.Lock()
        self._in_flight = 0
        self._busy_since = 0.0
        self.busy = 0.0
        self.calls = 0
        self.total = 0.0

    def _open(self, now: float) -> None:
        with self._lock:
            if self._in_flight == 0:
                self._busy_since = now
            self._in_flight += 1
        for parent in self._parents:
            parent._open(now)

    def _close(self, now: float) -> None:
        with self._lock:
            self._in_flight -= 1
            if self._in_flight == 0:
                self.busy += now - self._busy_since
        for parent in self._parents:
            parent._close(now)

    @contextmanager
    def measure(self) -> Iterator[None]:
        started = time.perf_counter()
        self._open(started)
        try:
            yield
        finally:
            ended = time.perf_counter()
            self._close(ended)
            with self._lock:
                self.calls += 1
                self.total += ended - started


@dataclass
class Clocks:
    """Everything timed in one run; ``io`` is busy whenever the gateway or the sink is."""

    io: BusyClock
    gateway: BusyClock
    completions: BusyClock
    embeddings: BusyClock
    sink: BusyClock
    upsert: BusyClock

    @classmethod
    def create(cls) -> Clocks:
        io = BusyClock()
        gateway, sink = BusyClock(io), BusyClock(io)
        return cls(io, gateway, BusyClock(gateway), BusyClock(gateway), sink, BusyClock(sink))


class TimedClient(GatewayClient):
    """A ``GatewayClient`` whose ``complete`` calls are timed; nothing else changes."""

    def __init__(self, config: GatewayConfig, clock: BusyClock) -> None:
        super().__init__(config)
        self._clock = clock

    async def complete(self, request: CompletionRequest, *, stream: bool = True) -> CompletionResult:
        with self._clock.measure():
            return await super().complete(request, stream=stream)


class TimedEmbedder:
    """An ``Embedder`` that times the one it wraps."""

    def __init__(self, embed: Embedder, clock: BusyClock) -> None:
        self._embed = embed
        self._clock = clock

    async def __call__(self, texts: Sequence[str]) -> list[list[float]]:
        with self._clock.measure():
            return await self._embed(texts)


class TimedSink:
    """A ``ResultSink`` that times every call to the store it wraps and counts the rows upserted."""

    def __init__(self, store: PgVectorStore, clocks: Clocks) -> None:
        self._store = store
        self._clocks = clocks
        self.rows_upserted = 0

    def existing_ids(self, ids: Iterable[str]) -> set[str]:
        with self._clocks.sink.measure():
            return self._store.existing_ids(ids)

    def upsert(self, rows: Sequence[ResultRow], *, keep_versions: Mapping[str, Collection[str]] | None = None) -> int:
        with self._clocks.upsert.measure():
            written = self._store.upsert(rows, keep_versions=keep_versions)
        self.rows_upserted += written
        return written

    def stored_versions(self, source_keys: Iterable[str]) -> dict[str, set[str | None]]:
        with self._clocks.sink.measure():
            return self._store.stored_versions(source_keys)

    def version_counts(self) -> dict[str, dict[str, Any]]:
        with self._clocks.sink.measure():
            return self._store.version_counts()

    def awaiting_embedding(self, ids: Iterable[str]) -> dict[str, str]:
        with self._clocks.sink.measure():
            return self._store.awaiting_embedding(ids)

    def set_embeddings(self, vectors: Sequence[tuple[str, Any]]) -> int:
        """Timed with ``upsert``: a result's write is its row, then its vector."""
        with self._clocks.upsert.measure():
            return self._store.set_embeddings(vectors)

    def record_failures(self, rows: Sequence[FailureRow]) -> None:
        with self._clocks.sink.measure():
            self._store.record_failures(rows)


@dataclass
class RunResult:
    """One run's figures; ``--compare`` children print it as JSON."""

    items: int
    index: str
    succeeded: int
    failed: int
    rows_in_table: int
    wall_s: float
    items_per_s: float
    rows_written: int
    upsert_s: float
    upsert_calls: int
    rows_per_s: float
    index_build_s: float | None
    peak_rss_mib: float
    cpu_s: float
    cpu_us_per_item: float
    completions_share: float
    completions_mean_in_flight: float
    completions_mean_ms: float
    embeddings_share: float
    embeddings_calls: int
    gateway_share: float
    sink_share: float
    upsert_share: float
    neither_share: float
    emulator_ws_requests: int
    emulator_embedding_inputs: int


def gateway_config(base_url: str, ws_url: str) -> GatewayConfig:
    return GatewayConfig(
        client_id="emulator-client",
        client_secret="emulator-secret",
        api_base_url=base_url,
        login_base_url=base_url,
        stream_base_url=ws_url,
        transport="websocket",
        max_concurrency=CONCURRENCY,
        requests_per_minute=10_000_000,
    )


def peak_rss_mib() -> float:
    """Peak resident set of this process (Linux reports ``ru_maxrss`` in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def run_batch(args: argparse.Namespace) -> RunResult:
    with pgserver_conninfo() as conninfo, emulator_process() as emulator:
        emulator.reset()
        emulator.configure(token_delay=0, completion_tokens=COMPLETION_TOKENS, embedding_dim=DIMENSION)

        def connect() -> psycopg.Connection[Any]:
            return psycopg.connect(conninfo, options=f"-c maintenance_work_mem={args.maintenance_work_mem}")

        index: IndexMode = args.index
        clocks = Clocks.create()
        with PgVectorStore(connect, table=TABLE, dimension=DIMENSION, index=index) as store:
            store.ensure_schema()
            sink = TimedSink(store, clocks)
            async with TimedClient(gateway_config(emulator.base_url, emulator.ws_url), clocks.completions) as client:
                runner = BatchRunner(
                    client,
                    sink,
                    TimedEmbedder(client.embed, clocks.embeddings),
                    settings=BatchSettings(concurrency=CONCURRENCY, chunk_size=args.chunk_size, window=args.window),
                    id_key=IdKey(secrets.token_hex(32)),
                    context=RunContext(dag_id="bench", task_id="batch_to_pgvector", run_id=f"bench-{args.items}"),
                    total_hint=args.items,
                )
                cpu, wall = time.process_time(), time.perf_counter()
                stats = await runner.run(generate_items(args.items))
                wall = time.perf_counter() - wall
                cpu = time.process_time() - cpu
            # Read before anything else allocates: the emulator's counters below carry a list.
            rss = peak_rss_mib()
            index_build_s: float | None = None
            if index == "deferred":
                started = time.perf_counter()
                store.build_index()
                index_build_s = time.perf_counter() - started
            rows_in_table = store.count()
        counters = emulator.counters()

    completions = clocks.completions
    return RunResult(
        items=args.items,
        index=index,
        succeeded=stats.succeeded,
        failed=stats.failed + stats.invalid,
        rows_in_table=rows_in_table,
        wall_s=wall,
        items_per_s=args.items / wall,
        rows_written=sink.rows_upserted,
        upsert_s=clocks.upsert.total,
        upsert_calls=clocks.upsert.calls,
        rows_per_s=sink.rows_upserted / clocks.upsert.total if clocks.upsert.total else 0.0,
        index_build_s=index_build_s,
        peak_rss_mib=rss,
        cpu_s=cpu,
        cpu_us_per_item=cpu / args.items * 1e6,
        completions_share=completions.busy / wall,
        completions_mean_in_flight=completions.total / wall,
        completions_mean_ms=completions.total / max(completions.calls, 1) * 1000,
        embeddings_share=clocks.embeddings.busy / wall,
        embeddings_calls=clocks.embeddings.calls,
        gateway_share=clocks.gateway.busy / wall,
        sink_share=clocks.sink.busy / wall,
        upsert_share=clocks.upsert.busy / wall,
        neither_share=1 - clocks.io.busy / wall,
        emulator_ws_requests=int(counters["ws_requests"]),
        emulator_embedding_inputs=int(counters["embedding_inputs"]),
    )


def report(result: RunResult, args: argparse.Namespace) -> None:
    r = result
    index = (
        f"index deferred (HNSW built after the load, maintenance_work_mem={args.maintenance_work_mem})"
        if r.index == "deferred"
        else "index none"
    )
    print(
        f"{r.items:,} items, concurrency {CONCURRENCY}, chunk {args.chunk_size}, window {args.window}, {index}; "
        f"emulator token_delay=0, completion_tokens={COMPLETION_TOKENS}, {DIMENSION}-d embeddings; "
        f"{os.cpu_count()} CPUs"
    )
    print(
        f"  outcome           : {r.succeeded:,} succeeded, {r.failed:,} failed, {r.rows_written:,} rows written, "
        f"{r.rows_in_table:,} in the table; emulator saw {r.emulator_ws_requests:,} WebSocket requests, "
        f"{r.emulator_embedding_inputs:,} embedding inputs"
    )
    print(f"  end to end        : {r.items_per_s:,.0f} items/s ({r.wall_s:.1f} s wall)")
    print(
        f"  into Postgres     : {r.rows_per_s:,.0f} rows/s ({r.rows_written:,} rows in {r.upsert_s:.2f} s "
        f"inside sink.upsert, {r.upsert_calls} calls)"
    )
    if r.index_build_s is not None:
        print(f"  HNSW index build  : {r.index_build_s:.1f} s (after the run; in no other figure)")
    print(f"  peak RSS          : {r.peak_rss_mib:,.1f} MiB")
    print(
        f"  client CPU        : {r.cpu_us_per_item:,.0f} us/item ({r.cpu_s:.1f} s, "
        f"{r.cpu_s / r.wall_s:.0%} of one core over the wall time)"
    )
    print("  wall time with at least one call in flight (shares overlap):")
    print(f"    gateway I/O     : {r.gateway_share:6.1%}")
    print(
        f"      completions   : {r.completions_share:6.1%}  (mean {r.completions_mean_in_flight:.1f} in flight, "
        f"{r.completions_mean_ms:.1f} ms each)"
    )
    print(f"      embeddings    : {r.embeddings_share:6.1%}  ({r.embeddings_calls} calls)")
    print(f"    sink            : {r.sink_share:6.1%}  (upsert {r.upsert_share:.1%}, the rest existing_ids)")
    print(f"    neither         : {r.neither_share:6.1%}")


def run_one(args: argparse.Namespace) -> None:
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("airflow_provider_genesys_llm.batch").setLevel(logging.INFO)
    result = asyncio.run(run_batch(args))
    report(result, args)
    if args.json:
        print(RESULT_MARKER + json.dumps(asdict(result)), flush=True)


def run_child(count: int, args: argparse.Namespace) -> RunResult:
    """One run in a fresh interpreter; its report is passed through, its figures parsed."""
    command = [
        sys.executable,
        str(Path(__file__).resolve()),
        "--items",
        str(count),
        "--index",
        args.index,
        "--chunk-size",
        str(args.chunk_size),
        "--window",
        str(args.window),
        "--maintenance-work-mem",
        args.maintenance_work_mem,
        "--json",
    ]
    result: RunResult | None = None
    with subprocess.Popen(command, stdout=subprocess.PIPE, text=True) as child:
        assert child.stdout is not None
        for line in child.stdout:
            if line.startswith(RESULT_MARKER):
                result = RunResult(**json.loads(line[len(RESULT_MARKER) :]))
            else:
                print(line, end="", flush=True)
    if child.returncode != 0 or result is None:
        raise SystemExit(f"the {count:,}-item run failed (exit status {child.returncode})")
    return result


def compare(counts: list[int], args: argparse.Namespace) -> int:
    results = [run_child(count, args) for count in counts]
    print(f"\n{'items':>9} {'items/s':>8} {'rows/s':>8} {'peak RSS MiB':>13} {'CPU us/item':>12} {'index build s':>14}")
    for r in results:
        build = f"{r.index_build_s:.1f}" if r.index_build_s is not None else "-"
        print(
            f"{r.items:>9,} {r.items_per_s:>8,.0f} {r.rows_per_s:>8,.0f} {r.peak_rss_mib:>13,.1f} "
            f"{r.cpu_us_per_item:>12,.0f} {build:>14}"
        )
    first, last = results[0], results[-1]
    ratio = last.peak_rss_mib / first.peak_rss_mib
    verdict = "OK" if ratio <= args.max_rss_ratio else "TOO HIGH"
    print(
        f"peak RSS ratio {last.items:,} / {first.items:,} items: {ratio:.2f}x "
        f"(limit {args.max_rss_ratio:g}x): {verdict}"
    )
    return 0 if ratio <= args.max_rss_ratio else 1


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--index", choices=("deferred", "none"), default="deferred")
    parser.add_argument("--chunk-size", type=int, default=BatchSettings.chunk_size)
    parser.add_argument("--window", type=int, default=BatchSettings.window)
    parser.add_argument(
        "--maintenance-work-mem",
        default="512MB",
        help="Postgres maintenance_work_mem of the store's sessions (the deferred HNSW build uses it)",
    )
    parser.add_argument("--compare", metavar="N,N,...", help="run each count in a fresh subprocess; compare peak RSS")
    parser.add_argument("--max-rss-ratio", type=float, default=1.5)
    parser.add_argument("--json", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.compare:
        counts = [int(part) for part in args.compare.split(",")]
        if len(counts) < 2:
            parser.error("--compare needs at least two counts")
        raise SystemExit(compare(counts, args))
    run_one(args)


if __name__ == "__main__":
    main()
