"""Throughput of ``PgVectorStore.upsert`` next to a plain binary COPY, on an embedded Postgres.

Starts pgserver (Postgres 16 + pgvector) in a temporary directory, generates rows of random
float32 vectors, and measures side by side, in rounds that interleave the scenarios (this machine's
speed drifts, so one scenario must not get all the quiet minutes):

* upsert into a fresh unindexed table (every row new: COPYed straight in);
* the same rows again (every row unchanged: one id lookup, nothing written);
* the rows with revised content (every row changed: staged and merged with ON CONFLICT);
* plain binary COPY of the same rows into another such table: the reference, no upsert;
* upsert of fewer rows into a fresh table with the HNSW index;
* the same fewer rows into a ``"deferred"`` table, then ``build_index()``: the bulk-load remedy.

Reports rows/s (median and best round), client CPU per row (``time.process_time()``) and the
CPU per row of the server backend serving the store (from ``/proc``, so Linux only; parallel
index-build workers are not counted).

    .venv/bin/python bench/sink_throughput.py [--rows 20000] [--indexed-rows 2000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import random
import statistics
import tempfile
import time
from array import array
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import pgserver
import psycopg
from psycopg import sql
from psycopg.conninfo import make_conninfo

from airflow_provider_genesys_llm.sinks import PgVectorStore, ResultRow
from airflow_provider_genesys_llm.sinks.pgvector import IndexMode, _copy_results

WORDS = "the of and to in is that for it as with was on be by this are or from at an which have not".split()


@dataclass
class Samples:
    """One scenario's measurements, one entry per round."""

    rows: int
    written: list[int] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    client_cpu: list[float] = field(default_factory=list)
    server_cpu: list[float] = field(default_factory=list)


class Connector:
    """A store's ``connect`` that remembers its connection, to read the backend's CPU time."""

    def __init__(self, conninfo: str) -> None:
        self.conninfo = conninfo
        self.last: psycopg.Connection[tuple[object, ...]] | None = None

    def __call__(self) -> psycopg.Connection[tuple[object, ...]]:
        self.last = psycopg.connect(self.conninfo)
        return self.last

    @property
    def backend_pid(self) -> int:
        assert self.last is not None, "the store has not connected yet"
        return self.last.info.backend_pid


def prose(rng: random.Random, chars: int) -> str:
    """About ``chars`` characters of words (compressible like text, unlike random letters)."""
    words: list[str] = []
    while sum(map(len, words)) + len(words) < chars:
        words.append(rng.choice(WORDS))
    return " ".join(words)


def result_fields(i: int, rng: random.Random) -> dict[str, Any]:
    """What a real result carries besides its content and embedding."""
    return {
        "source_id": f"source-{i:08d}",
        "prompt_id": "summarise-v3",
        "temperature": 0.2,
        "finish_reason": "stop",
        "usage": {"input_tokens": rng.randint(50, 500), "output_tokens": rng.randint(20, 200)},
        "timings": {"ttft_ms": rng.uniform(80, 400), "total_ms": rng.uniform(500, 3000)},
        "request_id": f"req-{i}",
        "correlation_id": f"corr-{i}",
        "dag_id": "bench",
        "task_id": "complete",
        "run_id": "manual__bench",
        "metadata": {"batch": i // 1000},
    }


def make_rows(count: int, dimension: int, content_chars: int, bare: bool, seed: int = 1) -> list[ResultRow]:
    """Rows shaped like real results, or ``bare`` ones with only id, content, embedding and model."""
    rng = random.Random(seed)
    return [
        ResultRow(
            id=f"result-{i:08d}",
            content=prose(rng, content_chars),
            embedding=array("f", (rng.uniform(-1, 1) for _ in range(dimension))).tolist(),
            model="genesys-llm-1",
            **({} if bare else result_fields(i, rng)),
        )
        for i in range(count)
    ]


def backend_cpu_seconds(pid: int) -> float:
    """utime + stime of a server process."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextmanager
def measured(samples: Samples, backend_pid: int) -> Iterator[None]:
    wall, cpu, server = time.perf_counter(), time.process_time(), backend_cpu_seconds(backend_pid)
    yield
    samples.seconds.append(time.perf_counter() - wall)
    samples.client_cpu.append(time.process_time() - cpu)
    samples.server_cpu.append(backend_cpu_seconds(backend_pid) - server)


def checkpoint(conninfo: str) -> None:
    """Flush before a timed step so no scenario pays for another's dirty pages."""
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute("CHECKPOINT")


def revised(rows: list[ResultRow]) -> list[ResultRow]:
    """The same ids with changed content (and so a changed hash)."""
    return [dataclasses.replace(row, content=row.content + " (revised)", content_hash="") for row in rows]


def timed_upserts(
    conninfo: str,
    schema: str,
    index: IndexMode,
    dimension: int,
    steps: list[tuple[list[ResultRow], Samples]],
    build_index: bool = False,
) -> None:
    """Upsert each step's rows, in order, into a new table, measuring each call (and, with
    ``build_index``, the index build after it)."""
    connector = Connector(conninfo)
    with PgVectorStore(connector, table=f"results_{index}", schema=schema, dimension=dimension, index=index) as store:
        store.ensure_schema()
        for rows, samples in steps:
            checkpoint(conninfo)
            with measured(samples, connector.backend_pid):
                samples.written.append(store.upsert(rows))
                if build_index:
                    store.build_index()


def timed_copy(conninfo: str, schema: str, rows: list[ResultRow], dimension: int, samples: Samples) -> None:
    """Plain binary COPY of ``rows`` into a new table of the store's: upsert's encoding and COPY,
    without its lookup or merge."""
    connector = Connector(conninfo)
    with PgVectorStore(connector, table="copied", schema=schema, dimension=dimension, index="none") as store:
        store.ensure_schema()
    with psycopg.connect(conninfo, autocommit=True) as conn:
        checkpoint(conninfo)
        with measured(samples, conn.info.backend_pid), conn.transaction(), conn.cursor() as cur:
            _copy_results(cur, sql.Identifier(schema, "copied"), rows, dimension, "copied")
            samples.written.append(cur.rowcount)


def execute(conninfo: str, statement: sql.Composable) -> None:
    """Run one statement on a short-lived autocommit connection."""
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(statement)


def run(conninfo: str, rows: list[ResultRow], indexed_rows: int, dimension: int, rounds: int) -> dict[str, Samples]:
    """Every scenario once per round, in a schema of its own; odd rounds run them in reverse."""
    results = {
        "upsert, unindexed, new rows": Samples(len(rows)),
        "upsert, unindexed, unchanged": Samples(len(rows)),
        "upsert, unindexed, all changed": Samples(len(rows)),
        "plain binary COPY (reference)": Samples(len(rows)),
        "upsert, HNSW index, new rows": Samples(indexed_rows),
        "upsert + build_index (deferred)": Samples(indexed_rows),
    }
    fresh, again, changed, copy, indexed, deferred = results.values()
    changed_rows, few = revised(rows), rows[:indexed_rows]
    for number in range(rounds):
        schema = f"round_{number}"
        execute(conninfo, sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        unindexed_steps = [(rows, fresh), (rows, again), (changed_rows, changed)]
        scenarios: list[Callable[[], None]] = [
            partial(timed_upserts, conninfo, schema, "none", dimension, unindexed_steps),
            partial(timed_copy, conninfo, schema, rows, dimension, copy),
            partial(timed_upserts, conninfo, schema, "hnsw", dimension, [(few, indexed)]),
            partial(timed_upserts, conninfo, schema, "deferred", dimension, [(few, deferred)], build_index=True),
        ]
        for scenario in reversed(scenarios) if number % 2 else scenarios:
            scenario()
        execute(conninfo, sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))
        print(f"round {number + 1}/{rounds} done", flush=True)
    return results


def micros_per_row(seconds: list[float], rows: int) -> float:
    return statistics.median(seconds) / rows * 1e6


def report(results: dict[str, Samples]) -> None:
    print(
        f"{'scenario':32} {'rows':>6} {'written':>7} {'rows/s med':>11} {'rows/s best':>11} "
        f"{'client us/row':>13} {'server us/row':>13}"
    )
    for name, s in results.items():
        print(
            f"{name:32} {s.rows:>6} {s.written[-1]:>7} {s.rows / statistics.median(s.seconds):>11,.0f} "
            f"{s.rows / min(s.seconds):>11,.0f} {micros_per_row(s.client_cpu, s.rows):>13.1f} "
            f"{micros_per_row(s.server_cpu, s.rows):>13.1f}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--indexed-rows", type=int, default=2_000)
    parser.add_argument("--dimension", type=int, default=384)
    parser.add_argument("--content-chars", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--bare", action="store_true", help="rows with only id, content, embedding and model")
    args = parser.parse_args()

    rows = make_rows(args.rows, args.dimension, args.content_chars, args.bare)
    with tempfile.TemporaryDirectory() as tmp:
        server = pgserver.get_server(Path(tmp) / "pgdata", cleanup_mode="stop")
        try:
            info = server.get_postmaster_info()
            conninfo = make_conninfo(host=str(info.socket_dir), port=info.port, user="postgres", dbname="postgres")
            with psycopg.connect(conninfo) as conn:
                version = conn.execute("SHOW server_version").fetchone()
            shape = "bare rows" if args.bare else "full rows (12 more columns, 3 of them jsonb)"
            print(
                f"{args.rows} rows ({args.indexed_rows} indexed), {args.dimension}-d float32 vectors, "
                f"{args.content_chars}-char content, {shape}; Postgres {version[0] if version else '?'}, "
                f"psycopg {psycopg.__version__}, {os.cpu_count()} CPUs; {args.rounds} interleaved rounds"
            )
            report(run(conninfo, rows, args.indexed_rows, args.dimension, args.rounds))
        finally:
            server.cleanup()


if __name__ == "__main__":
    main()
