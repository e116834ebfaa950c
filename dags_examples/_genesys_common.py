"""Settings shared by the example DAGs; change connections here (or in Airflow) to point at a real tenant."""

from __future__ import annotations

from airflow_provider_genesys_llm.callbacks.audit import audit_task_callback

#: Airflow connection of the Postgres database with pgvector (results, transcripts, audit chain).
POSTGRES_CONN_ID = "genesys_pgvector"
#: Airflow connection the audit records are appended through: the same database as a role that can
#: only append (``python -m airflow_provider_genesys_llm.governance create-writer-role``).
AUDIT_CONN_ID = "genesys_audit"
#: Landing table of raw (PII-masked) transcripts and the table of enriched results.
TRANSCRIPTS_TABLE = "genesys_transcripts"
INSIGHTS_TABLE = "transcript_insights"
#: Airflow pool that caps gateway streams across all tasks (create it with `airflow pools set`).
GATEWAY_POOL = "genesys_llm_gateway"

SYSTEM_PROMPT = (
    "You analyse contact-center transcripts. Answer in JSON with the keys "
    "sentiment (positive|neutral|negative), intent and summary."
)
#: What the answer must be: validated per item (an invalid answer is re-asked, then recorded as a
#: failure), stored as ``output`` jsonb, with ``sentiment`` and ``intent`` as typed columns.
INSIGHT_SCHEMA = {
    "type": "object",
    "properties": {
        "sentiment": {"type": "string", "enum": ["positive", "neutral", "negative"]},
        "intent": {"type": "string"},
        "summary": {"type": "string"},
    },
    "required": ["sentiment", "intent", "summary"],
}
INSIGHT_COLUMNS = ["sentiment", "intent"]
#: Stored on every row next to its keyed ``prompt_version``; change it when you change the prompt.
PROMPT_LABEL = "insights v1"

#: Transcripts of one interval as batch items (id = the transcript's natural key); bound parameters
#: ``start`` and ``end`` come from ``sql_parameters``.
TRANSCRIPTS_SQL = (
    "SELECT conversation_id || ':' || communication_id || ':' || transcript_id AS id, text "
    f"FROM {TRANSCRIPTS_TABLE} "
    "WHERE conversation_start >= %(start)s AND conversation_start < %(end)s "
    "ORDER BY conversation_start, conversation_id"
)

AUDIT_CALLBACK = audit_task_callback(AUDIT_CONN_ID)

DEFAULT_ARGS = {
    "owner": "contact-center-analytics",
    "on_success_callback": AUDIT_CALLBACK,
    "on_failure_callback": AUDIT_CALLBACK,
    "on_retry_callback": AUDIT_CALLBACK,
}
