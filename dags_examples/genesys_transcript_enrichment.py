"""Nightly enrichment: yesterday's Genesys Cloud transcripts → sentiment/intent/summary → pgvector.

job → sensor → land transcripts → gateway ready → batch completion (JSON) → pgvector, with
task-level audit records on every task and an Airflow pool capping gateway streams. Runs
unchanged against the emulator (``make demo``) and a real tenant: only connections differ.
"""

from __future__ import annotations

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
from airflow.sdk import DAG, task
from airflow.sdk.exceptions import AirflowSkipException

from airflow_provider_genesys_llm.hooks.genesys_llm import GenesysLLMHook
from airflow_provider_genesys_llm.operators.batch import GenesysLLMBatchCompletionOperator
from airflow_provider_genesys_llm.operators.transcripts import GenesysTranscriptsToPostgresOperator
from airflow_provider_genesys_llm.sensors.conversation_job import GenesysConversationJobSensor
from airflow_provider_genesys_llm.sensors.gateway import GenesysLLMGatewaySensor

with DAG(
    dag_id="genesys_transcript_enrichment",
    schedule="@daily",
    start_date=pendulum.datetime(2026, 11, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    tags=["genesys", "llm", "enrichment"],
) as dag:

    @task
    def day_interval(data_interval_start=None, data_interval_end=None, logical_date=None) -> dict[str, str]:
        """The scheduled run's data interval; a manual run (UI, ``airflow dags test``) has an empty
        one, so it takes the whole UTC day of its logical date instead."""
        start, end = data_interval_start, data_interval_end
        if end <= start:
            start = logical_date.in_timezone("UTC").start_of("day")
            end = start.add(days=1)
        return {"start": start.isoformat(), "end": end.isoformat()}

    @task
    def submit_conversation_job(interval: dict[str, str]) -> str:
        """Ask Genesys Cloud for the interval's conversations (cut at dataAvailabilityDate)."""
        hook = GenesysLLMHook()
        try:
            job_id = hook.submit_conversation_job(pendulum.parse(interval["start"]), pendulum.parse(interval["end"]))
        finally:
            hook.close()
        if job_id is None:
            raise AirflowSkipException("no analytics data is available for this interval yet")
        return job_id

    interval = day_interval()
    job_id = submit_conversation_job(interval)
    wait_for_job = GenesysConversationJobSensor(
        task_id="wait_for_conversation_job", job_id=job_id, deferrable=True, poke_interval=5, timeout=3600
    )
    land = GenesysTranscriptsToPostgresOperator(
        task_id="land_transcripts", job_id=job_id, postgres_conn_id=POSTGRES_CONN_ID, table=TRANSCRIPTS_TABLE
    )
    gateway_ready = GenesysLLMGatewaySensor(task_id="gateway_ready", poke_interval=10, timeout=900)
    enrich = GenesysLLMBatchCompletionOperator(
        task_id="enrich_transcripts",
        sql=TRANSCRIPTS_SQL,
        sql_parameters=interval,
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
        max_failed_ratio=0.02,
        pool=GATEWAY_POOL,
        # With fleet coordination on the connection, the nightly run is served before backfills.
        priority="interactive",
        retries=2,
    )
    wait_for_job >> land >> gateway_ready >> enrich
