"""An enrichment DAG writing a results table, and a DAG scheduled on that table's asset.

Run by tests/test_lineage_assets.py: the first under ``airflow dags test`` (with OpenLineage's file
transport and StatsD configured), the second from the run the scheduler creates for the asset event.
"""

from __future__ import annotations

import os

import pendulum
from airflow.sdk import DAG, task

from airflow_provider_genesys_llm.operators.assets import results_asset
from airflow_provider_genesys_llm.operators.batch import GenesysLLMBatchCompletionOperator

TABLE = "asset_results"
#: The test writes the items here; parsing elsewhere only needs a path, not the file.
JSONL = os.environ.get("GENESYS_ASSETS_TEST_JSONL", "/nonexistent/items.jsonl")
START = pendulum.datetime(2026, 11, 1, tz="UTC")

with DAG(dag_id="genesys_llm_assets_enrich", schedule=None, start_date=START) as enrich_dag:
    GenesysLLMBatchCompletionOperator(
        task_id="enrich",
        jsonl_path=JSONL,
        postgres_conn_id="genesys_pgvector",
        table=TABLE,
        max_tokens=32,
        max_failed_ratio=0.5,
    )

with DAG(
    dag_id="genesys_llm_assets_downstream",
    schedule=[results_asset(TABLE, postgres_conn_id="genesys_pgvector")],
    start_date=START,
) as downstream_dag:

    @task
    def read_event(**context) -> dict:
        """What a downstream author does: read what changed from the triggering event's extra."""
        events = [event for events in context["triggering_asset_events"].values() for event in events]
        return {"uri": events[-1].asset.uri, "extra": events[-1].extra, "events": len(events)}

    read_event()
