"""DAGs run by real Airflow (``airflow dags test`` in a subprocess) against the emulator and pgserver."""

from __future__ import annotations

from pathlib import Path

import psycopg
from airflow_runner import airflow_env, dags_test, jobs_answer_at_once

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def scalar(pg_server, query: str) -> object:
    with psycopg.connect(pg_server.conninfo) as conn:
        return conn.execute(query).fetchone()[0]


def test_dag_with_both_operators(airflow_home, emulator, pg_server):
    env = airflow_env(airflow_home, HERE / "dags", emulator, pg_server)
    done = dags_test(env, "genesys_llm_operators_test", "2026-11-20")
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    assert scalar(pg_server, "SELECT count(*) FROM operator_results") == 20
    assert scalar(pg_server, "SELECT count(*) FROM operator_results_failures") == 1
    assert scalar(pg_server, "SELECT count(*) FROM operator_results WHERE content LIKE '%{{%'") == 0
    assert emulator.counters()["ws_requests"] == 21
    output = done.stdout + done.stderr
    assert "secret" not in output.replace("client_secret", "").replace("Client Secret", "")
    assert "1 invalid items (not sent, recorded in the failures table): request_limit=1" in output

    again = dags_test(env, "genesys_llm_operators_test", "2026-11-20")  # 1 invalid of 21: still within 0.1
    assert again.returncode == 0, (again.stdout + again.stderr)[-4000:]
    assert emulator.counters()["ws_requests"] == 22  # the single completion again, no batch completion
    assert "'skipped_existing': 20" in again.stdout + again.stderr


def test_demo_dag_twice_second_run_sends_no_completions(airflow_home, emulator, pg_server):
    env = airflow_env(airflow_home, ROOT / "dags_examples", emulator, pg_server)
    first = dags_test(env, "genesys_llm_demo", "2026-11-19")
    assert first.returncode == 0, (first.stdout + first.stderr)[-4000:]
    stored = scalar(pg_server, "SELECT count(*) FROM transcript_insights WHERE source_id LIKE '2026-11-19-%'")
    assert stored == 30
    sent = emulator.counters()["ws_requests"]
    second = dags_test(env, "genesys_llm_demo", "2026-11-19")
    assert second.returncode == 0, (second.stdout + second.stderr)[-4000:]
    assert emulator.counters()["ws_requests"] == sent
    assert scalar(pg_server, "SELECT count(*) FROM transcript_insights WHERE source_id LIKE '2026-11-19-%'") == 30


def test_enrichment_dag_for_one_day_then_again_sends_no_completions(airflow_home, emulator, pg_server):
    env = airflow_env(airflow_home, ROOT / "dags_examples", emulator, pg_server)
    jobs_answer_at_once(emulator)
    day = "2026-11-05"
    first = dags_test(env, "genesys_transcript_enrichment", day)
    assert first.returncode == 0, (first.stdout + first.stderr)[-5000:]
    landed = scalar(
        pg_server,
        "SELECT count(*) FROM genesys_transcripts"
        " WHERE conversation_start >= '2026-11-05' AND conversation_start < '2026-11-06'",
    )
    enriched = scalar(
        pg_server,
        "SELECT count(*) FROM transcript_insights WHERE source_id IN (SELECT conversation_id || ':' || communication_id"
        " || ':' || transcript_id FROM genesys_transcripts WHERE conversation_start >= '2026-11-05'"
        " AND conversation_start < '2026-11-06')",
    )
    assert landed > 20 and enriched == landed
    sent = emulator.counters()["ws_requests"]
    assert sent == landed
    second = dags_test(env, "genesys_transcript_enrichment", day)
    assert second.returncode == 0, (second.stdout + second.stderr)[-5000:]
    assert emulator.counters()["ws_requests"] == sent
