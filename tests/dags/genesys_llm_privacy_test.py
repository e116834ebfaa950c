"""Every path text takes through the provider, fed PII (tests/test_privacy_e2e.py scans what it leaves).

Paths: the batch operator (PII in templated items, ids, metadata, system prompt and SQL-free
items from XCom), the completion operator (PII in templated messages), the hook used directly
(``complete`` and ``astream``) and the gateway sensor's probe prompt. The emulator answers with
PII split across frames, inside reasoning blocks and in long whitespace-free JSON.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pendulum

from airflow.sdk import DAG, Variable, task

from airflow_provider_genesys_llm.callbacks.audit import audit_task_callback
from airflow_provider_genesys_llm.client import TokenEvent
from airflow_provider_genesys_llm.hooks.genesys_llm import GenesysLLMHook
from airflow_provider_genesys_llm.operators.batch import GenesysLLMBatchCompletionOperator
from airflow_provider_genesys_llm.operators.completion import GenesysLLMCompletionOperator
from airflow_provider_genesys_llm.sensors.gateway import GenesysLLMGatewaySensor

#: The test sets two Variables (environment): ``privacy_note`` (all PII texts in one string) and
#: ``privacy_texts`` (a JSON list), and ``privacy_dir`` where the items file goes. Nothing raw is
#: in this file, so the serialized DAG holds none.
NOTE = "{{ var.value.privacy_note }}"

with DAG(dag_id="genesys_llm_privacy_test", schedule=None, start_date=pendulum.datetime(2026, 11, 1, tz="UTC")) as dag:
    sensor = GenesysLLMGatewaySensor(
        task_id="probe_gateway", probe=True, probe_prompt=f"Say OK. {NOTE}", poke_interval=1, timeout=60
    )

    @task
    def transcripts() -> str:
        """Items as a landing task hands them on, a JSON-lines file: PII in ids, text and metadata."""
        texts = json.loads(Variable.get("privacy_texts"))
        path = Path(Variable.get("privacy_dir"), "items.jsonl")
        with path.open("w", encoding="utf-8") as handle:
            for number, text in enumerate(texts):
                item = {"id": f"case-{number}-{text}"[:500], "text": f"Customer said: {text}",
                        "metadata": {"caller": text, "number": number}}
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
        note = Variable.get("privacy_note")
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
