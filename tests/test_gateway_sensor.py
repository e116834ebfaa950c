"""GenesysLLMGatewaySensor and GenesysLLMGatewayTrigger against the real emulator, no mocks.

Three levels: ``poke()`` and the trigger's ``run()`` called directly, and the sensor in both modes
inside a real DAG run (``airflow dags test`` in a subprocess, which runs triggers inline).
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import subprocess
import sys
import textwrap
import time
from datetime import timedelta
from pathlib import Path

import pytest
from airflow.sdk._shared.module_loading import import_string
from airflow.sdk.exceptions import AirflowException, AirflowSensorTimeout, TaskDeferred
from airflow.sdk.serde import deserialize, serialize

from airflow_provider_genesys_llm.client import GatewayAuthError, GatewayPermissionError, GatewayStatus
from airflow_provider_genesys_llm.client.auth import TOKEN_CACHE
from airflow_provider_genesys_llm.sensors import GenesysLLMGatewaySensor
from airflow_provider_genesys_llm.triggers import GatewayCheck, GatewayReadiness, GenesysLLMGatewayTrigger
from genesys_llm_emulator import EmulatorConfig, EmulatorServer

CONN_ID = "genesys_llm_default"
SECRET = "s3nsor-secret-7f2c"
CLIENTS = {"id": SECRET}


def connection_json(server: EmulatorServer, *, password: str = SECRET, **extra: object) -> str:
    return json.dumps(
        {
            "conn_type": "genesys_llm",
            "login": "id",
            "password": password,
            "extra": {
                "api_base_url": server.base_url,
                "login_base_url": server.base_url,
                "stream_base_url": server.ws_url,
                **extra,
            },
        }
    )


@pytest.fixture
def gateway(emulator, monkeypatch):
    """The emulator with a client whose secret is distinctive, and the default connection to it.

    ``max_attempts=1``: a transient error reaches the sensor at once instead of after the
    client's own retries (the sensor's next check is its retry)."""
    TOKEN_CACHE.clear()
    emulator.configure(clients=CLIENTS)
    monkeypatch.setenv("AIRFLOW_CONN_GENESYS_LLM_DEFAULT", connection_json(emulator, max_attempts=1))
    yield emulator
    TOKEN_CACHE.clear()


def poke_once(**kwargs):
    sensor = GenesysLLMGatewaySensor(task_id="wait", **kwargs)
    try:
        return sensor, sensor.poke({})
    finally:
        sensor.hook.close()


# --- poke() -------------------------------------------------------------------------------


def test_poke_is_done_when_available_and_returns_the_summary(gateway):
    sensor, result = poke_once()
    assert result.is_done
    summary = result.xcom_value
    assert summary["status"] == "available" and summary["checks"] == 1
    assert summary["remaining"] == 299 and summary["waited_seconds"] >= 0 and "probe" not in summary
    counters = gateway.counters()
    assert counters["status"] == 1 and counters["ws_requests"] == 0 and counters["sse"] == 0


def test_poke_is_not_done_while_unavailable(gateway):
    gateway.configure(status="unavailable")
    sensor, result = poke_once()
    assert result is False
    assert "last status 'unavailable'" in sensor._state().describe()


def test_poke_is_not_done_when_the_rate_window_is_nearly_used(gateway):
    # A window of 3: after this status call 2 requests are left, fewer than the 5 asked for.
    gateway.configure(rate_limit_per_minute=3)
    sensor, result = poke_once(min_remaining_requests=5)
    assert result is False
    assert sensor._state().last_remaining == 2
    assert "2 requests remaining" in sensor._state().describe()
    # The same window with 1 request left meets a minimum of 1.
    sensor, result = poke_once(min_remaining_requests=1)
    assert result.is_done and result.xcom_value["remaining"] == 1


def test_degraded_is_accepted_only_when_asked(gateway):
    gateway.configure(status="degraded")
    assert poke_once()[1] is False
    _, result = poke_once(accept_degraded=True)
    assert result.is_done and result.xcom_value["status"] == "degraded"


def test_a_status_without_rate_limit_satisfies_the_remaining_condition():
    readiness = GatewayReadiness(min_remaining_requests=10)
    assert readiness.observe(GatewayStatus(status="available"))
    assert readiness.summary(1.5) == {"status": "available", "remaining": None, "checks": 1, "waited_seconds": 1.5}


def test_rate_limited_check_counts_as_not_ready_yet(gateway):
    gateway.add_fault(endpoint="status", kind="http_error", status=429, retry_after=0)
    sensor = GenesysLLMGatewaySensor(task_id="wait")
    try:
        assert sensor.poke({}) is False
        assert "GatewayRateLimitError" in sensor._state().describe()
        result = sensor.poke({})
    finally:
        sensor.hook.close()
    assert result.is_done and result.xcom_value["checks"] == 2


def test_bad_credentials_fail_at_once_with_the_typed_error(gateway, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_GENESYS_LLM_DEFAULT", connection_json(gateway, password="wrong-password-1"))
    sensor = GenesysLLMGatewaySensor(task_id="wait", timeout=30, poke_interval=5)
    started = time.monotonic()
    with pytest.raises(GatewayAuthError, match="invalid_client") as caught:
        sensor.execute({})
    assert time.monotonic() - started < 5  # no second poke
    assert "wrong-password-1" not in str(caught.value)


def test_missing_permission_fails_at_once(gateway):
    gateway.configure(clients={"id": {"secret": SECRET, "scopes": ["ai:llm:gateway:stream"]}})
    with pytest.raises(GatewayPermissionError, match="ai:llm:gateway:use"):
        poke_once()


def test_probe_reports_latencies_and_is_one_billed_call(gateway):
    _, result = poke_once(probe=True, probe_max_tokens=4)
    probe = result.xcom_value["probe"]
    assert set(probe) == {"connect_ms", "ttft_ms", "total_ms"}
    assert probe["connect_ms"] > 0 and 0 < probe["ttft_ms"] <= probe["total_ms"]
    assert gateway.counters()["ws_requests"] == 1


def test_poke_mode_timeout_names_the_last_status_and_remaining(gateway):
    gateway.configure(status="unavailable")
    sensor = GenesysLLMGatewaySensor(task_id="wait", timeout=1, poke_interval=0.2)
    with pytest.raises(AirflowSensorTimeout) as caught:
        sensor.execute({})
    message = str(caught.value)
    assert "last status 'unavailable'" in message and "requests remaining" in message
    assert "genesys_llm_default" in message


def test_arguments_are_validated_when_the_dag_is_parsed():
    with pytest.raises(ValueError, match="min_remaining_requests"):
        GenesysLLMGatewaySensor(task_id="a", min_remaining_requests=-1)
    with pytest.raises(ValueError, match="probe_max_tokens"):
        GenesysLLMGatewaySensor(task_id="b", probe_max_tokens=0)
    with pytest.raises(ValueError, match="poke_interval"):
        GenesysLLMGatewaySensor(task_id="c", deferrable=True, poke_interval=0)


# --- deferral wiring and the trigger's serialization --------------------------------------


def test_deferrable_execute_defers_with_a_wall_clock_deadline(gateway):
    sensor = GenesysLLMGatewaySensor(
        task_id="wait",
        deferrable=True,
        timeout=120,
        poke_interval=2,
        exponential_backoff=True,
        max_wait=30,
        accept_degraded=True,
        min_remaining_requests=3,
        probe=True,
    )
    before = time.time()
    with pytest.raises(TaskDeferred) as caught:
        sensor.execute({})
    deferred = caught.value
    trigger = deferred.trigger
    assert isinstance(trigger, GenesysLLMGatewayTrigger) and deferred.method_name == "execute_complete"
    assert before + 120 <= trigger.deadline <= time.time() + 120
    assert deferred.timeout > timedelta(seconds=120)  # a backstop behind the trigger's own deadline
    assert (trigger.poll_interval, trigger.max_poll_interval) == (2, 30)
    assert trigger.check == GatewayCheck(accept_degraded=True, min_remaining_requests=3, probe=True)
    assert gateway.counters()["total"] == 0  # deferring makes no call


def test_trigger_serialization_round_trips_without_credentials(gateway):
    trigger = GenesysLLMGatewayTrigger(
        genesys_llm_conn_id=CONN_ID,
        deadline=time.time() + 60,
        accept_degraded=True,
        min_remaining_requests=2,
        poll_interval=1,
        max_poll_interval=8,
        probe=True,
        probe_prompt="Say OK.",
        probe_max_tokens=4,
    )
    classpath, kwargs = trigger.serialize()
    # The same path a real deferral takes: serde-encoded kwargs, then the class imported by name.
    rebuilt = import_string(classpath)(**deserialize(serialize(kwargs)))
    assert rebuilt.serialize() == (classpath, kwargs)
    text = json.dumps(kwargs)
    assert SECRET not in text and "password" not in text and "login" not in text
    assert all(isinstance(value, (str, int, float, bool)) for value in kwargs.values())


# --- the trigger's run() ------------------------------------------------------------------


async def run_trigger(**kwargs) -> list:
    settings = {"genesys_llm_conn_id": CONN_ID, "poll_interval": 0.1, "max_poll_interval": 0.1, **kwargs}
    return [event async for event in GenesysLLMGatewayTrigger(**settings).run()]


async def test_trigger_succeeds_once_the_gateway_becomes_available(gateway):
    gateway.configure(status="unavailable")

    async def flip() -> None:
        await asyncio.sleep(0.5)
        await asyncio.to_thread(gateway.configure, status="available")

    flipper = asyncio.create_task(flip())
    events = await run_trigger(deadline=time.time() + 10)
    await flipper
    assert len(events) == 1
    payload = events[0].payload
    assert payload["status"] == "success"
    summary = payload["summary"]
    assert summary["status"] == "available" and summary["checks"] >= 3 and summary["waited_seconds"] >= 0.4
    assert summary["checks"] == gateway.counters()["status"]


async def test_trigger_times_out_at_its_deadline_naming_the_last_status(gateway):
    gateway.configure(status="unavailable")
    started = time.monotonic()
    events = await run_trigger(deadline=time.time() + 1)
    assert 0.9 <= time.monotonic() - started < 3
    assert len(events) == 1
    payload = events[0].payload
    assert payload["status"] == "timeout"
    assert "last status 'unavailable'" in payload["message"] and "requests remaining" in payload["message"]
    assert payload["summary"]["status"] == "unavailable"


async def test_trigger_backs_off_exponentially(gateway):
    gateway.configure(status="unavailable")
    # Checks at about 0, 0.1, 0.3, 0.7, 1.1 and 1.5 s; a fixed 0.1 s interval would make 16.
    events = await run_trigger(deadline=time.time() + 1.5, poll_interval=0.1, max_poll_interval=0.4)
    checks = events[0].payload["summary"]["checks"]
    assert 5 <= checks <= 7 and checks == gateway.counters()["status"]


async def test_trigger_reports_a_permanent_error_at_once(gateway, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_GENESYS_LLM_DEFAULT", connection_json(gateway, password="wrong-password-2"))
    events = await run_trigger(deadline=time.time() + 30)
    assert len(events) == 1
    payload = events[0].payload
    assert payload["status"] == "error" and payload["error_type"] == "GatewayAuthError"
    assert "invalid_client" in payload["message"] and "wrong-password-2" not in payload["message"]


async def test_trigger_probe_reports_latencies(gateway):
    events = await run_trigger(deadline=time.time() + 10, probe=True, probe_max_tokens=4)
    probe = events[0].payload["summary"]["probe"]
    assert probe["connect_ms"] > 0 and 0 < probe["ttft_ms"] <= probe["total_ms"]
    assert gateway.counters()["ws_requests"] == 1


def test_execute_complete_returns_the_summary_or_fails_clearly():
    sensor = GenesysLLMGatewaySensor(task_id="wait", deferrable=True, poke_interval=1)
    summary = {"status": "available", "remaining": 5, "checks": 2, "waited_seconds": 1.0}
    assert sensor.execute_complete({}, {"status": "success", "summary": summary}) == summary
    with pytest.raises(AirflowSensorTimeout, match="last status 'unavailable'"):
        sensor.execute_complete({}, {"status": "timeout", "message": "not ready: last status 'unavailable'"})
    with pytest.raises(AirflowException, match="GatewayAuthError"):
        sensor.execute_complete({}, {"status": "error", "message": "GatewayAuthError: refused"})


# --- a real DAG run: `airflow dags test` in a subprocess ------------------------------------

DAG_ID = "genesys_gateway_sensor"
DAG_FILE = f"""
from airflow.sdk import DAG

from airflow_provider_genesys_llm.sensors import GenesysLLMGatewaySensor

with DAG(dag_id={DAG_ID!r}, schedule=None, catchup=False):
    for mode in ("poke", "deferrable"):
        GenesysLLMGatewaySensor(
            task_id=f"{{mode}}_available",
            deferrable=mode == "deferrable",
            poke_interval=0.5,
            timeout=30,
            probe=True,
        )
        GenesysLLMGatewaySensor(
            task_id=f"{{mode}}_unavailable",
            genesys_llm_conn_id="genesys_llm_down",
            deferrable=mode == "deferrable",
            poke_interval=0.5,
            timeout=3,
        )
"""


@pytest.fixture(scope="module")
def sensor_dag_env(airflow_home, tmp_path_factory) -> dict[str, str]:
    """The session's migrated AIRFLOW_HOME with a DAGs folder holding only this module's DAG."""
    dags = tmp_path_factory.mktemp("sensor_dags")
    (dags / "gateway_sensor_dag.py").write_text(textwrap.dedent(DAG_FILE))
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(airflow_home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    }
    return env


class DagRunResult:
    def __init__(self, returncode: int, output: str, home: Path) -> None:
        self.returncode = returncode
        self.output = output
        with sqlite3.connect(home / "airflow.db") as db:
            self.states = dict(db.execute("SELECT task_id, state FROM task_instance WHERE dag_id = ?", (DAG_ID,)))
            self.xcoms = {
                task_id: json.loads(value)
                for task_id, value in db.execute(
                    "SELECT task_id, value FROM xcom WHERE dag_id = ? AND key = 'return_value'", (DAG_ID,)
                )
            }
        # `dags test` runs one task at a time, trigger included: each task's log is one section.
        self.logs = {section.split(" ", 1)[0]: section for section in output.split("[DAG TEST] starting task_id=")[1:]}


@pytest.fixture(scope="module")
def dag_run(sensor_dag_env, emulator_server) -> DagRunResult:
    """One `airflow dags test` run of a DAG with both modes against an available and an
    unavailable gateway (a second emulator, so each task sees a fixed status)."""
    TOKEN_CACHE.clear()
    emulator_server.reset()
    emulator_server.configure(clients=CLIENTS)
    with EmulatorServer(EmulatorConfig().patched({"status": "unavailable", "clients": CLIENTS})) as down:
        env = {
            **sensor_dag_env,
            "AIRFLOW_CONN_GENESYS_LLM_DEFAULT": connection_json(emulator_server),
            "AIRFLOW_CONN_GENESYS_LLM_DOWN": connection_json(down),
        }
        done = subprocess.run(
            [sys.executable, "-m", "airflow", "dags", "test", DAG_ID],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
    emulator_server.reset()
    return DagRunResult(done.returncode, done.stdout + done.stderr, Path(sensor_dag_env["AIRFLOW_HOME"]))


@pytest.mark.parametrize("mode", ["poke", "deferrable"])
def test_dag_run_succeeds_when_available(dag_run, mode):
    task_id = f"{mode}_available"
    assert dag_run.states.get(task_id) == "success", dag_run.logs.get(task_id, dag_run.output)[-4000:]
    summary = dag_run.xcoms[task_id]
    assert summary["status"] == "available" and summary["checks"] == 1
    assert set(summary["probe"]) == {"connect_ms", "ttft_ms", "total_ms"}
    deferred = "running trigger in line" in dag_run.logs[task_id]
    assert deferred == (mode == "deferrable")


@pytest.mark.parametrize("mode", ["poke", "deferrable"])
def test_dag_run_times_out_cleanly_when_unavailable(dag_run, mode):
    task_id = f"{mode}_unavailable"
    log = dag_run.logs[task_id]
    assert dag_run.states.get(task_id) == "failed", log[-4000:]
    assert task_id not in dag_run.xcoms
    assert "AirflowSensorTimeout" in log
    assert "last status 'unavailable'" in log and "requests remaining in the rate-limit window" in log
    deferred = "running trigger in line" in log
    assert deferred == (mode == "deferrable")


def test_dag_run_fails_as_a_whole_and_never_prints_the_secret(dag_run):
    assert dag_run.returncode != 0 and "DagRun failed" in dag_run.output
    assert SECRET not in dag_run.output
