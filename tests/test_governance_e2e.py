"""PII in, nothing out: a batch DAG fed PII through prompts and model output leaves none anywhere."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import psycopg
from airflow_runner import airflow_env, dags_test
from statsd_listener import StatsdListener

HERE = Path(__file__).resolve().parent

PII_IN_PROMPTS = ("4111 1111 1111 1111", "123-45-6789", "jane.doe@example.com", "(415) 555-0132")
PII_IN_OUTPUT = "call 212-555-0143 or use card 5500 0000 0000 0004"
PII_VALUES = (*PII_IN_PROMPTS, "212-555-0143", "5500 0000 0000 0004", "4111111111111111", "5500000000000004")


def dump_tables(pg_server, tables: list[str]) -> str:
    with psycopg.connect(pg_server.conninfo) as conn:
        return "\n".join(
            json.dumps(row, default=str)
            for table in tables
            for row in conn.execute(f"SELECT * FROM {table}").fetchall()
        )


def test_no_pii_in_logs_xcom_rows_or_audit_and_metrics_are_emitted(airflow_home, emulator, pg_server):
    emulator.add_fault(endpoint="ws", kind="pii_output", text=PII_IN_OUTPUT, split=5, count=None)
    statsd = StatsdListener()
    env = {**airflow_env(airflow_home, HERE / "dags", emulator, pg_server), **statsd.env}
    done = dags_test(env, "genesys_llm_pii_test", "2026-11-18")
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]

    rows = dump_tables(pg_server, ["pii_results", "pii_results_failures", "genesys_llm_audit"])
    assert rows.count("[REDACTED:CARD]") >= 12  # output PII was really there, split over frames, and masked
    logs = (
        done.stdout
        + done.stderr
        + "".join(path.read_text(errors="replace") for path in Path(airflow_home, "logs").rglob("*") if path.is_file())
    )
    assert "GENESYS_AUDIT" in logs
    with sqlite3.connect(Path(airflow_home, "airflow.db")) as db:
        xcoms = "\n".join(
            str(value) for (value,) in db.execute("SELECT value FROM xcom WHERE dag_id = 'genesys_llm_pii_test'")
        )
    assert "masking_counts" in xcoms
    for value in PII_VALUES:
        assert value not in rows, f"PII {value!r} reached a table row"
        assert value not in xcoms, f"PII {value!r} reached an XCom"
        assert value not in logs, f"PII {value!r} reached a log"

    metrics = statsd.received()
    statsd.close()
    assert "genesys_llm.completion.ttft_ms" in metrics and "genesys_llm.completion.success.count" in metrics

    verify = subprocess.run(
        [sys.executable, "-m", "airflow_provider_genesys_llm.governance", "verify", "--conninfo", pg_server.conninfo],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert "audit chain OK" in verify.stdout
