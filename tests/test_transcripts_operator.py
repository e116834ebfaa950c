"""The transcripts operator's job wait (the shared polling loop, with a deadline) and its event loop
hygiene: connection lookups and DDL run in threads, never on the loop (emulator + pgserver)."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta

import pytest
from fixtures_postgres import PgConnect, PgServer, export_airflow_connection
from test_client import make_config
from test_conversation_job_sensor import connection_json

from airflow_provider_genesys_llm.client import GatewayClient
from airflow_provider_genesys_llm.client.transcripts import TranscriptSource
from airflow_provider_genesys_llm.exceptions import ConversationJobFailedError, ConversationJobTimeoutError
from airflow_provider_genesys_llm.hooks import postgres
from airflow_provider_genesys_llm.hooks.polling import check_intervals, poll_until
from airflow_provider_genesys_llm.operators.transcripts import GenesysTranscriptsToPostgresOperator
from airflow_provider_genesys_llm.sinks.transcripts import TranscriptStore

DAY = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - timedelta(days=3)


def operator(**kwargs) -> GenesysTranscriptsToPostgresOperator:
    return GenesysTranscriptsToPostgresOperator(
        task_id="land", interval_start=DAY, interval_end=DAY + timedelta(days=1), **kwargs
    )


# --- the loop ---------------------------------------------------------------------------------


async def test_poll_until_backs_off_and_stops_at_the_deadline() -> None:
    started = time.monotonic()
    calls: list[float] = []

    async def never() -> None:
        calls.append(time.monotonic() - started)

    assert await poll_until(never, deadline=time.time() + 0.35, poll_interval=0.1, max_poll_interval=0.2) is None
    # Checks at 0, 0.1, 0.3 (doubled wait) and 0.35 (the wait cut at the deadline), then no more.
    assert len(calls) == 4
    gaps = [b - a for a, b in zip(calls, calls[1:], strict=False)]
    for gap, expected in zip(gaps, [0.1, 0.2, 0.05], strict=True):
        assert expected - 0.01 <= gap < expected + 0.08, gaps
    assert time.monotonic() - started < 0.6


async def test_poll_until_returns_the_first_result_without_waiting_again() -> None:
    answers = iter([None, None, "done", "never asked"])

    async def check() -> str | None:
        return next(answers)

    assert await poll_until(check, deadline=time.time() + 10, poll_interval=0.01, max_poll_interval=0.01) == "done"
    assert next(answers) == "never asked"


@pytest.mark.parametrize(("poll", "cap", "message"), [(0, 1, "poll_interval must be more than 0"), (2, 1, "below")])
def test_intervals_are_checked_when_the_task_is_built(poll: float, cap: float, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        check_intervals(poll, cap)
    with pytest.raises(ValueError, match="poll_interval must be more than 0"):
        operator(poll_interval=0)
    with pytest.raises(ValueError, match="job_timeout must be more than 0"):
        operator(job_timeout=0)


# --- the job wait against the emulator ----------------------------------------------------------


async def test_a_job_that_never_ends_fails_at_job_timeout_naming_its_last_state(emulator) -> None:
    emulator.configure(job_polls_to_fulfil=10_000)
    task = operator(poll_interval=0.05, job_timeout=0.6)
    started = time.monotonic()
    async with GatewayClient(make_config(emulator)) as client:
        with pytest.raises(ConversationJobTimeoutError) as caught:
            await task._job(TranscriptSource(client), {})
    assert 0.6 <= time.monotonic() - started < 5
    assert "was not done within job_timeout=0.6 s (last state PENDING)" in str(caught.value)
    assert caught.value.transient
    assert 3 <= emulator.counters()["job_polls"] <= 12  # backed off, not a busy loop


async def test_a_failed_job_is_a_typed_error_and_a_fulfilled_one_returns_its_id(emulator) -> None:
    emulator.configure(job_outcome="EXPIRED")
    async with GatewayClient(make_config(emulator)) as client:
        with pytest.raises(ConversationJobFailedError, match=r"ended EXPIRED: .*; a retry submits a new job"):
            await operator(poll_interval=0.01)._job(TranscriptSource(client), {})
        emulator.configure(job_outcome="FULFILLED")
        job_id = await operator(poll_interval=0.01)._job(TranscriptSource(client), {})
    assert job_id and emulator.counters()["job_polls"] >= 3


# --- nothing blocking on the event loop ---------------------------------------------------------


async def test_aexecute_looks_up_connections_and_creates_its_table_off_the_loop(
    emulator, pg_server: PgServer, pg_connect: PgConnect, monkeypatch: pytest.MonkeyPatch
) -> None:
    emulator.configure(clients={"id": "j0b-sensor-secret-41d9"}, conversations_per_day=5)
    monkeypatch.setenv("AIRFLOW_CONN_GENESYS_LLM_DEFAULT", connection_json(emulator))
    export_airflow_connection(monkeypatch, "postgres_default", pg_server)
    loop_thread = threading.get_ident()
    blocking_calls: list[str] = []

    def off_loop(name, function):
        def run(*args, **kwargs):
            blocking_calls.append(name)
            assert threading.get_ident() != loop_thread, f"{name} ran on the event loop"
            return function(*args, **kwargs)

        return run

    monkeypatch.setattr(postgres, "conninfo_for", off_loop("conninfo_for", postgres.conninfo_for))
    monkeypatch.setattr(TranscriptStore, "ensure_schema", off_loop("ensure_schema", TranscriptStore.ensure_schema))

    summary = await operator(schema=pg_connect.schema, poll_interval=0.01).aexecute({})

    assert blocking_calls == ["conninfo_for", "ensure_schema"]
    assert summary["transcripts"] > 0 and summary["rows_written"] == summary["transcripts"]
