"""Metric names that survive plain StatsD: the outcome is in the name, not only in a tag.

A real StatsD capture (a UDP socket on loopback) of Airflow's own ``Stats`` client in a child process
shows the gateway sensor's ready, not-ready and failed checks as separate counters; the batch
operator's success and failed completion counters are captured from a DAG run in
test_lineage_assets.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from statsd_listener import StatsdListener
from test_hook import connection_json

from airflow_provider_genesys_llm.metrics import CONVERSATION_JOB, GATEWAY_CHECK, METRICS

HERE = Path(__file__).resolve().parent
OUTCOMES = {"success", "failed", "ready", "not_ready"}


def test_every_counted_outcome_is_in_the_name():
    counts = [name for name in METRICS if name.endswith(".count")]
    assert counts and all(OUTCOMES & set(name.split(".")) for name in counts), counts
    assert all(metric.type in {"counter", "timer", "gauge"} and metric.meaning for metric in METRICS.values())


def test_statsd_capture_tells_ready_not_ready_and_failed_checks_apart(emulator):
    emulator.add_fault(endpoint="status", kind="http_error", status=503, count=1)
    statsd = StatsdListener()
    connection = json.loads(connection_json(emulator))
    env = {
        **os.environ,
        **statsd.env,
        "AIRFLOW_CONN_GENESYS_LLM_DEFAULT": json.dumps(connection),
        "AIRFLOW_CONN_GENESYS_UNKNOWN_CLIENT": json.dumps({**connection, "login": "nobody"}),
    }
    try:
        done = subprocess.run(
            [sys.executable, str(HERE / "metrics_child.py")], env=env, capture_output=True, text=True, timeout=120
        )
        assert done.returncode == 0, done.stderr[-3000:]
        packets = statsd.received().splitlines()
    finally:
        statsd.close()
    results = [line.split()[1:] for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert results == [
        ["first", "False"],
        ["second", "True"],
        ["bad", "GatewayAuthError"],
        ["resumed", "job-1"],
        ["resumed", "AirflowFailException"],
        ["resumed", "AirflowSensorTimeout"],
    ], done.stdout[-3000:]
    counters = [line.split(":")[0] for line in packets if line.endswith("|c")]
    prefix = f"airflow.{GATEWAY_CHECK}"
    assert counters.count(f"{prefix}.not_ready.count") == 1, counters
    assert counters.count(f"{prefix}.ready.count") == 1, counters
    assert counters.count(f"{prefix}.failed.count") == 2, counters  # the auth error and the resumed timeout
    assert counters.count(f"{prefix}.failed.GatewayAuthError.count") == 1, counters
    assert counters.count(f"{prefix}.failed.AirflowSensorTimeout.count") == 1, counters
    # The deferred path: both sensors count the trigger's verdict through the shared sensor base.
    job = f"airflow.{CONVERSATION_JOB}"
    assert counters.count(f"{job}.ready.count") == 1, counters
    assert counters.count(f"{job}.failed.AirflowFailException.count") == 1, counters
