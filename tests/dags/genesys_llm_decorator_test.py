"""``@task.genesys_llm`` in a DAG, run by tests/test_decorator.py with ``airflow dags test``."""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG, task

#: A transcript full of PII, handed to the decorated function as an argument.
TRANSCRIPT = (
    "Customer: I was charged twice on my last invoice and I want a refund. "
    "My e-mail is jane.doe@example.com and the card was 4111 1111 1111 1111.\n"
    "Agent: I've submitted a refund for the duplicate payment."
)

with DAG(
    dag_id="genesys_llm_decorator_test", schedule=None, start_date=pendulum.datetime(2026, 11, 1, tz="UTC")
) as dag:

    @task.genesys_llm(
        system="You analyse contact-center transcripts. Answer in JSON with the keys sentiment, intent and summary.",
        response_format="json",
        max_tokens=256,
        audit_conn_id="genesys_pgvector",
    )
    def classify(transcript: str, ds=None) -> str:
        return f"Call of {ds}:\n{transcript}"

    @task.genesys_llm(max_tokens=64)
    def follow_up(answer: dict) -> list[dict[str, str]]:
        return [
            {"role": "system", "content": "Write one line for the agent."},
            {"role": "user", "content": f"Intent found: {answer['text'][:200]}"},
        ]

    follow_up(classify(TRANSCRIPT))
