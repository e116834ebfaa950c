"""``make demo``: the nightly enrichment DAG end to end on the embedded defaults, no credentials.

Starts the gateway emulator (its own process; it also plays Genesys Cloud's analytics and
transcript APIs) and an embedded Postgres with pgvector (pgserver, data kept in ``.demo/pgdata``
so a second run finds the first run's rows), points two Airflow connections at them, runs
``airflow dags test genesys_transcript_enrichment`` for one day, and prints what a user wants to
see. Running it twice is safe: the second run sends no completion requests.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pgserver
import psycopg

ROOT = Path(__file__).resolve().parent.parent
STATE = ROOT / ".demo"
DAG_ID = "genesys_transcript_enrichment"
#: Two days back: a whole day that Genesys (and the emulator) report as available.
LOGICAL_DATE = (datetime.now(UTC).date() - timedelta(days=2)).isoformat()
TABLE = "transcript_insights"
TRANSCRIPTS = "genesys_transcripts"
QUERY = "customer wants a refund for a double charge"
#: The role the DAG's audit writes connect as (connection ``genesys_audit``): it can only append.
AUDIT_WRITER = "genesys_audit_writer"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_emulator() -> tuple[subprocess.Popen[str], str]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "genesys_llm_emulator", "--port", str(port)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    if "listening" not in process.stdout.readline():
        process.kill()
        raise SystemExit("the gateway emulator did not start")
    return process, f"127.0.0.1:{port}"


def airflow_env(gateway: str, pg: pgserver.PostgresServer) -> dict[str, str]:
    info = pg.get_postmaster_info()
    genesys = {
        "conn_type": "genesys_llm",
        "login": "id",
        "password": "secret",
        "extra": {
            "api_base_url": f"http://{gateway}",
            "login_base_url": f"http://{gateway}",
            "stream_base_url": f"ws://{gateway}",
            "requests_per_minute": 6000,
        },
    }
    postgres = {
        "conn_type": "postgres",
        "host": str(info.socket_dir),
        "port": info.port,
        "login": "postgres",
        "schema": "postgres",
    }
    return {
        **os.environ,
        "AIRFLOW_HOME": str(STATE / "airflow"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags_examples"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "WARNING",
        "AIRFLOW_CONN_GENESYS_LLM_DEFAULT": json.dumps(genesys),
        "AIRFLOW_CONN_GENESYS_PGVECTOR": json.dumps(postgres),
        "AIRFLOW_VAR_GENESYS_LLM_ID_KEY": demo_id_key(),
        "AIRFLOW_CONN_GENESYS_AUDIT": json.dumps(postgres | {"login": AUDIT_WRITER}),
    }


def demo_id_key() -> str:
    """The demo deployment's id key, made once and kept beside its data so re-runs keep their ids."""
    path = STATE / "id_key"
    if not path.exists():
        STATE.mkdir(exist_ok=True)
        path.touch(mode=0o600)
        path.write_text(secrets.token_hex(32))
    return path.read_text().strip()


def airflow(env: dict[str, str], *args: str) -> None:
    done = subprocess.run([sys.executable, "-m", "airflow", *args], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        sys.stderr.write(done.stdout[-4000:] + done.stderr[-4000:])
        raise SystemExit(f"airflow {' '.join(args)} failed with exit code {done.returncode}")


def witnessed_heads() -> list[Any]:
    """The audit chain heads the batch tasks published in their XCom manifests, from every run so far:
    a witness kept in Airflow's database, out of reach of the role that writes the audit chain."""
    from airflow_provider_genesys_llm.governance.witness import ChainHead

    with sqlite3.connect(STATE / "airflow" / "airflow.db") as db:
        values = [value for (value,) in db.execute("SELECT value FROM xcom WHERE key = 'return_value'")]
    heads = []
    for value in values:
        document = json.loads(value) if isinstance(value, (str, bytes)) else value
        if isinstance(document, dict) and isinstance(document.get("audit_head"), dict):
            heads.append(ChainHead.model_validate(document["audit_head"]))
    return heads


def counters(gateway: str) -> dict[str, int]:
    return httpx.get(f"http://{gateway}/_emulator/counters").json()


def report(gateway: str, conninfo: str, before: dict[str, int], after: dict[str, int]) -> None:
    from airflow_provider_genesys_llm.governance.chain import verify_chain
    from airflow_provider_genesys_llm.sinks.pgvector import PgVectorStore

    day_start = datetime.fromisoformat(LOGICAL_DATE).replace(tzinfo=UTC)
    interval = (day_start, day_start + timedelta(days=1))
    with psycopg.connect(conninfo) as conn:
        transcripts = conn.execute(
            f"SELECT count(*) FROM {TRANSCRIPTS} WHERE conversation_start >= %s AND conversation_start < %s", interval
        ).fetchone()[0]
        rows, tokens, p50, p95, ttft = conn.execute(
            f"SELECT count(*), coalesce(sum((usage->>'total_tokens')::int), 0),"
            f" percentile_cont(0.5) WITHIN GROUP (ORDER BY (timings->>'total_ms')::float),"
            f" percentile_cont(0.95) WITHIN GROUP (ORDER BY (timings->>'total_ms')::float),"
            f" percentile_cont(0.5) WITHIN GROUP (ORDER BY (timings->>'ttft_ms')::float)"
            f" FROM {TABLE} WHERE source_id IN"
            f" (SELECT conversation_id || ':' || communication_id || ':' || transcript_id"
            f" FROM {TRANSCRIPTS} WHERE conversation_start >= %s AND conversation_start < %s)",
            interval,
        ).fetchone()
        failures = conn.execute(f"SELECT count(*) FROM {TABLE}_failures WHERE NOT resolved").fetchone()[0]
        # Typed columns generated from the validated output (output_schema + output_columns).
        by_sentiment = conn.execute(f"SELECT sentiment, count(*) FROM {TABLE} GROUP BY 1 ORDER BY 2 DESC").fetchall()
        versions = conn.execute(
            f"SELECT coalesce(prompt_label, '-'), prompt_version, count(*) FROM {TABLE} GROUP BY 1, 2 ORDER BY 3 DESC"
        ).fetchall()
    sent = after["ws_requests"] + after["sse"] - before["ws_requests"] - before["sse"]
    heads = witnessed_heads()
    chain = verify_chain(lambda: psycopg.connect(conninfo), witnesses=heads)
    print(f"\n== {DAG_ID} for {LOGICAL_DATE} ==")
    print(
        f"transcripts landed (PII masked): {transcripts}   enriched rows in pgvector table {TABLE}: {rows}"
        f"   failures: {failures}"
    )
    print(
        f"completion requests sent this run: {sent}"
        + ("" if sent else "   (every transcript was already enriched: nothing re-sent)")
    )
    print(
        f"tokens: {tokens}   latency p50 {p50 or 0:.1f} ms, p95 {p95 or 0:.1f} ms,"
        f" time to first token p50 {ttft or 0:.1f} ms"
    )
    print("rows by sentiment (typed column): " + ", ".join(f"{value}={count}" for value, count in by_sentiment))
    print("rows by prompt version: " + ", ".join(f"{label} ({version})={count}" for label, version, count in versions))
    print(
        f"audit chain: {'OK' if chain.ok else 'BROKEN'} ({chain.rows_checked} records,"
        f" {chain.witnesses_checked} head(s) witnessed in XCom match)" + (f": {chain.problem}" if chain.problem else "")
    )
    query_vector = httpx.post(
        f"http://{gateway}/api/v2/ai/llm/gateway/embeddings",
        json={"model": "genesys-embed-v1", "input": [QUERY]},
        headers={"Authorization": "Bearer " + token(gateway)},
    ).json()["data"][0]["embedding"]
    store = PgVectorStore(lambda: psycopg.connect(conninfo), table=TABLE, dimension=len(query_vector))
    print(f'semantic search, top 3 for "{QUERY}" (cosine distance: 0 = same direction, lower is closer):')
    for match in store.similarity_search(query_vector, k=3):
        answer = json.loads(match.content or "{}")
        print(f"  distance={match.distance:.3f}  intent={answer.get('intent')}  conversation={match.source_id[:36]}")
        print(f"      summary: {str(answer.get('summary', ''))[:110]}")
    store.close()


def token(gateway: str) -> str:
    answer = httpx.post(
        f"http://{gateway}/oauth/token", auth=("id", "secret"), data={"grant_type": "client_credentials"}
    )
    return answer.json()["access_token"]


def create_audit_writer(conninfo: str) -> None:
    """As the owner (postgres): the audit chain and a role that can only append to it (idempotent)."""
    from airflow_provider_genesys_llm.governance.roles import create_writer_role

    writer = create_writer_role(lambda: psycopg.connect(conninfo), AUDIT_WRITER)
    print(f"audit writer role {writer.role}: appends only through {writer.function}", flush=True)


def main() -> None:
    STATE.mkdir(exist_ok=True)
    emulator, gateway = start_emulator()
    pg = pgserver.get_server(STATE / "pgdata", cleanup_mode="stop")
    try:
        env = airflow_env(gateway, pg)
        info = pg.get_postmaster_info()
        conninfo = f"host={info.socket_dir} port={info.port} user=postgres dbname=postgres"
        print("preparing the Airflow metadata database ...", flush=True)
        airflow(env, "db", "migrate")
        airflow(env, "pools", "set", "genesys_llm_gateway", "4", "Genesys LLM gateway streams")
        create_audit_writer(conninfo)
        before = counters(gateway)
        print(f"running: airflow dags test {DAG_ID} {LOGICAL_DATE}", flush=True)
        airflow(env, "dags", "test", DAG_ID, LOGICAL_DATE)
        report(gateway, conninfo, before, counters(gateway))
    finally:
        emulator.terminate()
        emulator.wait(timeout=10)
        pg.cleanup()


if __name__ == "__main__":
    main()
