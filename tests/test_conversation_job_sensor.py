"""GenesysConversationJobSensor, its trigger and the hook's async and one-attempt methods, against
the real emulator (protocol section 9), no mocks.

Three levels, as for the gateway sensor: ``poke()`` and the trigger's ``run()`` called directly,
and the sensor in both modes inside one real ``airflow dags test`` run.
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import textwrap
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from airflow.sdk._shared.module_loading import import_string
from airflow.sdk.exceptions import AirflowException, AirflowFailException, AirflowSensorTimeout, TaskDeferred
from airflow.sdk.serde import deserialize, serialize
from airflow_runner import dags_test
from test_client import make_config

from airflow_provider_genesys_llm.client import (
    GatewayAuthError,
    GatewayBadRequestError,
    GatewayClient,
    GatewayPermissionError,
    GatewayUnavailableError,
)
from airflow_provider_genesys_llm.client.auth import TOKEN_CACHE
from airflow_provider_genesys_llm.client.retry import retrying
from airflow_provider_genesys_llm.client.transcripts import JobStatus, TranscriptSource
from airflow_provider_genesys_llm.hooks.genesys_llm import GenesysLLMHook
from airflow_provider_genesys_llm.sensors.conversation_job import GenesysConversationJobSensor
from airflow_provider_genesys_llm.triggers.conversation_job import (
    ConversationJobWatch,
    GenesysConversationJobTrigger,
)
from genesys_llm_emulator import EmulatorServer

CONN_ID = "genesys_llm_default"
SECRET = "j0b-sensor-secret-41d9"
CLIENTS = {"id": SECRET}
#: A whole UTC day that is well inside the emulator's data availability (now minus one hour).
DAY = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=3)


def connection_json(server: EmulatorServer, *, password: str = SECRET) -> str:
    """The connection keeps the client's default retry policy (5 attempts), with short backoff so
    the retries a test provokes are quick: what ``retry=False`` skips is real."""
    return json.dumps(
        {
            "conn_type": "genesys_llm",
            "login": "id",
            "password": password,
            "extra": {
                "api_base_url": server.base_url,
                "login_base_url": server.base_url,
                "stream_base_url": server.ws_url,
                "backoff_initial_seconds": 0.01,
                "backoff_max_seconds": 0.05,
            },
        }
    )


@pytest.fixture
def gateway(emulator, monkeypatch):
    TOKEN_CACHE.clear()
    emulator.configure(clients=CLIENTS)
    monkeypatch.setenv("AIRFLOW_CONN_GENESYS_LLM_DEFAULT", connection_json(emulator))
    yield emulator
    TOKEN_CACHE.clear()


@pytest.fixture
def hook(gateway):
    hook = GenesysLLMHook()
    yield hook
    hook.close()


def submit(days: int = 1) -> str:
    hook = GenesysLLMHook()
    try:
        job_id = hook.submit_conversation_job(DAY, DAY + timedelta(days=days))
    finally:
        hook.close()
    assert job_id
    return job_id


async def count_by_paging(server: EmulatorServer, job_id: str) -> int:
    """The reference count: page the results ourselves, 7 at a time, on a client of our own."""
    config = make_config(server, client_id="id", client_secret=SECRET)
    async with GatewayClient(config) as client:
        return len({c.conversationId async for c in TranscriptSource(client, page_size=7).conversations(job_id)})


def sensor(job_id: str, **kwargs) -> GenesysConversationJobSensor:
    return GenesysConversationJobSensor(task_id="wait_job", job_id=job_id, **kwargs)


def poke(task: GenesysConversationJobSensor):
    try:
        return task.poke({})
    finally:
        task.hook.close()


# --- the hook: async path and one-attempt status --------------------------------------------


async def test_aget_config_reads_the_connection_asynchronously_and_caches_it(hook, gateway, monkeypatch):
    def no_blocking_lookup(conn_id):
        raise AssertionError("the blocking connection lookup ran inside the event loop")

    monkeypatch.setattr(GenesysLLMHook, "get_connection", classmethod(lambda cls, conn_id: no_blocking_lookup(conn_id)))
    config = await hook.aget_config()
    assert config.api_url == gateway.base_url and config.client_secret.get_secret_value() == SECRET
    assert await hook.aget_config() is config and hook.config is config


async def test_aget_async_client_is_bound_to_the_loop_and_aclose_releases_it(hook, gateway):
    client = await hook.aget_async_client()
    assert await hook.aget_async_client() is client and hook.get_async_client() is client
    status = await hook.aget_status()
    assert status.status == "available"
    await hook.aclose()
    assert client._http.is_closed
    fresh = await hook.aget_async_client()
    assert fresh is not client and (await hook.aget_status()).status == "available"
    await hook.aclose()
    await hook.aclose()  # nothing left to close: a no-op
    assert gateway.counters()["status"] == 2


def test_status_without_retry_makes_exactly_one_request(hook, gateway):
    gateway.add_fault(endpoint="status", kind="http_error", status=503, retry_after=0, count=2)
    with pytest.raises(GatewayUnavailableError):
        hook.get_status(retry=False)
    assert gateway.counters()["status"] == 1
    # The default keeps the connection's retry policy: the second 503 is retried past.
    assert hook.get_status().status == "available"
    assert gateway.counters()["status"] == 3


async def test_async_status_and_job_status_without_retry_make_one_request(hook, gateway):
    gateway.add_fault(endpoint="status", kind="http_error", status=503, retry_after=0)
    with pytest.raises(GatewayUnavailableError):
        await hook.aget_status(retry=False)
    assert gateway.counters()["status"] == 1

    job_id = await asyncio.to_thread(submit)
    gateway.add_fault(endpoint="analytics_job_status", kind="http_error", status=503, retry_after=0)
    with pytest.raises(GatewayUnavailableError):
        await hook.aget_conversation_job(job_id, retry=False)
    assert gateway.counters()["analytics_job_status"] == 1
    assert (await hook.aget_conversation_job(job_id, retry=False)).state == "QUEUED"
    await hook.aclose()


def test_an_attempts_override_must_be_a_positive_integer(gateway):
    config = make_config(gateway)
    for bad in (0, -1, True, 1.5):
        with pytest.raises(ValueError, match="attempts"):
            retrying(config, bad)


# --- poke() ---------------------------------------------------------------------------------


def test_poke_waits_until_fulfilled_then_counts_every_conversation(gateway):
    # ~500 calls a day over three days: more than one results page of the count (1000).
    gateway.configure(conversations_per_day=500)
    job_id = submit(days=3)
    task = sensor(job_id)
    try:
        assert task.poke({}) is False  # QUEUED
        assert task.poke({}) is False  # PENDING
        assert task._state().state == "PENDING"
        result = task.poke({})
    finally:
        task.hook.close()
    assert result.is_done
    summary = result.xcom_value
    expected = asyncio.run(count_by_paging(gateway, job_id))
    assert expected > 1000
    assert summary == {
        "job_id": job_id,
        "state": "FULFILLED",
        "waited_seconds": summary["waited_seconds"],
        "conversations": expected,
    }
    counters = gateway.counters()
    assert counters["job_polls"] == 3
    # The sensor's count took two pages; the reference count (7 a page) took the rest.
    assert counters["result_pages"] == 2 + -(-expected // 7)


@pytest.mark.parametrize(
    ("arm", "state", "message"),
    [
        (
            {"fault": {"state": "FAILED", "error_message": "Query exceeded the result limit."}},
            "FAILED",
            "Query exceeded the result limit.",
        ),
        ({"config": {"job_outcome": "EXPIRED"}}, "EXPIRED", "The query results have expired."),
        ({"fault": {"state": "CANCELLED"}}, "CANCELLED", "The query was cancelled."),
        # A malicious or careless gateway quoting a customer: the message is kept, the PII is not.
        (
            {
                "fault": {
                    "state": "FAILED",
                    "error_message": "Row for jane.doe@example.com / 4111 1111 1111 1111 failed.",
                }
            },
            "FAILED",
            "Row for [REDACTED:EMAIL] / [REDACTED:CARD] failed.",
        ),
    ],
)
def test_a_job_that_ends_without_results_fails_naming_the_state_and_error_message(gateway, arm, state, message):
    if "fault" in arm:
        gateway.add_fault(endpoint="analytics_jobs", kind="job_outcome", **arm["fault"])
    else:
        gateway.configure(**arm["config"])
    job_id = submit()
    task = sensor(job_id, poke_interval=0.05, timeout=10)
    with pytest.raises(AirflowFailException) as caught:
        task.execute({})
    text = str(caught.value)
    assert f"ended in state {state}" in text and message in text and job_id in text
    assert gateway.counters()["job_polls"] == 3 and gateway.counters()["analytics_results"] == 0


def test_transient_errors_are_not_yet_and_each_check_is_one_attempt(gateway):
    gateway.configure(job_polls_to_fulfil=0)
    job_id = submit()
    gateway.add_fault(endpoint="analytics_job_status", kind="http_error", status=503, retry_after=0)
    task = sensor(job_id)
    try:
        assert task.poke({}) is False
        assert gateway.counters()["analytics_job_status"] == 1  # no client retry inside the poke
        assert "GatewayUnavailableError" in task._state().describe()
        # Counting fails through all five of the client's attempts: still "not yet".
        gateway.add_fault(endpoint="analytics_results", kind="http_error", status=503, retry_after=0, count=5)
        assert task.poke({}) is False
        assert "counting the results failed" in task._state().describe()
        result = task.poke({})
    finally:
        task.hook.close()
    assert result.is_done and result.xcom_value["conversations"] > 0
    assert task._state().checks == 3


def test_bad_credentials_fail_at_once(gateway, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_GENESYS_LLM_DEFAULT", connection_json(gateway, password="wrong-password-3"))
    started = time.monotonic()
    with pytest.raises(GatewayAuthError, match="invalid_client") as caught:
        sensor("some-job", timeout=30, poke_interval=5).execute({})
    assert time.monotonic() - started < 5 and "wrong-password-3" not in str(caught.value)


def test_permission_and_unknown_job_errors_fail_at_once(gateway):
    job_id = submit()
    gateway.add_fault(endpoint="analytics_job_status", kind="http_error", status=403)
    with pytest.raises(GatewayPermissionError):
        poke(sensor(job_id))
    with pytest.raises(GatewayBadRequestError, match="404"):
        poke(sensor("0b7c5a4e-0000-4000-8000-000000000000"))


def test_poke_mode_timeout_names_the_last_state(gateway):
    gateway.configure(job_polls_to_fulfil=1000)
    job_id = submit()
    with pytest.raises(AirflowSensorTimeout) as caught:
        sensor(job_id, timeout=0.5, poke_interval=0.1).execute({})
    assert "last state PENDING" in str(caught.value) and job_id in str(caught.value)


def test_arguments_are_validated_when_the_dag_is_parsed_or_rendered():
    with pytest.raises(ValueError, match="job_id"):
        sensor("../jobs/other")
    with pytest.raises(ValueError, match="job_id"):
        sensor("")
    with pytest.raises(ValueError, match="poke_interval"):
        sensor("abc", deferrable=True, poke_interval=0)
    templated = sensor("{{ params.job_id }}")  # checked once rendered
    templated.job_id = "not a job id"
    with pytest.raises(ValueError, match="not a job id"):
        templated.execute({})


# --- deferral wiring and the trigger's serialization ---------------------------------------


def test_deferrable_execute_defers_with_a_wall_clock_deadline_and_no_call(gateway):
    task = sensor("job-1", deferrable=True, timeout=120, poke_interval=2, exponential_backoff=True, max_wait=30)
    before = time.time()
    with pytest.raises(TaskDeferred) as caught:
        task.execute({})
    trigger = caught.value.trigger
    assert isinstance(trigger, GenesysConversationJobTrigger) and caught.value.method_name == "execute_complete"
    assert trigger.job_id == "job-1" and before + 120 <= trigger.deadline <= time.time() + 120
    assert caught.value.timeout > timedelta(seconds=120)
    assert (trigger.poll_interval, trigger.max_poll_interval) == (2, 30)
    assert gateway.counters()["total"] == 0


def test_trigger_serialization_round_trips_without_credentials(gateway):
    trigger = GenesysConversationJobTrigger(
        genesys_llm_conn_id=CONN_ID,
        job_id="3f1e-job",
        deadline=time.time() + 60,
        poll_interval=1,
        max_poll_interval=8,
    )
    classpath, kwargs = trigger.serialize()
    rebuilt = import_string(classpath)(**deserialize(serialize(kwargs)))
    assert rebuilt.serialize() == (classpath, kwargs)
    text = json.dumps(kwargs)
    assert SECRET not in text and "password" not in text and "login" not in text and "token" not in text
    assert set(kwargs) == {
        "genesys_llm_conn_id",
        "job_id",
        "deadline",
        "poll_interval",
        "max_poll_interval",
        "started_at",
    }


def test_execute_complete_returns_the_summary_or_fails_clearly():
    task = sensor("job-1", deferrable=True, poke_interval=1)
    summary = {"job_id": "job-1", "state": "FULFILLED", "waited_seconds": 1.0, "conversations": 3}
    assert task.execute_complete({}, {"status": "success", "summary": summary}) == summary
    with pytest.raises(AirflowFailException, match="state FAILED"):
        task.execute_complete({}, {"status": "failed", "message": "ended in state FAILED: boom"})
    with pytest.raises(AirflowSensorTimeout, match="PENDING"):
        task.execute_complete({}, {"status": "timeout", "message": "last state PENDING"})
    with pytest.raises(AirflowException, match="GatewayAuthError"):
        task.execute_complete({}, {"status": "error", "message": "GatewayAuthError: refused"})
    with pytest.raises(AirflowException, match="without an event"):
        task.execute_complete({}, None)


def test_the_watch_is_pure_and_judges_every_state():
    watch = ConversationJobWatch("job-1")
    assert [watch.observe(JobStatus(state=s)) for s in ("QUEUED", "PENDING")] == ["waiting", "waiting"]
    for state in ("FAILED", "CANCELLED", "EXPIRED"):
        assert ConversationJobWatch("j").observe(JobStatus(state=state, errorMessage="why")) == "failed"
    assert watch.observe(JobStatus(state="FULFILLED")) == "fulfilled"
    assert watch.summary(-1, 4) == {"job_id": "job-1", "state": "FULFILLED", "waited_seconds": 0.0, "conversations": 4}
    assert watch.observe_error(TimeoutError()) and not watch.observe_error(GatewayAuthError("no"))
    assert watch.checks == 5


# --- the trigger's run() --------------------------------------------------------------------


async def run_trigger(job_id: str, **kwargs) -> list:
    settings = {
        "genesys_llm_conn_id": CONN_ID,
        "job_id": job_id,
        "poll_interval": 0.1,
        "max_poll_interval": 0.1,
        "deadline": time.time() + 10,
        **kwargs,
    }
    return [event async for event in GenesysConversationJobTrigger(**settings).run()]


async def test_trigger_succeeds_once_fulfilled_with_the_count(gateway):
    job_id = await asyncio.to_thread(submit)
    gateway.add_fault(endpoint="analytics_job_status", kind="http_error", status=503, retry_after=0)  # one "not yet"
    events = await run_trigger(job_id)
    assert len(events) == 1 and events[0].payload["status"] == "success"
    summary = events[0].payload["summary"]
    assert summary["state"] == "FULFILLED" and summary["job_id"] == job_id and summary["waited_seconds"] >= 0.2
    assert summary["conversations"] == await count_by_paging(gateway, job_id)
    assert gateway.counters()["analytics_job_status"] == 4  # 503, QUEUED, PENDING, FULFILLED: no retries


async def test_trigger_reports_a_failed_job_once(gateway):
    gateway.add_fault(endpoint="analytics_jobs", kind="job_outcome", state="FAILED", error_message="Too many rows.")
    job_id = await asyncio.to_thread(submit)
    events = await run_trigger(job_id)
    assert len(events) == 1
    payload = events[0].payload
    assert payload["status"] == "failed" and payload["state"] == "FAILED"
    assert payload["error_message"] == "Too many rows."
    assert "ended in state FAILED: Too many rows." in payload["message"]
    assert gateway.counters()["analytics_results"] == 0


async def test_trigger_times_out_at_its_deadline_naming_the_last_state(gateway):
    gateway.configure(job_polls_to_fulfil=1000)
    job_id = await asyncio.to_thread(submit)
    started = time.monotonic()
    events = await run_trigger(job_id, deadline=time.time() + 1, max_poll_interval=0.4)
    assert 0.9 <= time.monotonic() - started < 3
    assert len(events) == 1
    payload = events[0].payload
    assert payload["status"] == "timeout" and payload["state"] == "PENDING"
    assert "was not FULFILLED within" in payload["message"] and "last state PENDING" in payload["message"]
    # Checks at about 0, 0.1, 0.3, 0.7 and 1.0 s: backoff, not a fixed 0.1 s interval.
    assert 4 <= gateway.counters()["job_polls"] <= 6


async def test_trigger_reports_a_permanent_error_at_once(gateway, monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_GENESYS_LLM_DEFAULT", connection_json(gateway, password="wrong-password-4"))
    events = await run_trigger("some-job", deadline=time.time() + 30)
    assert len(events) == 1
    payload = events[0].payload
    assert payload["status"] == "error" and payload["error_type"] == "GatewayAuthError"
    assert "wrong-password-4" not in payload["message"]


# --- one real DAG run: `airflow dags test` in a subprocess ------------------------------------

DAG_ID = "genesys_conversation_job_sensor"
DAG_FILE = """
from airflow.sdk import DAG, task

from airflow_provider_genesys_llm.hooks.genesys_llm import GenesysLLMHook
from airflow_provider_genesys_llm.sensors.conversation_job import GenesysConversationJobSensor

START, END = {start!r}, {end!r}


@task(multiple_outputs=True)
def submit(conn_id: str) -> dict[str, str]:
    from datetime import datetime

    hook = GenesysLLMHook(conn_id)
    try:
        start, end = datetime.fromisoformat(START), datetime.fromisoformat(END)
        return {{mode: hook.submit_conversation_job(start, end) for mode in ("poke", "deferrable")}}
    finally:
        hook.close()


with DAG(dag_id={dag_id!r}, schedule=None, catchup=False):
    for outcome, conn_id in (("ok", "genesys_llm_default"), ("failing", "genesys_llm_failing")):
        jobs = submit.override(task_id=f"submit_{{outcome}}")(conn_id)
        for mode in ("poke", "deferrable"):
            GenesysConversationJobSensor(
                task_id=f"{{mode}}_{{outcome}}",
                job_id=jobs[mode],
                genesys_llm_conn_id=conn_id,
                deferrable=mode == "deferrable",
                poke_interval=0.2,
                timeout=30,
            )
"""


class DagRunResult:
    def __init__(self, returncode: int, output: str, home: Path) -> None:
        self.returncode = returncode
        self.output = output
        with sqlite3.connect(home / "airflow.db") as db:
            self.states = dict(db.execute("SELECT task_id, state FROM task_instance WHERE dag_id = ?", (DAG_ID,)))
            self.xcoms = {
                (task_id, key): json.loads(value)
                for task_id, key, value in db.execute(
                    "SELECT task_id, key, value FROM xcom WHERE dag_id = ?", (DAG_ID,)
                )
            }
        self.logs = {section.split(" ", 1)[0]: section for section in output.split("[DAG TEST] starting task_id=")[1:]}
        self.expected: dict[str, int] = {}


@pytest.fixture(scope="module")
def dag_run(airflow_home, emulator_server, tmp_path_factory) -> DagRunResult:
    """One run: a job per mode on a healthy emulator, and a job per mode on a second emulator
    whose jobs end FAILED."""
    dags = tmp_path_factory.mktemp("job_sensor_dags")
    window = (DAY.isoformat(), (DAY + timedelta(days=1)).isoformat())
    (dags / "job_sensor_dag.py").write_text(
        textwrap.dedent(DAG_FILE.format(start=window[0], end=window[1], dag_id=DAG_ID))
    )
    TOKEN_CACHE.clear()
    emulator_server.reset()
    emulator_server.configure(clients=CLIENTS)
    with EmulatorServer() as failing:
        failing.configure(clients=CLIENTS, job_outcome="FAILED")
        env = {
            **os.environ,
            "AIRFLOW_HOME": str(airflow_home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW_CONN_GENESYS_LLM_DEFAULT": connection_json(emulator_server),
            "AIRFLOW_CONN_GENESYS_LLM_FAILING": connection_json(failing),
        }
        done = dags_test(env, DAG_ID, DAY.date().isoformat())
    result = DagRunResult(done.returncode, done.stdout + done.stderr, airflow_home)
    for mode in ("poke", "deferrable"):
        job_id = result.xcoms.get(("submit_ok", mode))
        if job_id:
            result.expected[mode] = asyncio.run(count_by_paging(emulator_server, job_id))
    emulator_server.reset()
    return result


@pytest.mark.parametrize("mode", ["poke", "deferrable"])
def test_dag_run_waits_for_the_job_and_returns_the_count(dag_run, mode):
    task_id = f"{mode}_ok"
    log = dag_run.logs.get(task_id, dag_run.output)
    assert dag_run.states.get(task_id) == "success", log[-4000:]
    summary = dag_run.xcoms[(task_id, "return_value")]
    assert summary["job_id"] == dag_run.xcoms[("submit_ok", mode)] and summary["state"] == "FULFILLED"
    assert summary["conversations"] == dag_run.expected[mode] > 0
    assert ("running trigger in line" in log) == (mode == "deferrable")


@pytest.mark.parametrize("mode", ["poke", "deferrable"])
def test_dag_run_fails_a_failed_job_naming_its_state(dag_run, mode):
    task_id = f"{mode}_failing"
    log = dag_run.logs[task_id]
    assert dag_run.states.get(task_id) == "failed", log[-4000:]
    assert (task_id, "return_value") not in dag_run.xcoms
    assert "AirflowFailException" in log and "ended in state FAILED" in log
    assert "The query failed to execute" in log
    assert ("running trigger in line" in log) == (mode == "deferrable")


def test_dag_run_fails_as_a_whole_and_never_prints_the_secret(dag_run):
    assert dag_run.returncode != 0 and "DagRun failed" in dag_run.output
    assert SECRET not in dag_run.output
