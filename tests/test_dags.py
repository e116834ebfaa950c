"""DAGs run by real Airflow (``airflow dags test`` in a subprocess) against the emulator and pgserver."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


@pytest.fixture(scope="session")
def airflow_home(tmp_path_factory) -> Path:
    """One migrated metadata database for every DAG test of the session."""
    home = tmp_path_factory.mktemp("airflow-home")
    done = subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"],
        env={**os.environ, "AIRFLOW_HOME": str(home), "AIRFLOW__CORE__LOAD_EXAMPLES": "False"},
        capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return home


def airflow_env(airflow_home: Path, dags_folder: Path, emulator, pg_server) -> dict[str, str]:
    genesys = {
        "conn_type": "genesys_llm", "login": "id", "password": "secret",
        "extra": {"api_base_url": emulator.base_url, "login_base_url": emulator.base_url,
                  "stream_base_url": emulator.ws_url, "requests_per_minute": 60000},
    }
    postgres = {"conn_type": "postgres", "host": pg_server.socket_dir, "port": pg_server.port,
                "login": pg_server.user, "schema": pg_server.dbname}
    return {
        **os.environ,
        "AIRFLOW_HOME": str(airflow_home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags_folder),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW_CONN_GENESYS_LLM_DEFAULT": json.dumps(genesys),
        "AIRFLOW_CONN_GENESYS_PGVECTOR": json.dumps(postgres),
    }


def dags_test(env: dict[str, str], dag_id: str, date: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "airflow", "dags", "test", dag_id, date],
        env=env, capture_output=True, text=True, timeout=600,
    )


def scalar(pg_server, query: str) -> object:
    with psycopg.connect(pg_server.conninfo) as conn:
        return conn.execute(query).fetchone()[0]


def test_dag_with_both_operators(airflow_home, emulator, pg_server):
    env = airflow_env(airflow_home, HERE / "dags", emulator, pg_server)
    done = dags_test(env, "genesys_llm_operators_test", "2026-11-20")
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    assert scalar(pg_server, "SELECT count(*) FROM operator_results") == 20
    assert scalar(pg_server, "SELECT count(*) FROM operator_results_failures") == 1
    assert scalar(pg_server, "SELECT count(*) FROM operator_results WHERE content LIKE '%{{%'") == 0
    assert emulator.counters()["ws_requests"] == 21
    output = done.stdout + done.stderr
    assert "secret" not in output.replace("client_secret", "").replace("Client Secret", "")


def test_demo_dag_twice_second_run_sends_no_completions(airflow_home, emulator, pg_server):
    env = airflow_env(airflow_home, ROOT / "dags_examples", emulator, pg_server)
    first = dags_test(env, "genesys_llm_demo", "2026-11-19")
    assert first.returncode == 0, (first.stdout + first.stderr)[-4000:]
    stored = scalar(pg_server, "SELECT count(*) FROM transcript_insights WHERE source_id LIKE '2026-11-19-%'")
    assert stored == 30
    sent = emulator.counters()["ws_requests"]
    second = dags_test(env, "genesys_llm_demo", "2026-11-19")
    assert second.returncode == 0, (second.stdout + second.stderr)[-4000:]
    assert emulator.counters()["ws_requests"] == sent
    assert scalar(pg_server, "SELECT count(*) FROM transcript_insights WHERE source_id LIKE '2026-11-19-%'") == 30
