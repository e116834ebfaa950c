"""Transcripts full of PII through the batch operator (tests/test_governance_e2e.py scans what it leaves)."""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG

from airflow_provider_genesys_llm.callbacks.audit import audit_task_callback
from airflow_provider_genesys_llm.operators.batch import GenesysLLMBatchCompletionOperator

PII_IN_PROMPTS = ("4111 1111 1111 1111", "123-45-6789", "jane.doe@example.com", "(415) 555-0132")

with DAG(dag_id="genesys_llm_pii_test", schedule=None, start_date=pendulum.datetime(2026, 11, 1, tz="UTC")) as dag:
    GenesysLLMBatchCompletionOperator(
        task_id="enrich_with_pii",
        items=[
            {
                "id": f"pii-{n}",
                "text": f"My card is {PII_IN_PROMPTS[0]}, SSN {PII_IN_PROMPTS[1]}, "
                f"mail {PII_IN_PROMPTS[2]}, phone {PII_IN_PROMPTS[3]} (case {n})",
            }
            for n in range(12)
        ],
        system="Summarise the call in JSON with sentiment, intent and summary.",
        response_format="json",
        postgres_conn_id="genesys_pgvector",
        table="pii_results",
        embed="source",
        on_success_callback=audit_task_callback("genesys_pgvector"),
    )
