"""The DAG ``ci/wheel_smoke.sh`` runs from the installed wheel: wait for the gateway, ask it once.

No Postgres and no repository code: only what the wheel and its ``postgres`` extra install.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG

from airflow_provider_genesys_llm.operators.completion import GenesysLLMCompletionOperator
from airflow_provider_genesys_llm.sensors import GenesysLLMGatewaySensor

with DAG(dag_id="genesys_llm_wheel_smoke", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC")):
    ready = GenesysLLMGatewaySensor(task_id="gateway_ready", poke_interval=1, timeout=60)
    answer = GenesysLLMCompletionOperator(
        task_id="one_completion",
        messages=[{"role": "user", "content": "Say hello to the wheel smoke test on {{ ds }}."}],
        max_tokens=16,
    )
    ready >> answer
