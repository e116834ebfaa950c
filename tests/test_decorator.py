"""``@task.genesys_llm``: registered as a provider task decorator, governed like the completion operator."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import psycopg
import pytest
from airflow_runner import airflow_env, dags_test
from statsd_listener import StatsdListener

from airflow_provider_genesys_llm.decorators.genesys_llm import PromptTypeError, as_messages
from airflow_provider_genesys_llm.get_provider_info import get_provider_info

HERE = Path(__file__).resolve().parent
DAG_ID = "genesys_llm_decorator_test"
PII_IN_PROMPT = ("jane.doe@example.com", "4111 1111 1111 1111")
PII_IN_OUTPUT = "call 212-555-0143 now"
PII_VALUES = (*PII_IN_PROMPT, "4111111111111111", "212-555-0143")


def test_the_decorator_is_registered_without_importing_airflow() -> None:
    [entry] = get_provider_info()["task-decorators"]
    assert entry["name"] == "genesys_llm"
    module, _, name = entry["class-name"].rpartition(".")
    assert getattr(__import__(module, fromlist=[name]), name).__name__ == "genesys_llm_task"


@pytest.mark.parametrize(
    ("returned", "expected"),
    [
        ("hello", [{"role": "user", "content": "hello"}]),
        (
            [{"role": "system", "content": "s", "extra": 1}, {"role": "user", "content": "u"}],
            [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}],
        ),
    ],
)
def test_a_prompt_or_messages_become_messages(returned: object, expected: list[dict[str, str]]) -> None:
    assert as_messages(returned) == expected


@pytest.mark.parametrize(
    "returned", ["", "   ", None, 42, [], [{"role": "user"}], [{"role": 1, "content": "x"}], {"a": 1}]
)
def test_anything_else_is_refused_with_what_to_return(returned: object) -> None:
    with pytest.raises(PromptTypeError, match="return the"):
        as_messages(returned)


def test_messages_cannot_be_passed_to_the_decorator() -> None:
    import pendulum
    from airflow.sdk import DAG, task

    with DAG("decorator_misuse", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC")):
        with pytest.raises(TypeError, match="do not pass messages"):

            @task.genesys_llm(messages=[{"role": "user", "content": "x"}])
            def prompt() -> str:
                return "x"

            prompt()


def test_decorated_task_runs_governed_under_airflow_dags_test(airflow_home, emulator, pg_server) -> None:
    """PII goes in through the function's argument and comes back in the model's answer: the
    gateway, the XCom and the rendered-template store see it masked; the audit chain gets a
    completion record per task and the completion metrics are emitted."""
    emulator.add_fault(endpoint="ws", kind="pii_output", text=PII_IN_OUTPUT, split=4, count=None)
    statsd = StatsdListener()
    env = {**airflow_env(airflow_home, HERE / "dags", emulator, pg_server), **statsd.env}
    done = dags_test(env, DAG_ID, "2026-11-21")
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]

    with sqlite3.connect(Path(airflow_home, "airflow.db")) as db:
        xcoms = {
            task_id: json.loads(value)
            for task_id, value in db.execute(
                "SELECT task_id, value FROM xcom WHERE dag_id = ? AND key = 'return_value'", (DAG_ID,)
            )
        }
        rendered = "\n".join(
            str(fields)
            for (fields,) in db.execute(
                "SELECT rendered_fields FROM rendered_task_instance_fields WHERE dag_id = ?", (DAG_ID,)
            )
        )
    classified = xcoms["classify"]
    answer = json.loads(classified["text"])
    assert answer["intent"] == "refund_request"  # the stand-in model read the (masked) transcript
    assert "[REDACTED:PHONE]" in answer["summary"] and classified["masking_counts"]["PHONE"] >= 1
    assert classified["masking_counts"]["EMAIL"] == 1 and classified["usage"]["completion_tokens"] > 0
    assert xcoms["follow_up"]["text"]  # the list-of-messages form, fed by the first task's XCom
    assert "[REDACTED:EMAIL]" in rendered  # the prompt built at run time, stored masked
    sent = "\n".join(emulator.state.counters.payloads)
    assert "[REDACTED:EMAIL]" in sent
    everything = json.dumps(xcoms) + rendered + sent + done.stdout + done.stderr
    for value in PII_VALUES:
        assert value not in everything, f"PII {value!r} leaked"

    with psycopg.connect(pg_server.conninfo) as conn:
        records = [
            row[0]
            for row in conn.execute(
                "SELECT record FROM genesys_llm_audit WHERE dag_id = %s AND kind = 'completion'", (DAG_ID,)
            )
        ]
    assert [(r["task_id"], r["status"]) for r in records] == [("classify", "success")]
    assert records[0]["prompt_hmac"] and records[0]["masking_counts"]["EMAIL"] == 1

    metrics = statsd.received()
    statsd.close()
    assert metrics.count("genesys_llm.completion.success.count") >= 2
