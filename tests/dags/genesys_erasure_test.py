"""An erasure request as a task, run by tests/test_erasure_e2e.py with ``airflow dags test``.

The ids come from a Variable (set in the environment by the test), not the DAG run's conf, so
they never reach Airflow's metadata database.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG

from airflow_provider_genesys_llm.operators.erasure import GenesysErasureOperator

with DAG(dag_id="genesys_erasure_test", schedule=None, start_date=pendulum.datetime(2026, 11, 1, tz="UTC")) as dag:
    GenesysErasureOperator(
        task_id="erase_conversations",
        ids="{{ var.value.erasure_request }}",
        postgres_conn_id="genesys_pgvector",
    )
