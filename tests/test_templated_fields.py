"""Templated ``model``, ``temperature``, ``max_tokens`` and ``prompt_id``: rendered strings become the
values they stand for, and a value that is not fails the task before any request."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import psycopg
import pytest
from airflow_runner import airflow_env, dags_test

from airflow_provider_genesys_llm.exceptions import TemplatedFieldError
from airflow_provider_genesys_llm.operators.request_fields import coerce_request_fields

HERE = Path(__file__).resolve().parent
MODEL = "genesys-llm-v3-mini"


def fields(**values: object) -> SimpleNamespace:
    return SimpleNamespace(**{"model": None, "prompt_id": None, "temperature": None, "max_tokens": None, **values})


@pytest.mark.parametrize(
    ("rendered", "sweep", "expected"),
    [
        ({"temperature": "0.2", "max_tokens": "256"}, False, {"temperature": 0.2, "max_tokens": 256}),
        ({"temperature": " 1 ", "max_tokens": 64}, False, {"temperature": 1.0, "max_tokens": 64}),
        ({"temperature": "[0.1, 0.9]"}, True, {"temperature": [0.1, 0.9]}),
        ({"temperature": ["0.1", 0.9]}, True, {"temperature": [0.1, 0.9]}),
        ({"model": MODEL, "prompt_id": 42}, False, {"model": MODEL, "prompt_id": "42"}),
    ],
)
def test_rendered_strings_become_the_values_they_stand_for(rendered, sweep, expected) -> None:
    operator = fields(**rendered)
    coerce_request_fields(operator, sweep=sweep)
    for name, value in expected.items():
        assert getattr(operator, name) == value and type(getattr(operator, name)) is type(value)


@pytest.mark.parametrize(
    ("rendered", "sweep", "named"),
    [
        ({"temperature": "warm"}, True, "temperature rendered to 'warm'"),
        ({"temperature": "nan"}, False, "not a finite number"),
        ({"temperature": True}, False, "temperature rendered to True"),
        ({"temperature": [0.1, 0.9]}, False, "not one number"),  # a sweep is the batch operator's only
        ({"temperature": "[0.1, 0.9]"}, False, "which is not a number"),
        ({"temperature": "[0.1, oops]"}, True, "not a number or a list of numbers"),
        ({"temperature": ["0.1", "hot"]}, True, "temperature rendered to 'hot'"),
        ({"max_tokens": "lots"}, False, "max_tokens rendered to 'lots'"),
        ({"max_tokens": "25.5"}, False, "not a whole number"),
        ({"max_tokens": "0"}, False, "of at least 1"),
        ({"max_tokens": 12.0}, False, "max_tokens rendered to 12.0 (float)"),
        ({"model": "  "}, False, "leave it unset"),
        ({"prompt_id": ["a"]}, False, "prompt_id rendered to ['a'] (list), which is not a string"),
    ],
)
def test_a_value_the_field_cannot_take_is_named_and_never_retried(rendered, sweep, named) -> None:
    with pytest.raises(TemplatedFieldError, match="Not retried") as raised:
        coerce_request_fields(fields(**rendered), sweep=sweep)
    assert named in str(raised.value)


def test_a_rendered_value_is_quoted_masked_and_cut() -> None:
    """The value may come from XCom (a transcript templated into the wrong field): never quoted raw or whole."""
    transcript = "call me on 212-555-0143, I was double charged and want my money back today"
    with pytest.raises(TemplatedFieldError) as raised:
        coerce_request_fields(fields(temperature=transcript), sweep=False)
    assert "212-555-0143" not in str(raised.value) and "money back today" not in str(raised.value)


def payloads(emulator) -> list[dict]:
    """The completion requests the emulator received (WebSocket frames and SSE bodies)."""
    found = []
    for raw in emulator.received_payloads():
        try:
            payload = json.loads(raw)
        except ValueError:
            continue
        body = payload.get("payload", payload)
        if isinstance(body, dict) and "model" in body and "input" not in body:
            found.append(body)
    return found


def test_params_render_into_the_stored_model_temperatures_and_sent_max_tokens(airflow_home, emulator, pg_server):
    emulator.configure(
        models={
            "genesys-llm-v2": {"max_tokens": 4096},
            MODEL: {"max_tokens": 2048},
            "genesys-embed-v1": {"kind": "embedding"},
        }
    )
    env = airflow_env(airflow_home, HERE / "dags", emulator, pg_server)
    done = dags_test(env, "genesys_llm_templated_test", "2026-11-21")
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    with psycopg.connect(pg_server.conninfo) as conn:
        rows = conn.execute(
            "SELECT split_part(source_id, '-', 1), model, temperature FROM templated_results ORDER BY 1, 3"
        ).fetchall()
    assert sorted(rows) == sorted(
        [("single", MODEL, 0.3)] * 2 + [("sweep", MODEL, 0.1)] * 2 + [("sweep", MODEL, 0.9)] * 2
    )
    sent = payloads(emulator)
    assert len(sent) == 8, sent  # 4 + 2 batch completions, the operator's and the decorator's
    assert {body["model"] for body in sent} == {MODEL}
    assert all(json.dumps(body).count('"max_tokens": 48') == 1 for body in sent), sent


def test_a_non_numeric_rendered_value_fails_before_any_request(airflow_home, emulator, pg_server):
    env = airflow_env(airflow_home, HERE / "dags", emulator, pg_server)
    done = dags_test(env, "genesys_llm_templated_invalid_test", "2026-11-21")
    output = done.stdout + done.stderr
    assert "temperature rendered to 'warm' (str), which is not a number" in output, output[-4000:]
    assert "max_tokens rendered to 'lots' (str), which is not a whole number" in output, output[-4000:]
    assert emulator.counters()["total"] == 0  # not even a token request
    # Both tasks have retries=2: a value that renders the same every try fails at once instead.
    assert output.count("new_state=failed") == 2 and "up_for_retry" not in output, output[-4000:]
    with psycopg.connect(pg_server.conninfo) as conn:
        created = conn.execute("SELECT to_regclass('public.templated_invalid')").fetchone()[0]
    assert created is None  # failed before the store was touched


def test_a_task_failing_on_a_rendered_value_holds_only_masked_payloads() -> None:
    """Rendering fails on ``temperature`` after the payloads were swapped for masked previews, so a
    failure callback reading the task's attributes finds no raw prompt."""
    import pendulum
    from airflow.sdk import DAG

    from airflow_provider_genesys_llm.operators.batch import GenesysLLMBatchCompletionOperator

    with DAG("render_order", schedule=None, start_date=pendulum.datetime(2026, 11, 1, tz="UTC")) as dag:
        operator = GenesysLLMBatchCompletionOperator(
            task_id="batch",
            items=[{"id": "c-1", "text": "card {{ params.card }}"}],
            system="caller {{ params.card }}",
            temperature="{{ params.temperature }}",
            table="results",
        )
    context = {"params": {"card": "4111 1111 1111 1111", "temperature": "warm"}}
    with pytest.raises(TemplatedFieldError, match="temperature rendered to 'warm'"):
        operator.render_template_fields(context, jinja_env=dag.get_template_env())
    assert "4111" not in repr(operator.items) and "4111" not in repr(operator.system)
    assert "[REDACTED:CARD]" in repr(operator.items)
