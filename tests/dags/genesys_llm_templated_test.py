"""Request options from templates, run by tests/test_templated_fields.py with ``airflow dags test``.

``{{ params.* }}`` renders to strings (no ``render_template_as_native_obj``): the operators and the
decorator must turn them into the model, temperatures and token limit the DAG asked for, or fail
the task before any request when a value is not a number.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import DAG, task

from airflow_provider_genesys_llm.operators.batch import GenesysLLMBatchCompletionOperator
from airflow_provider_genesys_llm.operators.completion import GenesysLLMCompletionOperator

#: A model the test adds to the emulator, so a row can only carry it if the template was used.
MODEL = "genesys-llm-v3-mini"
START = pendulum.datetime(2026, 11, 1, tz="UTC")
TEMPLATED = {"model": "{{ params.model }}", "max_tokens": "{{ params.max_tokens }}"}

with DAG(
    dag_id="genesys_llm_templated_test",
    schedule=None,
    start_date=START,
    params={"model": MODEL, "temperature": 0.3, "sweep": [0.1, 0.9], "max_tokens": 48},
):
    sweep = GenesysLLMBatchCompletionOperator(
        task_id="batch_sweep",
        items=[{"id": f"sweep-{n}", "text": f"ticket {n}: the invoice is wrong"} for n in range(2)],
        temperature="{{ params.sweep }}",  # a list param renders as the string "[0.1, 0.9]"
        postgres_conn_id="genesys_pgvector",
        table="templated_results",
        **TEMPLATED,
    )
    single_temperature = GenesysLLMBatchCompletionOperator(
        task_id="batch_single",
        items=[{"id": f"single-{n}", "text": f"ticket {n}: the parcel is late"} for n in range(2)],
        temperature="{{ params.temperature }}",
        postgres_conn_id="genesys_pgvector",
        table="templated_results",
        **TEMPLATED,
    )
    completion = GenesysLLMCompletionOperator(
        task_id="completion",
        messages=[{"role": "user", "content": "Summarise the late parcel ticket."}],
        temperature="{{ params.temperature }}",
        **TEMPLATED,
    )

    @task.genesys_llm(temperature="{{ params.temperature }}", **TEMPLATED)
    def decorated() -> str:
        return "Summarise the invoice ticket."

    sweep >> single_temperature >> completion >> decorated()

with DAG(
    dag_id="genesys_llm_templated_invalid_test",
    schedule=None,
    start_date=START,
    params={"temperature": "warm", "max_tokens": "lots"},
    # A retry would render the same value: the tasks must fail at once all the same.
    default_args={"retries": 2, "retry_delay": timedelta(seconds=1)},
):
    GenesysLLMBatchCompletionOperator(
        task_id="batch_warm",
        items=[{"id": "never-sent", "text": "ticket: the invoice is wrong"}],
        temperature="{{ params.temperature }}",
        postgres_conn_id="genesys_pgvector",
        table="templated_invalid",
    )
    GenesysLLMCompletionOperator(
        task_id="completion_lots",
        messages=[{"role": "user", "content": "never sent"}],
        max_tokens="{{ params.max_tokens }}",
    )
