"""Semantic search over the enriched transcripts: the nearest stored summaries to a question.

Trigger with ``{"query": "customers asking for a refund after a double charge", "k": 5}``; the
matches (ids, distances, masked summaries) are pushed to XCom for a downstream task or a human.
"""

from __future__ import annotations

import pendulum

from airflow.sdk import DAG, Param, task

from _genesys_common import DEFAULT_ARGS, INSIGHTS_TABLE, POSTGRES_CONN_ID
from airflow_provider_genesys_llm.hooks.genesys_llm import GenesysLLMHook
from airflow_provider_genesys_llm.sinks.pgvector import PgVectorStore

with DAG(
    dag_id="genesys_semantic_search",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    default_args=DEFAULT_ARGS,
    params={"query": Param("customer wants a refund for a double charge", type="string"), "k": Param(5, type="integer")},
    tags=["genesys", "llm", "search"],
) as dag:

    @task
    def search(params=None) -> list[dict[str, object]]:
        hook = GenesysLLMHook()
        try:
            [vector] = hook.embed([params["query"]])
        finally:
            hook.close()
        store = PgVectorStore.from_airflow(POSTGRES_CONN_ID, table=INSIGHTS_TABLE, dimension=len(vector), index="none")
        try:
            matches = store.similarity_search(vector, k=int(params["k"]))
        finally:
            store.close()
        return [{"id": m.id, "source_id": m.source_id, "distance": round(m.distance, 4), "content": m.content[:300]} for m in matches]

    search()
