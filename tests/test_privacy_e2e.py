"""Privacy on every path: PII through every way text enters or leaves, then a scan of every store.

A real ``airflow dags test`` runs tests/dags/genesys_llm_privacy_test.py (batch operator,
completion operator, hook ``complete`` and ``astream``, gateway sensor probe) with PII in
prompts, item ids and metadata, and an emulator that answers with PII split across frames,
inside reasoning blocks and in long whitespace-free JSON. Then the scan reads what each store
really holds: the task logs (``airflow dags test`` prints them), every table of Airflow's metadata database
(XCom and ``rendered_task_instance_fields`` among them), the results, failures and audit tables,
the analytics webhook's payloads, and every payload the gateway received.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import psycopg
import pytest
from airflow_runner import airflow_env, dags_test
from pii_corpus import PII_CASES, raw_leaks

HERE = Path(__file__).resolve().parent
DAG_ID = "genesys_llm_privacy_test"
#: What the emulator answers: a whitespace-free JSON answer longer than any masking window, with
#: card numbers, emails and an SSN hidden by a reasoning block that a filter removes.
OUTPUT = (
    '{"records":['
    + ",".join(f'{{"n":{n},"card":"4111111111111111","mail":"jane.doe{n}@example.com"}}' for n in range(12))
    + '],"note":"SSN 123-45-<think>hidden</think>6789"}'
)
OUTPUT_VALUES = ("4111111111111111", "jane.doe3@example.com", "123-45-6789")


class WebhookReceiver(ThreadingHTTPServer):
    """The analytics webhook's other end, on loopback: keeps every body it is sent."""

    def __init__(self) -> None:
        self.bodies: list[str] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                receiver.bodies.append(self.rfile.read(length).decode("utf-8", "replace"))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                return

        super().__init__(("127.0.0.1", 0), Handler)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/analytics"


@pytest.fixture
def webhook() -> Iterator[WebhookReceiver]:
    server = WebhookReceiver()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        thread.join(timeout=10)


def metadata_database(airflow_home: Path) -> str:
    """Every row of Airflow's metadata database that belongs to this DAG or to no DAG at all.

    Other DAGs of the test folder are left out: their files are their authors' code.
    """
    lines = []
    with sqlite3.connect(Path(airflow_home, "airflow.db")) as db:
        tables = [name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        for table in tables:
            cursor = db.execute(f'SELECT * FROM "{table}"')
            columns = [column[0] for column in cursor.description]
            for row in cursor:
                record = dict(zip(columns, row, strict=True))
                if record.get("dag_id", DAG_ID) != DAG_ID:
                    continue
                lines.append(f"{table}: {json.dumps(record, default=lambda value: repr(value))}")
    return "\n".join(lines)


def provider_tables(pg_server) -> dict[str, str]:
    with psycopg.connect(pg_server.conninfo) as conn:
        return {
            table: "\n".join(json.dumps(row, default=str) for row in conn.execute(f"SELECT * FROM {table}").fetchall())
            for table in ("privacy_results", "privacy_results_failures", "genesys_llm_audit")
        }


def test_no_raw_pii_in_any_store_on_any_path(airflow_home, emulator, pg_server, webhook, tmp_path):
    texts = [case.text for case in PII_CASES]
    texts_file = tmp_path / "texts.json"
    texts_file.write_text(json.dumps(texts), encoding="utf-8")
    emulator.add_fault(endpoint="any", kind="pii_output", text=OUTPUT, split=7, count=None)
    env = airflow_env(airflow_home, HERE / "dags", emulator, pg_server)
    connection = json.loads(env["AIRFLOW_CONN_GENESYS_LLM_DEFAULT"])
    connection["extra"]["analytics_webhook_url"] = webhook.url
    env.update(
        AIRFLOW_CONN_GENESYS_LLM_DEFAULT=json.dumps(connection),
        GENESYS_PRIVACY_TEXTS_FILE=str(texts_file),
        AIRFLOW__LOGGING__LOGGING_LEVEL="DEBUG",  # every level the provider (and Airflow) logs at
    )

    done = dags_test(env, DAG_ID, "2026-11-20")
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]

    tables = provider_tables(pg_server)
    stores = {
        "task logs": done.stdout + done.stderr,  # `airflow dags test` prints every task's log
        "Airflow metadata database": metadata_database(airflow_home),
        "webhook payloads": "\n".join(webhook.bodies),
        "gateway payloads": "\n".join(emulator.received_payloads()),
        **tables,
    }
    # The scan must have something to find: each store saw the PII's traces, masked.
    assert "[REDACTED:" in stores["gateway payloads"], "the gateway never received a masked prompt"
    assert "[REDACTED:CARD]" in tables["privacy_results"], "the answers' PII never reached the results"
    assert "rendered_task_instance_fields" in stores["Airflow metadata database"]
    assert "[REDACTED:" in stores["Airflow metadata database"], "no masked rendered field or XCom was stored"
    assert webhook.bodies, "the analytics webhook was never called"
    assert len(tables["privacy_results"].splitlines()) == len(texts)

    leaks = {
        name: raw_leaks(text) + [value for value in OUTPUT_VALUES if value in text] for name, text in stores.items()
    }
    assert not any(leaks.values()), {name: found for name, found in leaks.items() if found}

    # Every task that appended audit records published the head it left, and the chain matches them.
    # `airflow dags test` prints the task logs: the shipped log a verifier would read.
    task_log = tmp_path / "dags-test.log"
    task_log.write_text(stores["task logs"])
    assert stores["task logs"].count("GENESYS_AUDIT_HEAD") >= 3  # batch, its callback, the completion
    verify = subprocess.run(
        [
            sys.executable,
            "-m",
            "airflow_provider_genesys_llm.governance",
            "verify",
            "--conninfo",
            pg_server.conninfo,
            "--witness-log",
            str(task_log),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert verify.returncode == 0 and "audit chain OK" in verify.stdout, verify.stdout + verify.stderr


def test_without_an_id_key_the_operators_fail_before_any_spend(airflow_home, emulator, pg_server):
    env = airflow_env(airflow_home, HERE / "dags", emulator, pg_server)
    del env["AIRFLOW_VAR_GENESYS_LLM_ID_KEY"]
    done = dags_test(env, "genesys_llm_operators_test", "2026-11-21")
    output = done.stdout + done.stderr
    assert done.returncode != 0
    assert "Airflow Variable 'genesys_llm_id_key'" in output and "airflow variables set genesys_llm_id_key" in output
    counters = emulator.counters()
    assert counters["ws_requests"] == 0 and counters["sse"] == 0 and counters["oauth"] == 0, counters
