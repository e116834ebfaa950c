"""Run real Airflow commands in a subprocess against the emulator and pgserver (shared by DAG tests)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from batch_items import TEST_ID_KEY_TEXT


def airflow_env(airflow_home: Path, dags_folder: Path, emulator, pg_server) -> dict[str, str]:
    genesys = {
        "conn_type": "genesys_llm",
        "login": "id",
        "password": "secret",
        "extra": {
            "api_base_url": emulator.base_url,
            "login_base_url": emulator.base_url,
            "stream_base_url": emulator.ws_url,
            "requests_per_minute": 60000,
        },
    }
    postgres = {
        "conn_type": "postgres",
        "host": pg_server.socket_dir,
        "port": pg_server.port,
        "login": pg_server.user,
        "schema": pg_server.dbname,
    }
    return {
        **os.environ,
        "AIRFLOW_HOME": str(airflow_home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags_folder),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW_CONN_GENESYS_LLM_DEFAULT": json.dumps(genesys),
        "AIRFLOW_CONN_GENESYS_PGVECTOR": json.dumps(postgres),
        "AIRFLOW_CONN_GENESYS_AUDIT": json.dumps(postgres),
        "AIRFLOW_VAR_GENESYS_LLM_ID_KEY": TEST_ID_KEY_TEXT,
    }


def jobs_answer_at_once(emulator) -> None:
    """Analytics jobs end on their first status check instead of after two polls: the DAGs check a
    job 5 to 10 s apart, so a 7-day backfill otherwise spends minutes waiting on the emulator's
    stand-in queue. Whether a job is polled to its end is tested on its own (test_transcripts*)."""
    emulator.configure(job_polls_to_fulfil=0)


def dags_test(env: dict[str, str], dag_id: str, date: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "airflow", "dags", "test", dag_id, date],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
