"""One error policy for every Postgres store: a refused row's contents never reach the message.

Postgres' DETAIL for a constraint violation quotes the failing row or key ("Failing row contains
(...)", "Key (...)=(...)"); each store is made to hit one with PII in the row, and neither the
error's text nor its formatted traceback may hold the PII.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable

import psycopg
import pytest
from batch_items import TEST_ID_KEY
from fixtures_postgres import PgConnect

from airflow_provider_genesys_llm.client.transcripts import TranscriptRecord
from airflow_provider_genesys_llm.governance.audit import AuditRecord
from airflow_provider_genesys_llm.governance.chain import AuditChainError, AuditChainStore
from airflow_provider_genesys_llm.governance.store_errors import StoreError
from airflow_provider_genesys_llm.sinks.erasure import ErasureError, ErasureTargets, erase
from airflow_provider_genesys_llm.sinks.pgvector import PgVectorStore, PgVectorStoreError, ResultRow
from airflow_provider_genesys_llm.sinks.transcripts import TranscriptStore, TranscriptStoreError

PII = "jane.doe@example.com"


def assert_no_pii(error: BaseException) -> None:
    assert error.__cause__ is None and error.__suppress_context__  # nothing chained that quotes the row
    assert PII not in "".join(traceback.format_exception(error))


def refuse_at_sign(pg_connect: PgConnect, table: str, column: str) -> None:
    with pg_connect() as conn:
        conn.execute(f"ALTER TABLE {pg_connect.schema}.{table} ADD CONSTRAINT no_at CHECK ({column} NOT LIKE '%%@%%')")


def pgvector_refusal(pg_connect: PgConnect) -> StoreError:
    store = PgVectorStore(pg_connect, table="results", schema=pg_connect.schema, dimension=3, index="none")
    store.ensure_schema()
    refuse_at_sign(pg_connect, "results", "content")
    with store, pytest.raises(PgVectorStoreError) as caught:
        store.upsert([ResultRow("r1", f"call back {PII}", [1.0, 0.0, 0.0])])
    return caught.value


def transcript_refusal(pg_connect: PgConnect) -> StoreError:
    store = TranscriptStore(pg_connect, schema=pg_connect.schema)
    store.ensure_schema()
    refuse_at_sign(pg_connect, "genesys_transcripts", "text")
    record = TranscriptRecord(
        conversation_id="c1",
        communication_id="m1",
        transcript_id="t1",
        language="en-us",
        conversation_start=None,
        text=f"Customer: my address is {PII}",
        raw={"email": PII},
    )
    with pytest.raises(TranscriptStoreError) as caught:
        store.upsert([record])
    return caught.value


def audit_refusal(pg_connect: PgConnect) -> StoreError:
    store = AuditChainStore(pg_connect, schema=pg_connect.schema)
    store.ensure_schema()
    refuse_at_sign(pg_connect, "genesys_llm_audit", "run_id")
    with pytest.raises(AuditChainError) as caught:
        store.append([AuditRecord(kind="task", status="success", dag_id="d", run_id=f"manual by {PII}")])
    return caught.value


def erasure_refusal(pg_connect: PgConnect) -> StoreError:
    """A foreign key keeps the transcript: Postgres' DETAIL names the key, the erased id itself."""
    schema = pg_connect.schema
    TranscriptStore(pg_connect, schema=schema).ensure_schema()
    with pg_connect() as conn:
        conn.execute(
            f"INSERT INTO {schema}.genesys_transcripts (conversation_id, communication_id, transcript_id, text, raw,"
            " content_hash) VALUES (%s, 'm1', 't1', 'hello', '{}', 'h')",
            (PII,),
        )
        conn.execute(
            f"CREATE TABLE {schema}.refs (c text, m text, t text, FOREIGN KEY (c, m, t) REFERENCES "
            f"{schema}.genesys_transcripts (conversation_id, communication_id, transcript_id))"
        )
        conn.execute(f"INSERT INTO {schema}.refs VALUES (%s, 'm1', 't1')", (PII,))
    targets = ErasureTargets(schema=schema, results_tables=(), audit_table=None)
    with pytest.raises(ErasureError) as caught:
        erase(pg_connect, [PII], TEST_ID_KEY, targets=targets, vacuum=False)
    return caught.value


@pytest.mark.parametrize(
    ("refusal", "operation", "sqlstate"),
    [
        (pgvector_refusal, "upsert on {schema}.results failed: CheckViolation", "23514"),
        (transcript_refusal, "upsert on {schema}.genesys_transcripts failed: CheckViolation", "23514"),
        (audit_refusal, "append on {schema}.genesys_llm_audit failed: CheckViolation", "23514"),
        (erasure_refusal, "erasure failed at transcripts on {schema}.genesys_transcripts", "23503"),
    ],
    ids=["pgvector", "transcripts", "audit_chain", "erasure"],
)
def test_a_refused_row_with_pii_gives_an_error_without_it(
    refusal: Callable[[PgConnect], StoreError], operation: str, sqlstate: str, pg_connect: PgConnect
) -> None:
    error = refusal(pg_connect)

    assert isinstance(error, StoreError)
    assert str(error).startswith(operation.format(schema=pg_connect.schema)), str(error)
    assert f"(SQLSTATE {sqlstate})" in str(error)
    assert (error.sqlstate, error.transient) == (sqlstate, False)  # a retry sends the same row again
    assert_no_pii(error)


def test_the_same_violation_raw_from_psycopg_does_quote_the_row(pg_connect: PgConnect) -> None:
    """The premise of the policy: without it, the PII is in the message."""
    store = TranscriptStore(pg_connect, schema=pg_connect.schema)
    store.ensure_schema()
    refuse_at_sign(pg_connect, "genesys_transcripts", "text")
    with pg_connect() as conn, pytest.raises(psycopg.errors.CheckViolation) as caught:
        conn.execute(
            f"INSERT INTO {pg_connect.schema}.genesys_transcripts (conversation_id, communication_id, transcript_id,"
            " text, raw, content_hash) VALUES ('c', 'm', 't', %s, '{}', 'h')",
            (PII,),
        )
    assert PII in str(caught.value)


def test_a_lost_server_is_transient_and_a_refusal_of_the_chain_is_not(pg_connect: PgConnect) -> None:
    def unreachable() -> psycopg.Connection[tuple[object, ...]]:
        return psycopg.connect("host=/nonexistent-socket-dir dbname=x connect_timeout=2")

    with pytest.raises(TranscriptStoreError) as lost:
        TranscriptStore(unreachable).count()
    assert lost.value.sqlstate is None and lost.value.transient
    assert str(lost.value).startswith("count on public.genesys_transcripts failed: OperationalError")

    store = AuditChainStore(pg_connect, schema=pg_connect.schema)
    store.ensure_schema()
    store.append([AuditRecord(kind="task", status="success")])
    with pg_connect() as conn:  # the head no longer matches the chain: the append function refuses
        conn.execute(f"UPDATE {pg_connect.schema}.genesys_llm_audit_head SET seq = 7")
    with pytest.raises(AuditChainError) as refused:
        store.append([AuditRecord(kind="task", status="success")])
    assert refused.value.sqlstate == "P0001" and not refused.value.transient
