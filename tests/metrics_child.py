"""Child process of test_metrics_names: real gateway-sensor checks with StatsD configured by the parent.

Checks, in order: one against a gateway answering 503 (not ready), one against a healthy gateway
(ready), one with an unknown client id (fails the task). Prints the outcome of each. Then both
sensors resume from trigger events (the deferred path, counted by the shared sensor base): the
conversation-job sensor from a success and a failed event, the gateway sensor from a timeout.
"""

from __future__ import annotations

from airflow_provider_genesys_llm.sensors.conversation_job import GenesysConversationJobSensor
from airflow_provider_genesys_llm.sensors.gateway import GenesysLLMGatewaySensor

good = GenesysLLMGatewaySensor(task_id="good", genesys_llm_conn_id="genesys_llm_default")
print("RESULT first", bool(good.poke({})))
print("RESULT second", bool(good.poke({})))
bad = GenesysLLMGatewaySensor(task_id="bad", genesys_llm_conn_id="genesys_unknown_client")
try:
    bad.poke({})
except Exception as exc:  # the error the task would fail with
    print("RESULT bad", type(exc).__name__)

job = GenesysConversationJobSensor(task_id="job", job_id="job-1")
print("RESULT resumed", job.execute_complete({}, {"status": "success", "summary": {"job_id": "job-1"}})["job_id"])
for sensor, event in (
    (job, {"status": "failed", "message": "FAILED"}),
    (good, {"status": "timeout", "message": "late"}),
):
    try:
        sensor.execute_complete({}, event)
    except Exception as exc:
        print("RESULT resumed", type(exc).__name__)
