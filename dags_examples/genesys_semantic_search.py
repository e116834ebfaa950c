"""Semantic search over the enriched transcripts: the nearest stored summaries to a question.

Trigger with ``{"query": "customers asking for a refund after a double charge", "k": 5}``; the
matches (source ids, cosine distances, intents, masked summaries) are pushed to XCom for a
downstream task or a human, and logged as ``distance=... intent=... source_id=...``.
"""

from __future__ import annotations

import json
import logging

import pendulum
from _genesys_common import DEFAULT_ARGS, INSIGHTS_TABLE, POSTGRES_CONN_ID
from airflow.sdk import DAG, Param, task

from airflow_provider_genesys_llm.hooks.genesys_llm import GenesysLLMHook
from airflow_provider_genesys_llm.hooks.postgres import pgvector_store_from_airflow

log = logging.getLogger(__name__)

with DAG(
    dag_id="genesys_semantic_search",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    default_args=DEFAULT_ARGS,
    params={
        "query": Param("customer wants a refund for a double charge", type="string"),
        "k": Param(5, type="integer"),
    },
    tags=["genesys", "llm", "search"],
) as dag:

    @task
    def search(params=None) -> list[dict[str, object]]:
        """The nearest summaries; ``cosine_distance`` is 0 for the same direction, up to 2 for opposite."""
        hook = GenesysLLMHook()
        try:
            [vector] = hook.embed([params["query"]])
        finally:
            hook.close()
        store = pgvector_store_from_airflow(POSTGRES_CONN_ID, table=INSIGHTS_TABLE, dimension=len(vector), index="none")
        try:
            matches = store.similarity_search(vector, k=int(params["k"]))
        finally:
            store.close()
        found = []
        for match in matches:
            answer = json.loads(match.content or "{}")  # the enrichment stores its JSON answer
            found.append(
                {
                    "source_id": match.source_id,
                    "cosine_distance": round(match.distance, 4),
                    "intent": answer.get("intent"),
                    "sentiment": answer.get("sentiment"),
                    "summary": str(answer.get("summary", ""))[:300],
                }
            )
            log.info("distance=%.3f intent=%s source_id=%s", match.distance, answer.get("intent"), match.source_id)
        return found

    search()
