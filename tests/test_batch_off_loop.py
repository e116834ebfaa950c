"""The batch operator's ``aexecute`` keeps blocking work off the event loop.

Every Variable and Connection lookup, DDL statement, query, index build, audit append and XCom
push of a whole run (items, an audit chain and a deferred index) must run in a worker thread:
on the loop they would stall every stream of the batch, and a blocking supervisor request made
from the loop's thread while an async one holds the channel is refused by Airflow (3.3) or hangs
(3.2).
"""

from __future__ import annotations

import threading
from typing import Any

import pytest
from batch_items import TEST_ID_KEY_TEXT, make_items
from fixtures_postgres import PgConnect, PgServer, export_airflow_connection
from test_conversation_job_sensor import connection_json

from airflow_provider_genesys_llm.governance.chain import AuditChainStore
from airflow_provider_genesys_llm.operators import batch
from airflow_provider_genesys_llm.sinks.pgvector import PgVectorStore


class TaskInstance:
    """What the operator reads of Airflow's task instance; pushes are checked like the other calls."""

    dag_id, task_id, run_id, map_index, try_number = "off_loop", "batch", "manual__1", -1, 1

    def __init__(self, spy: Any) -> None:
        self.pushed: dict[str, Any] = {}
        self.xcom_push = spy("xcom_push", self._push)

    def _push(self, key: str, value: Any) -> None:
        self.pushed[key] = value


async def test_a_whole_run_makes_no_blocking_call_on_the_loop(
    emulator, pg_server: PgServer, pg_connect: PgConnect, monkeypatch: pytest.MonkeyPatch
) -> None:
    emulator.configure(clients={"id": "off-loop-secret-7c2e"})
    monkeypatch.setenv("AIRFLOW_CONN_GENESYS_LLM_DEFAULT", connection_json(emulator, password="off-loop-secret-7c2e"))
    monkeypatch.setenv("AIRFLOW_VAR_GENESYS_LLM_ID_KEY", TEST_ID_KEY_TEXT)
    export_airflow_connection(monkeypatch, "batch_pg", pg_server)
    loop_thread = threading.get_ident()
    calls: list[tuple[str, bool]] = []

    def spy(name: str, function: Any) -> Any:
        def run(*args: Any, **kwargs: Any) -> Any:
            calls.append((name, threading.get_ident() == loop_thread))
            return function(*args, **kwargs)

        return run

    for name in ("get_id_key", "pgvector_store_from_airflow", "audit_store", "store_conninfo"):
        monkeypatch.setattr(batch, name, spy(name, getattr(batch, name)))
    for cls, name in ((PgVectorStore, "ensure_schema"), (PgVectorStore, "build_index"), (PgVectorStore, "close")):
        monkeypatch.setattr(cls, name, spy(name, getattr(cls, name)))
    monkeypatch.setattr(AuditChainStore, "append", spy("audit.append", AuditChainStore.append))
    monkeypatch.setattr(PgVectorStore, "asset_uri", property(spy("asset_uri", PgVectorStore.asset_uri.fget)))
    operator_class = batch.GenesysLLMBatchCompletionOperator
    monkeypatch.setattr(operator_class, "_source", spy("_source", operator_class._source))

    operator = operator_class(
        task_id="batch",
        items=make_items(6),
        table="results",
        schema=pg_connect.schema,
        postgres_conn_id="batch_pg",
        index_mode="deferred",
        audit_table="off_loop_audit",
    )
    ti = TaskInstance(spy)
    manifest = await operator.aexecute({"ti": ti})

    assert manifest["counts"]["succeeded"] == 6 and ti.pushed["return_value"] == manifest
    names = {name for name, _ in calls}
    assert names >= {
        "get_id_key",
        "pgvector_store_from_airflow",
        "ensure_schema",
        "_source",
        "audit_store",
        "store_conninfo",
        "build_index",
        "audit.append",
        "asset_uri",
        "xcom_push",
        "close",
    }, names
    assert [name for name, on_loop in calls if on_loop] == []
