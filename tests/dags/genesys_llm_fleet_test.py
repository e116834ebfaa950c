"""A plan task, then a budgeted batch behind the fleet gate; run by tests/test_fleet_wiring.py with
``airflow dags test`` (the connection's extras enable coordination, prices and a DAG-run budget)."""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG

from airflow_provider_genesys_llm.operators.batch import GenesysLLMBatchCompletionOperator

ITEMS = [{"id": f"call-{n}", "text": f"Customer {n} asks why invoice {n * 37} was charged twice"} for n in range(30)]

with DAG(dag_id="genesys_llm_fleet_test", schedule=None, start_date=pendulum.datetime(2026, 11, 1, tz="UTC")) as dag:
    plan = GenesysLLMBatchCompletionOperator(
        task_id="plan",
        items=ITEMS,
        postgres_conn_id="genesys_pgvector",
        table="fleet_results",
        index_mode="none",
        max_tokens=40,
        dry_run=True,
        plan_sample_items=5,
    )
    enrich = GenesysLLMBatchCompletionOperator(
        task_id="enrich",
        items=ITEMS,
        postgres_conn_id="genesys_pgvector",
        table="fleet_results",
        index_mode="none",
        max_tokens=40,
        priority="interactive",
        on_budget_exhausted="succeed",
    )
    plan >> enrich
