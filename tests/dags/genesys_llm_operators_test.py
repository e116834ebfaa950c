"""A DAG using both operators, run by tests/test_dags.py with ``airflow dags test``."""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG

from airflow_provider_genesys_llm.operators.batch import GenesysLLMBatchCompletionOperator
from airflow_provider_genesys_llm.operators.completion import GenesysLLMCompletionOperator

with DAG(
    dag_id="genesys_llm_operators_test", schedule=None, start_date=pendulum.datetime(2026, 11, 1, tz="UTC")
) as dag:
    single = GenesysLLMCompletionOperator(
        task_id="single_completion",
        messages=[{"role": "user", "content": "Summarise ticket {{ ds }} in one line."}],
        max_tokens=32,
    )
    batch = GenesysLLMBatchCompletionOperator(
        task_id="batch_completion",
        items=[{"id": f"t-{n}", "text": f"ticket {n}: the invoice for {{{{ ds }}}} is wrong"} for n in range(20)]
        + [{"id": "bad", "text": "x", "temperature": 9.0}],
        postgres_conn_id="genesys_pgvector",
        table="operator_results",
        max_failed_ratio=0.1,
    )
    single >> batch
