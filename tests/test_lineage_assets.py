"""Asset events, a downstream DAG scheduled on them, OpenLineage and StatsD from one real pipeline.

The enrichment DAG (tests/dags/genesys_llm_assets_test.py) runs under ``airflow dags test`` with
OpenLineage's file transport and StatsD pointed at a UDP socket here, one item failing at the
gateway. Then a real scheduler (LocalExecutor) and API server (its execution API) run: the scheduler
creates the downstream DAG's asset-triggered run from the event and its executor runs the task, which
reads the triggering event's extra. Each figure in the extra is checked against the tables.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest
from airflow_runner import airflow_env, dags_test
from statsd_listener import StatsdListener
from ui_server import api_server, free_port, stop_group

from airflow_provider_genesys_llm.operators.assets import results_asset

HERE = Path(__file__).resolve().parent
ENRICH, DOWNSTREAM, TABLE = "genesys_llm_assets_enrich", "genesys_llm_assets_downstream", "asset_results"
ITEMS = 6
DOWNSTREAM_TIMEOUT = 180.0


def airflow(env: dict[str, str], *args: str, timeout: float = 300) -> str:
    """``airflow *args`` in its own process group, killed whole if it outlives ``timeout`` (the scheduler
    starts children of its own); returns its output."""
    process = subprocess.Popen(
        [sys.executable, "-m", "airflow", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        output, _ = process.communicate(timeout=timeout)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)  # whatever it left behind
        process.wait(timeout=30)
    assert process.returncode == 0, f"airflow {' '.join(args)}:\n{output[-4000:]}"
    return output


def run_downstream(env: dict[str, str], database: Path, work: Path) -> str:
    """Scheduler plus API server until the downstream DAG's asset-triggered run ends; returns its run id."""
    env = {**env, "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32)}
    run = None
    with api_server(env, work) as server, (work / "scheduler.log").open("wb") as log:
        scheduler = subprocess.Popen(
            [sys.executable, "-m", "airflow", "scheduler"],
            env={**env, "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{server.base_url}/execution/"},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + DOWNSTREAM_TIMEOUT
            while time.monotonic() < deadline and scheduler.poll() is None:
                with sqlite3.connect(database) as db:
                    run = db.execute(
                        "SELECT run_id, state FROM dag_run WHERE dag_id = ? AND run_type = 'asset_triggered'",
                        (DOWNSTREAM,),
                    ).fetchone()
                if run and run[1] in ("success", "failed"):
                    break
                time.sleep(1.0)
        finally:
            stop_group(scheduler)
    tail = (work / "scheduler.log").read_text(errors="replace")[-4000:]
    assert run is not None, f"the scheduler created no asset-triggered run of the downstream DAG:\n{tail}"
    assert run[1] == "success", f"downstream run {run}:\n{tail}"
    return run[0]


@pytest.fixture(scope="module")
def pipeline(airflow_home, emulator_server, pg_server, tmp_path_factory) -> dict[str, object]:
    work = tmp_path_factory.mktemp("assets")
    items = work / "items.jsonl"
    items.write_text(
        "".join(json.dumps({"id": f"a{n}", "text": f"ticket {n}: refund please"}) + "\n" for n in range(ITEMS))
    )
    lineage = work / "openlineage.jsonl"
    statsd = StatsdListener()
    env = {
        **airflow_env(airflow_home, HERE / "dags", emulator_server, pg_server),
        "GENESYS_ASSETS_TEST_JSONL": str(items),
        "AIRFLOW__OPENLINEAGE__TRANSPORT": json.dumps({"type": "file", "log_file_path": str(lineage), "append": True}),
        **statsd.env,
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
    }
    try:
        airflow(env, "dags", "reserialize")  # the downstream DAG's asset schedule is known before the event
        airflow(env, "dags", "unpause", DOWNSTREAM)  # a paused DAG is not queued by asset events
        emulator_server.reset()
        emulator_server.add_fault(endpoint="ws", kind="stream_error", code="invalid_request", count=1)
        done = dags_test(env, ENRICH, "2026-11-24")
        emulator_server.reset()
        assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
        packets = statsd.received().splitlines()
    finally:
        statsd.close()
    downstream = run_downstream(env, Path(airflow_home, "airflow.db"), work)
    with sqlite3.connect(Path(airflow_home, "airflow.db")) as db:
        (enrich_run,) = db.execute(
            "SELECT run_id FROM dag_run WHERE dag_id = ? ORDER BY id DESC LIMIT 1", (ENRICH,)
        ).fetchone()
        (read,) = db.execute(
            "SELECT value FROM xcom WHERE dag_id = ? AND run_id = ? AND task_id = 'read_event'"
            " AND key = 'return_value'",
            (DOWNSTREAM, downstream),
        ).fetchone()
    return {"read": json.loads(read), "enrich_run": enrich_run, "lineage": lineage, "statsd": packets}


def test_downstream_dag_scheduled_on_the_results_asset_reads_what_changed(pipeline, pg_server):
    read, run_id = pipeline["read"], pipeline["enrich_run"]
    assert read["uri"] == results_asset(TABLE, postgres_conn_id="genesys_pgvector").uri
    assert read["events"] == 1
    extra = read["extra"]
    with psycopg.connect(pg_server.conninfo) as conn:
        written, prompt, completion = conn.execute(
            f"SELECT count(*), sum((usage->>'prompt_tokens')::int), sum((usage->>'completion_tokens')::int) "
            f"FROM {TABLE} WHERE run_id = %s",
            (run_id,),
        ).fetchone()
        (failed,) = conn.execute(f"SELECT count(*) FROM {TABLE}_failures WHERE run_id = %s", (run_id,)).fetchone()
        head_seq, head_hash = conn.execute("SELECT seq, record_hash FROM genesys_llm_audit_head").fetchone()
    assert (written, failed) == (ITEMS - 1, 1)
    assert extra["rows_written"] == written and extra["rows_failed"] == failed and extra["rows_skipped"] == 0
    assert extra["tokens"] == {"prompt": prompt, "completion": completion, "total": prompt + completion}
    assert extra["model"] == "genesys-llm-v2" and extra["table"] == f"public.{TABLE}"
    assert extra["audit_head"] == {
        "schema": "public",
        "table": "genesys_llm_audit",
        "seq": head_seq,
        "record_hash": head_hash,
    }
    assert extra["cost"] is None  # no [genesys_llm] prices configured: no guessed cost


def test_openlineage_event_has_the_input_file_the_output_table_and_the_genesys_facet(pipeline, pg_server):
    events = [json.loads(line) for line in Path(pipeline["lineage"]).read_text().splitlines()]
    complete = [e for e in events if e["eventType"] == "COMPLETE" and e["job"]["name"] == f"{ENRICH}.enrich"]
    assert len(complete) == 1, [(e["eventType"], e["job"]["name"]) for e in events]
    event = complete[0]
    assert [(d["namespace"], d["name"]) for d in event["inputs"]] == [
        ("file", str(Path(pipeline["lineage"]).with_name("items.jsonl")))
    ]
    assert [(d["namespace"], d["name"]) for d in event["outputs"]] == [
        (f"postgres://localhost:{pg_server.port}", f"{pg_server.dbname}.public.{TABLE}")
    ]
    facet = event["run"]["facets"]["genesysLlm"]
    extra = pipeline["read"]["extra"]
    assert facet["model"] == "genesys-llm-v2"
    assert facet["tokens"] == extra["tokens"]
    assert (facet["rows_written"], facet["rows_failed"], facet["rows_skipped"]) == (ITEMS - 1, 1, 0)
    assert facet["_schemaURL"].startswith("https://openlineage.io/spec/")
    assert "cost" not in facet  # nothing priced, nothing claimed


def test_statsd_gets_success_and_failed_counters_by_name_from_the_dag_run(pipeline):
    counters = [line.split("|")[0] for line in pipeline["statsd"] if line.endswith("|c")]
    success = [c for c in counters if ".genesys_llm.completion.success.count:" in c]
    failed = [c for c in counters if ".genesys_llm.completion.failed.count:" in c]
    by_class = [c for c in counters if ".genesys_llm.completion.failed.GatewayBadRequestError.count:" in c]
    assert len(success) == ITEMS - 1 and len(failed) == 1 and len(by_class) == 1, counters


MANIFEST = {
    "counts": {"succeeded": 3, "failed": 1, "invalid": 1, "skipped_existing": 7, "rows_written": 3},
    "tokens": {"prompt": 1000, "completion": 2000, "total": 3000},
    "task_audit": {"model": "genesys-llm-v2"},
    "audit_head": {"schema": "public", "table": "genesys_llm_audit", "seq": 12, "record_hash": "ab" * 32},
}


def batch_operator(table: str):
    from airflow_provider_genesys_llm.operators.batch import GenesysLLMBatchCompletionOperator

    return GenesysLLMBatchCompletionOperator(
        task_id="enrich", items=[], table=table, postgres_conn_id="genesys_pgvector", prompt_id="triage-v3"
    )


async def finish(operator, returned=MANIFEST, error: Exception | None = None):
    """An ``aexecute`` with the operators' decorator, ending as told; returns the run's outlet events."""
    from airflow.sdk.execution_time.context import OutletEventAccessors

    from airflow_provider_genesys_llm.operators.assets import batch_extra, emits_results_asset

    @emits_results_asset(batch_extra)
    async def aexecute(self, context):
        if error is not None:
            raise error
        return returned

    events = OutletEventAccessors()
    if error is None:
        await aexecute(operator, {"outlet_events": events})
    else:
        with pytest.raises(type(error)):
            await aexecute(operator, {"outlet_events": events})
    return events


async def test_literal_table_event_carries_counts_tokens_cost_prompt_and_head(monkeypatch):
    monkeypatch.setenv(
        "AIRFLOW__GENESYS_LLM__PRICES", '{"genesys-llm-v2": {"prompt_per_1k": 0.5, "completion_per_1k": 1.5}}'
    )
    operator = batch_operator("insights")
    asset = results_asset("insights", postgres_conn_id="genesys_pgvector")
    assert operator.outlets == [asset]  # declared at parse time, without a connection lookup
    extra = (await finish(operator))[asset].extra
    assert extra == {
        "table": "public.insights",
        "rows_written": 3,
        "rows_skipped": 7,
        "rows_failed": 2,
        "model": "genesys-llm-v2",
        "prompt_id": "triage-v3",
        "prompt_version": None,
        "tokens": MANIFEST["tokens"],
        "cost": 3.5,
        "audit_head": MANIFEST["audit_head"],
    }


async def test_templated_table_emits_through_the_alias_for_the_rendered_table():
    from airflow.sdk import AssetAlias

    from airflow_provider_genesys_llm.operators.assets import RESULTS_ALIAS

    operator = batch_operator("insights_{{ ds_nodash }}")
    assert operator.outlets == [AssetAlias(RESULTS_ALIAS)]
    operator.table = "insights_20261124"  # what rendering does before aexecute
    (event,) = (await finish(operator))[AssetAlias(RESULTS_ALIAS)].asset_alias_events
    assert event.dest_asset_key.uri == results_asset("insights_20261124", postgres_conn_id="genesys_pgvector").uri
    assert event.extra["rows_written"] == 3 and event.extra["cost"] is None  # no prices configured


async def test_a_failed_run_emits_no_event_extra():
    operator = batch_operator("insights")
    events = await finish(operator, error=RuntimeError("gateway down"))
    assert events[results_asset("insights", postgres_conn_id="genesys_pgvector")].extra == {}


def test_lineage_of_a_sql_source_names_the_tables_it_reads(monkeypatch):
    from airflow_provider_genesys_llm.operators.batch import GenesysLLMBatchCompletionOperator
    from airflow_provider_genesys_llm.operators.lineage import FACET_NAME

    source = {"conn_type": "postgres", "host": "db.internal", "port": 5433, "schema": "contact", "login": "reader"}
    monkeypatch.setenv("AIRFLOW_CONN_SOURCE_DB", json.dumps(source))
    monkeypatch.setenv("AIRFLOW_CONN_GENESYS_PGVECTOR", json.dumps({**source, "host": "/run/pg", "schema": "vec"}))
    operator = GenesysLLMBatchCompletionOperator(
        task_id="enrich",
        sql="SELECT t.id, t.text FROM landing.transcripts t JOIN queues q ON q.id = t.queue_id WHERE t.day = %(day)s",
        source_conn_id="source_db",
        postgres_conn_id="genesys_pgvector",
        table="insights",
    )
    lineage = operator.get_openlineage_facets_on_complete(None)
    assert sorted((d.namespace, d.name) for d in lineage.inputs) == [
        ("postgres://db.internal:5433", "contact.landing.transcripts"),
        ("postgres://db.internal:5433", "contact.public.queues"),
    ]
    # A Unix-socket host is named localhost, as the asset and OpenLineage's own Postgres naming do.
    assert [(d.namespace, d.name) for d in lineage.outputs] == [("postgres://localhost:5433", "vec.public.insights")]
    assert lineage.run_facets[FACET_NAME].rows_written is None  # no run finished: nothing claimed


def test_lineage_of_the_transcripts_operator(monkeypatch):
    from airflow_provider_genesys_llm.operators.assets import SUMMARY_ATTRIBUTE, transcripts_extra
    from airflow_provider_genesys_llm.operators.lineage import FACET_NAME
    from airflow_provider_genesys_llm.operators.transcripts import GenesysTranscriptsToPostgresOperator

    monkeypatch.setenv(
        "AIRFLOW_CONN_GENESYS_PGVECTOR", json.dumps({"conn_type": "postgres", "host": "pg", "schema": "cc"})
    )
    operator = GenesysTranscriptsToPostgresOperator(task_id="land", postgres_conn_id="genesys_pgvector")
    summary = {"conversations": 12, "transcripts": 30, "rows_written": 30, "without_transcript": 2, "job_id": "j-1"}
    setattr(operator, SUMMARY_ATTRIBUTE, transcripts_extra(operator, summary))
    lineage = operator.get_openlineage_facets_on_complete(None)
    assert [(d.namespace, d.name) for d in lineage.inputs] == [
        ("genesys-cloud://genesys_llm_default", "conversations.transcripts")
    ]
    assert [(d.namespace, d.name) for d in lineage.outputs] == [("postgres://pg:5432", "cc.public.genesys_transcripts")]
    facet = lineage.run_facets[FACET_NAME]
    assert (facet.rows_written, facet.conversations, facet.transcripts) == (30, 12, 30)
