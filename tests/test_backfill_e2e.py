"""A 7-day backfill of historical transcripts with a fault mid-run, then a full re-run (issue: backfill e2e)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import psycopg
from airflow_runner import airflow_env, jobs_answer_at_once

ROOT = Path(__file__).resolve().parent.parent
CONF = {"start": "2026-10-01", "end": "2026-10-08"}


def backfill(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "airflow",
            "dags",
            "test",
            "genesys_transcript_backfill",
            "2026-11-15",
            "--conf",
            json.dumps(CONF),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )


def counts(pg_server) -> tuple[int, int, int]:
    with psycopg.connect(pg_server.conninfo) as conn:
        transcripts = conn.execute(
            "SELECT count(*) FROM genesys_transcripts WHERE conversation_start >= %s AND conversation_start < %s",
            (CONF["start"], CONF["end"]),
        ).fetchone()[0]
        rows, distinct = conn.execute(
            "SELECT count(*), count(DISTINCT source_id) FROM transcript_insights WHERE source_id IN ("
            " SELECT conversation_id || ':' || communication_id || ':' || transcript_id FROM genesys_transcripts"
            " WHERE conversation_start >= %s AND conversation_start < %s)",
            (CONF["start"], CONF["end"]),
        ).fetchone()
    return transcripts, rows, distinct


def test_seven_day_backfill_with_fault_then_rerun_gives_one_row_per_transcript(airflow_home, emulator, pg_server):
    env = airflow_env(airflow_home, ROOT / "dags_examples", emulator, pg_server)
    jobs_answer_at_once(emulator)
    # Mid-run, five completions are refused as invalid: their day's task fails, and its Airflow
    # retry re-sends only those five (everything else of that day is already stored).
    emulator.add_fault(endpoint="ws", kind="stream_error", code="invalid_request", skip=120, count=5)
    first = backfill(env)
    output = first.stdout + first.stderr
    assert first.returncode == 0, output[-5000:]
    assert "BatchFailedError" in output  # the fault really failed a day before its retry healed it
    transcripts, rows, distinct = counts(pg_server)
    assert transcripts > 7 * 20
    assert rows == distinct == transcripts
    sent_first = emulator.counters()["ws_requests"]
    assert sent_first == transcripts + 5

    second = backfill(env)
    assert second.returncode == 0, (second.stdout + second.stderr)[-5000:]
    assert emulator.counters()["ws_requests"] == sent_first  # a re-run pays for nothing
    assert counts(pg_server) == (transcripts, rows, distinct)

    verify = subprocess.run(
        [sys.executable, "-m", "airflow_provider_genesys_llm.governance", "verify", "--conninfo", pg_server.conninfo],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr
