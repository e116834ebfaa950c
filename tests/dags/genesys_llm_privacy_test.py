"""Every path text takes through the provider, fed PII (tests/test_privacy_e2e.py scans what it leaves).

Paths: the batch operator (PII in templated items, ids, metadata, system prompt and SQL-free
items from XCom), the completion operator (PII in templated messages), the hook used directly
(``complete`` and ``astream``) and the gateway sensor's probe prompt. The emulator answers with
PII split across frames, inside reasoning blocks and in long whitespace-free JSON.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path

import pendulum
from airflow.sdk import DAG, task

from airflow_provider_genesys_llm.callbacks.audit import audit_task_callback
from airflow_provider_genesys_llm.client import TokenEvent
from airflow_provider_genesys_llm.hooks.genesys_llm import GenesysLLMHook
from airflow_provider_genesys_llm.operators.batch import GenesysLLMBatchCompletionOperator
from airflow_provider_genesys_llm.operators.completion import GenesysLLMCompletionOperator
from airflow_provider_genesys_llm.sensors.gateway import GenesysLLMGatewaySensor

#: The test writes the PII texts (a JSON list) to the file named by this environment variable.
#: Nothing raw is in this file, so the serialized DAG holds none; the texts reach templates through
#: a macro, not a Variable (Airflow logs the values of Variables it masks at DEBUG).
TEXTS_FILE = "GENESYS_PRIVACY_TEXTS_FILE"
NOTE = "{{ privacy_note() }}"


def privacy_texts() -> list[str]:
    return json.loads(Path(os.environ[TEXTS_FILE]).read_text(encoding="utf-8"))


def privacy_note() -> str:
    return " | ".join(privacy_texts())


with DAG(
    dag_id="genesys_llm_privacy_test",
    schedule=None,
    start_date=pendulum.datetime(2026, 11, 1, tz="UTC"),
    user_defined_macros={"privacy_note": privacy_note},
) as dag:
    sensor = GenesysLLMGatewaySensor(
        task_id="probe_gateway", probe=True, probe_prompt=f"Say OK. {NOTE}", poke_interval=1, timeout=60
    )

    @task
    def transcripts() -> str:
        """Items as a landing task hands them on, a JSON-lines file: PII in ids, text and metadata."""
        path = Path(os.environ[TEXTS_FILE]).with_name("items.jsonl")
        with path.open("w", encoding="utf-8") as handle:
            for number, text in enumerate(privacy_texts()):
                item = {
                    "id": f"case-{number}-{text}"[:500],
                    "text": f"Customer said: {text}",
                    "metadata": {"caller": text, "number": number},
                }
                handle.write(json.dumps(item) + "\n")
        return str(path)

    batch = GenesysLLMBatchCompletionOperator(
        task_id="batch_with_pii",
        jsonl_path=transcripts(),
        system=f"Summarise the call of {NOTE} in JSON.",
        response_format="json",
        postgres_conn_id="genesys_pgvector",
        table="privacy_results",
        embed="completion",
        index_mode="none",
        on_success_callback=audit_task_callback("genesys_pgvector"),
    )

    completion = GenesysLLMCompletionOperator(
        task_id="completion_with_pii",
        messages=[{"role": "user", "content": f"Summarise: {NOTE}"}],
        audit_conn_id="genesys_pgvector",
    )

    @task
    def hook_with_pii() -> dict[str, str]:
        """The hook used directly: governed by default, sync and streaming."""
        note = privacy_note()
        hook = GenesysLLMHook()
        try:
            whole = hook.complete([{"role": "user", "content": f"Summarise: {note}"}])
        finally:
            hook.close()

        async def stream() -> str:
            streaming = GenesysLLMHook()
            parts = [
                event.text
                async for event in streaming.astream([{"role": "user", "content": note}], chunk_tokens=3)
                if isinstance(event, TokenEvent)
            ]
            await streaming.aclose()
            return "".join(parts)

        return {"complete": whole.text, "stream": asyncio.run(stream())}

    sensor >> [batch, completion, hook_with_pii()]
