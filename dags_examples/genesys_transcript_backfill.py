"""Backfill: months of historical transcripts, one mapped task per day, safe to re-run.

Trigger with ``{"start": "2026-09-01", "end": "2026-10-01"}``. Each day lands its transcripts
and enriches them in its own mapped tasks, so many workers share the load; every write is an
idempotent upsert keyed by the transcript, and skip-existing means a re-run (or an Airflow
retry) only pays for what is not stored yet. Days past Genesys' ``dataAvailabilityDate`` are
skipped. Results load without the HNSW index; the last task builds it once (bulk mode).
"""

from __future__ import annotations

from datetime import datetime, timedelta

import pendulum
from _genesys_common import (
    AUDIT_CONN_ID,
    DEFAULT_ARGS,
    GATEWAY_POOL,
    INSIGHT_COLUMNS,
    INSIGHT_SCHEMA,
    INSIGHTS_TABLE,
    POSTGRES_CONN_ID,
    PROMPT_LABEL,
    SYSTEM_PROMPT,
    TRANSCRIPTS_SQL,
    TRANSCRIPTS_TABLE,
)
from airflow.sdk import DAG, Param, task

from airflow_provider_genesys_llm.hooks.postgres import pgvector_store_from_airflow
from airflow_provider_genesys_llm.operators.batch import GenesysLLMBatchCompletionOperator
from airflow_provider_genesys_llm.operators.transcripts import GenesysTranscriptsToPostgresOperator

with DAG(
    dag_id="genesys_transcript_backfill",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_tasks=8,
    default_args={**DEFAULT_ARGS, "retries": 2, "retry_delay": timedelta(seconds=30)},
    params={
        "start": Param("2026-11-01", type="string", format="date"),
        "end": Param("2026-11-08", type="string", format="date", description="exclusive"),
    },
    tags=["genesys", "llm", "backfill"],
) as dag:

    @task
    def days(params=None) -> list[dict[str, str]]:
        """One [start, end) interval per UTC day of the requested range."""
        start = datetime.fromisoformat(params["start"]).replace(tzinfo=pendulum.UTC)
        end = datetime.fromisoformat(params["end"]).replace(tzinfo=pendulum.UTC)
        if end <= start:
            raise ValueError(f"end {params['end']} must be after start {params['start']}")
        count = (end - start).days
        return [
            {
                "interval_start": (start + timedelta(days=n)).isoformat(),
                "interval_end": (start + timedelta(days=n + 1)).isoformat(),
            }
            for n in range(count)
        ]

    @task
    def enrichment_sources(intervals: list[dict[str, str]]) -> list[dict[str, object]]:
        return [{"sql_parameters": {"start": day["interval_start"], "end": day["interval_end"]}} for day in intervals]

    @task
    def build_vector_index() -> None:
        """Bulk mode: the HNSW index once, concurrently, after every day has loaded."""
        store = pgvector_store_from_airflow(POSTGRES_CONN_ID, table=INSIGHTS_TABLE, dimension=384, index="deferred")
        try:
            store.build_index(concurrently=True)
        finally:
            store.close()

    intervals = days()
    land = GenesysTranscriptsToPostgresOperator.partial(
        task_id="land_day", postgres_conn_id=POSTGRES_CONN_ID, table=TRANSCRIPTS_TABLE
    ).expand_kwargs(intervals)
    enrich = GenesysLLMBatchCompletionOperator.partial(
        task_id="enrich_day",
        sql=TRANSCRIPTS_SQL,
        postgres_conn_id=POSTGRES_CONN_ID,
        audit_conn_id=AUDIT_CONN_ID,
        table=INSIGHTS_TABLE,
        system=SYSTEM_PROMPT,
        prompt_label=PROMPT_LABEL,
        output_schema=INSIGHT_SCHEMA,
        output_columns=INSIGHT_COLUMNS,
        temperature=0.2,
        max_tokens=256,
        embed="json:summary",
        index_mode="none",
        pool=GATEWAY_POOL,
    ).expand_kwargs(enrichment_sources(intervals))
    land >> enrich >> build_vector_index()
