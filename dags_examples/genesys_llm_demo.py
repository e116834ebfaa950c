"""Demo: enrich a day of sample contact-center transcripts and store them in pgvector.

Runs unchanged against the local emulator (``make demo``) and a real tenant: only the
``genesys_llm_default`` and ``genesys_pgvector`` connections differ. Re-running a day is safe:
results are keyed by item and prompt, so finished transcripts are never sent again.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG

from airflow_provider_genesys_llm.operators.batch import GenesysLLMBatchCompletionOperator

SYSTEM = (
    "You analyse contact-center transcripts. Answer in JSON with the keys "
    "sentiment (positive|neutral|negative), intent and summary."
)

_OPENINGS = (
    "I was charged twice on my last invoice and I want one refunded",
    "I would like to cancel my subscription because the price went up",
    "My internet drops every evening and restarting the router does not help",
    "The parcel you promised for Tuesday never arrived",
    "I moved house and my service address is still the old one",
    "The app logs me out every time I open the billing page",
)


def sample_transcripts(day: str, count: int = 30) -> list[dict[str, object]]:
    """A deterministic day of transcripts; the real pipeline lands them from Genesys Cloud."""
    return [
        {
            "id": f"{day}-conv-{number:03d}",
            "text": f"Customer: {_OPENINGS[number % len(_OPENINGS)]}. Agent: I am sorry to hear that, "
            f"let me look into it (ticket {number}).",
            "metadata": {"day": day, "queue": ("billing", "support", "retention")[number % 3]},
        }
        for number in range(count)
    ]


with DAG(
    dag_id="genesys_llm_demo",
    schedule="@daily",
    start_date=pendulum.datetime(2026, 11, 1, tz="UTC"),
    catchup=False,
    tags=["genesys", "llm", "demo"],
) as dag:
    enrich = GenesysLLMBatchCompletionOperator(
        task_id="enrich_transcripts",
        items=sample_transcripts("{{ ds }}"),
        system=SYSTEM,
        response_format="json",
        temperature=0.2,
        max_tokens=256,
        embed="json:summary",
        postgres_conn_id="genesys_pgvector",
        table="transcript_insights",
        max_failed_ratio=0.05,
    )
