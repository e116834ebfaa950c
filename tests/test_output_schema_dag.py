"""``output_schema`` on ``@task.genesys_llm`` under ``airflow dags test``: the JSON schema is a
template rendered from the DAG's params, an answer invalid once is re-asked and the task's XCom is
the validated object, an answer that stays invalid fails its task once (its retries would re-pay)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import psycopg
from airflow_runner import airflow_env, dags_test

HERE = Path(__file__).resolve().parent
DAG_ID = "genesys_llm_output_schema_test"
CARD = "4111 1111 1111 1111"


def test_output_schema_under_airflow_dags_test(airflow_home, emulator, pg_server) -> None:
    emulator.add_fault(kind="invalid_output", contains="[[invalid-once]]", asks=1, answer="not_json")
    emulator.add_fault(kind="invalid_output", contains="[[invalid-always]]", asks=None, answer="bad_enum")
    done = dags_test(airflow_env(airflow_home, HERE / "dags", emulator, pg_server), DAG_ID, "2026-11-22")
    output = done.stdout + done.stderr

    with sqlite3.connect(Path(airflow_home, "airflow.db")) as db:
        xcoms = {
            task_id: json.loads(value)
            for task_id, value in db.execute(
                "SELECT task_id, value FROM xcom WHERE dag_id = ? AND key = 'return_value'", (DAG_ID,)
            )
        }
        states = dict(
            db.execute("SELECT task_id, state || '/' || try_number FROM task_instance WHERE dag_id = ?", (DAG_ID,))
        )
    assert states == {"classify": "success/1", "stubborn": "failed/1"}, output[-4000:]
    assert set(xcoms["classify"]) == {"sentiment", "intent", "summary"}
    assert xcoms["classify"]["sentiment"] in ("positive", "neutral", "negative")
    assert "stubborn" not in xcoms
    assert "OutputValidationFailedError" in output and "a retry would pay" in output
    # classify: first ask + one re-ask; stubborn: first ask + output_retries=1 re-ask, never retried.
    assert emulator.counters()["ws_requests"] == 4

    with psycopg.connect(pg_server.conninfo) as conn:
        records = [
            row[0]
            for row in conn.execute(
                "SELECT record FROM genesys_llm_audit WHERE dag_id = %s AND kind = 'completion' ORDER BY seq",
                (DAG_ID,),
            )
        ]
    attempts = sorted(
        (r["task_id"], r["parameters"]["output_reask"], r["parameters"]["output_check"], r["status"]) for r in records
    )
    assert attempts == [
        ("classify", 0, "invalid", "failed"),
        ("classify", 1, "valid", "success"),
        ("stubborn", 0, "invalid", "failed"),
        ("stubborn", 1, "invalid", "failed"),
    ]
    assert all(r["usage"]["completion_tokens"] > 0 for r in records)
    sent = "\n".join(emulator.received_payloads())
    for text in (json.dumps(xcoms), sent, output):
        assert CARD not in text and CARD.replace(" ", "") not in text
