"""Child process of test_metrics_names: real gateway-sensor checks with StatsD configured by the parent.

Checks, in order: one against a gateway answering 503 (not ready), one against a healthy gateway
(ready), one with an unknown client id (fails the task). Prints the outcome of each.
"""

from __future__ import annotations

from airflow_provider_genesys_llm.sensors.gateway import GenesysLLMGatewaySensor

good = GenesysLLMGatewaySensor(task_id="good", genesys_llm_conn_id="genesys_llm_default")
print("RESULT first", bool(good.poke({})))
print("RESULT second", bool(good.poke({})))
bad = GenesysLLMGatewaySensor(task_id="bad", genesys_llm_conn_id="genesys_unknown_client")
try:
    bad.poke({})
except Exception as exc:  # the error the task would fail with
    print("RESULT bad", type(exc).__name__)
