"""``@task.genesys_llm`` with a templated ``output_schema``, run by tests/test_output_schema_dag.py."""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG, task

#: Rendered with the DAG's params: a rendered string is parsed as a JSON schema.
SCHEMA_TEMPLATE = (
    '{"type": "object", "required": ["sentiment", "intent", "summary"], "properties": {'
    '"sentiment": {"type": "string", "enum": {{ params.sentiments | tojson }}}, '
    '"intent": {"type": "string"}, "summary": {"type": "string"}}}'
)
SYSTEM = "You analyse contact-center transcripts. Answer in JSON with the keys sentiment, intent and summary."

with DAG(
    dag_id="genesys_llm_output_schema_test",
    schedule=None,
    start_date=pendulum.datetime(2026, 11, 1, tz="UTC"),
    params={"sentiments": ["positive", "neutral", "negative"]},
    default_args={"retries": 3, "retry_delay": pendulum.duration(seconds=0)},
) as dag:

    @task.genesys_llm(
        system=SYSTEM, response_format="json", output_schema=SCHEMA_TEMPLATE, audit_conn_id="genesys_audit"
    )
    def classify() -> str:
        return "I was charged twice and want a refund, card 4111 1111 1111 1111 [[invalid-once]]"

    @task.genesys_llm(
        system=SYSTEM,
        response_format="json",
        output_schema=SCHEMA_TEMPLATE,
        output_retries=1,
        audit_conn_id="genesys_audit",
    )
    def stubborn() -> str:
        return "The router keeps dropping the connection [[invalid-always]]"

    classify()
    stubborn()
