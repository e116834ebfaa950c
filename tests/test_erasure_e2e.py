"""Erasure under real Airflow: enrich a day, erase one conversation with the operator, re-run the day."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import psycopg
from airflow_runner import airflow_env, dags_test, jobs_answer_at_once
from test_erasure import traces

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DAY = "2026-11-09"
INTERVAL = ("2026-11-09", "2026-11-10")


def day_transcripts(pg_server) -> dict[str, list[dict[str, str]]]:
    by_conversation: dict[str, list[dict[str, str]]] = {}
    with psycopg.connect(pg_server.conninfo) as conn:
        rows = conn.execute(
            "SELECT t.conversation_id, t.communication_id, t.transcript_id, t.text, i.content"
            " FROM genesys_transcripts t LEFT JOIN transcript_insights i"
            " ON i.source_id = t.conversation_id || ':' || t.communication_id || ':' || t.transcript_id"
            " WHERE t.conversation_start >= %s AND t.conversation_start < %s",
            INTERVAL,
        )
        for conversation_id, communication_id, transcript_id, text, content in rows:
            by_conversation.setdefault(conversation_id, []).append(
                {"key": f"{conversation_id}:{communication_id}:{transcript_id}", "text": text, "content": content}
            )
    return by_conversation


def test_erased_conversation_leaves_no_trace_and_a_rerun_of_the_day_does_not_restore_it(
    airflow_home, emulator, pg_server
) -> None:
    enrichment = airflow_env(airflow_home, ROOT / "dags_examples", emulator, pg_server)
    jobs_answer_at_once(emulator)
    first = dags_test(enrichment, "genesys_transcript_enrichment", DAY)
    assert first.returncode == 0, (first.stdout + first.stderr)[-4000:]
    landed = day_transcripts(pg_server)

    def needles_of(conversation_id: str) -> list[str]:
        items = landed[conversation_id]
        return sorted(
            {conversation_id, *(i["key"] for i in items), *(i["text"] for i in items), *(i["content"] for i in items)}
        )

    # The stand-in model's summaries are extractive: two scripted calls (other days, other tests on
    # this database) can share one word for word. Erase a conversation whose traces are its own, so
    # "no trace left" means no trace of it.
    erased_id = next(
        conversation_id
        for conversation_id in sorted(landed)
        if traces(pg_server_connect(pg_server), "public", needles_of(conversation_id))["transcript_insights"]
        == len(landed[conversation_id])
    )
    items = landed[erased_id]
    assert all(item["content"] for item in items)  # landed and enriched
    needles = needles_of(erased_id)

    erasure = airflow_env(airflow_home, HERE / "dags", emulator, pg_server)
    erasure["AIRFLOW_VAR_ERASURE_REQUEST"] = erased_id
    done = dags_test(erasure, "genesys_erasure_test", DAY)
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    left = traces(pg_server_connect(pg_server), "public", needles)
    assert not any(left.values()), f"traces left: { {t: n for t, n in left.items() if n} }"
    stored = "\n".join(
        str(row)
        for table in ("xcom", "rendered_task_instance_fields", "dag_run")
        for row in metadata(airflow_home, f"SELECT * FROM {table} WHERE dag_id = 'genesys_erasure_test'")
    )
    assert erased_id not in stored and "1 id(s), not stored" in stored
    [(summary,)] = metadata(airflow_home, "SELECT value FROM xcom WHERE task_id = 'erase_conversations'")
    summary = json.loads(summary)
    assert summary["ids"] == 1 and summary["by_table"]["public.genesys_transcripts"] == len(items)

    sent = emulator.counters()["ws_requests"]
    again = dags_test(enrichment, "genesys_transcript_enrichment", DAY)
    assert again.returncode == 0, (again.stdout + again.stderr)[-4000:]
    assert not any(traces(pg_server_connect(pg_server), "public", needles).values())
    assert set(day_transcripts(pg_server)) == set(landed) - {erased_id}
    assert emulator.counters()["ws_requests"] == sent  # nothing re-sent, the erased one included
    [(landing,)] = metadata(
        airflow_home,
        "SELECT value FROM xcom WHERE dag_id = 'genesys_transcript_enrichment' AND task_id = 'land_transcripts'"
        " ORDER BY timestamp DESC LIMIT 1",
    )
    assert json.loads(landing)["skipped_erased"] == 1

    verify = subprocess.run(
        [sys.executable, "-m", "airflow_provider_genesys_llm.governance", "verify", "--conninfo", pg_server.conninfo],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert verify.returncode == 0, verify.stdout + verify.stderr


def metadata(airflow_home: Path, query: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(Path(airflow_home, "airflow.db")) as db:
        return db.execute(query).fetchall()


def pg_server_connect(pg_server):
    return lambda: psycopg.connect(pg_server.conninfo)
