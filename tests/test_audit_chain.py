"""Audit records, log lines, and the hash chain on a real Postgres (pgserver), tampered with."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from functools import partial
from pathlib import Path

import psycopg
import pytest
from batch_items import TEST_ID_KEY
from fixtures_postgres import PgServer
from psycopg import sql
from pydantic import ValidationError

from airflow_provider_genesys_llm.governance.__main__ import main
from airflow_provider_genesys_llm.governance.audit import AuditLog, AuditRecord, Timings, TokenUsage
from airflow_provider_genesys_llm.governance.chain import (
    AuditChainError,
    AuditChainStore,
    ChainVerification,
    verify_chain,
)

Connect = Callable[[], psycopg.Connection]


@pytest.fixture
def conninfo(pg_server: PgServer) -> str:
    return pg_server.conninfo


@pytest.fixture
def connect(conninfo: str) -> Connect:
    return partial(psycopg.connect, conninfo)


@pytest.fixture
def table() -> str:
    return f"audit_{uuid.uuid4().hex[:12]}"


@pytest.fixture
def store(connect: Connect, table: str) -> AuditChainStore:
    chain = AuditChainStore(connect, table=table)
    chain.ensure_schema()
    return chain


def record(index: int = 0, **changes: object) -> AuditRecord:
    fields: dict[str, object] = {
        "kind": "completion",
        "status": "success",
        "dag_id": "support_summaries",
        "task_id": "summarise",
        "run_id": f"run-{index % 3}",
        "map_index": index,
        "try_number": 1,
        "model": "genesys-llm-large",
        "prompt_hmac": TEST_ID_KEY.digest("prompt", f"case {index}"),
        "parameters": {"temperature": 0.2, "max_tokens": 256, "transport": "websocket"},
        "usage": TokenUsage(prompt_tokens=40, completion_tokens=60, total_tokens=100),
        # -0.0 comes back from jsonb as 0.0: the chain must not take that for tampering.
        "timings": Timings(connect_ms=12.5, ttft_ms=80.25, total_ms=900.0, tokens_per_second=-0.0),
        "masking_counts": {"EMAIL": 1},
        "filters_applied": ["think_block"],
    }
    return AuditRecord(**(fields | changes))


def tamper(connect: Connect, table: str, statement: str) -> None:
    """Run ``statement`` (``{}`` is the table) with the append-only trigger off, as an intruder would."""
    chain = sql.Identifier(table)
    with connect() as conn:
        conn.execute(sql.SQL("ALTER TABLE {} DISABLE TRIGGER USER").format(chain))
        conn.execute(sql.SQL(statement).format(chain))
        conn.execute(sql.SQL("ALTER TABLE {} ENABLE TRIGGER USER").format(chain))


def chain_of(store: AuditChainStore, rows: int) -> list[AuditRecord]:
    records = [record(index) for index in range(rows)]
    store.append(records)
    return records


def run_cli(conninfo: str, table: str) -> subprocess.CompletedProcess[str]:
    command = ["verify", "--conninfo", conninfo, "--table", table]
    return subprocess.run(
        [sys.executable, "-m", "airflow_provider_genesys_llm.governance", *command],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).resolve().parents[1],
    )


# --- Records and log lines -------------------------------------------------------------------


def test_record_defaults_and_utc() -> None:
    paris_noon = datetime(2025, 1, 1, 12, tzinfo=timezone(timedelta(hours=1)))

    audit = AuditRecord(kind="task", status="skipped", created_at=paris_noon)

    assert uuid.UUID(audit.audit_id).version == 4
    assert audit.compliance_tag == "GENESYS_AI_GATEWAY_V2"
    assert audit.created_at == paris_noon
    assert audit.created_at.tzinfo == UTC
    assert AuditRecord(kind="task", status="success").created_at.tzinfo == UTC


def test_record_refuses_free_text_and_naive_times() -> None:
    with pytest.raises(ValidationError):
        AuditRecord(kind="completion", status="success", prompt="My SSN is 123-45-6789")  # type: ignore[call-arg]
    with pytest.raises(ValidationError):
        AuditRecord(kind="completion", status="success", parameters={"messages": [{"content": "hi"}]})
    with pytest.raises(ValidationError, match="timezone-aware"):
        AuditRecord(kind="completion", status="success", created_at=datetime(2025, 1, 1))


def test_log_line_is_one_line_of_compact_json_that_parses_back() -> None:
    audit = record(1, status="failed", error_class="GatewayTimeoutError")

    line = AuditLog.to_log_line(audit)

    assert line.startswith('GENESYS_AUDIT {"attempts":null,"audit_id":')
    assert "\n" not in line
    assert AuditRecord.model_validate_json(line.removeprefix("GENESYS_AUDIT ")) == audit


# --- The chain -------------------------------------------------------------------------------


def test_concurrent_appends_make_one_gap_free_chain(store: AuditChainStore, connect: Connect, table: str) -> None:
    start = threading.Barrier(2)
    returned: list[list[int]] = []
    errors: list[BaseException] = []

    def worker(offset: int) -> None:
        worker_store = AuditChainStore(connect, table=table)  # its own connection on every append
        try:
            start.wait()
            for batch in range(5):
                returned.append(worker_store.append([record(offset + batch * 5 + i) for i in range(5)]))
        except BaseException as exc:  # surfaced below, a thread cannot fail the test itself
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(offset,)) for offset in (0, 100)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert errors == []
    assert all(seqs == list(range(seqs[0], seqs[0] + 5)) for seqs in returned)
    assert sorted(seq for seqs in returned for seq in seqs) == list(range(1, 51))
    assert verify_chain(connect, table=table) == ChainVerification(True, 50)


def test_empty_chain_verifies(store: AuditChainStore, connect: Connect, table: str) -> None:
    assert store.append([]) == []
    assert verify_chain(connect, table=table) == ChainVerification(True, 0)


def test_ensure_schema_is_idempotent(store: AuditChainStore, connect: Connect, table: str) -> None:
    chain_of(store, 3)

    store.ensure_schema()

    assert store.append([record(9)]) == [4]
    assert verify_chain(connect, table=table).ok


def test_edited_record_is_named(store: AuditChainStore, connect: Connect, table: str) -> None:
    records = chain_of(store, 10)

    tamper(connect, table, """UPDATE {} SET record = jsonb_set(record, '{{status}}', '"failed"') WHERE seq = 4""")

    result = verify_chain(connect, table=table)
    assert (result.ok, result.first_bad_seq, result.rows_checked) == (False, 4, 4)
    assert result.problem == (
        f"row seq=4 (audit_id {records[3].audit_id}) was edited: its record no longer matches its record_hash"
    )


def test_edited_indexed_column_is_named(store: AuditChainStore, connect: Connect, table: str) -> None:
    chain_of(store, 10)

    tamper(connect, table, "UPDATE {} SET status = 'skipped' WHERE seq = 7")

    result = verify_chain(connect, table=table)
    assert (result.ok, result.first_bad_seq) == (False, 7)
    assert "indexed columns differ" in (result.problem or "")


def test_deleted_middle_row_is_named(store: AuditChainStore, connect: Connect, table: str) -> None:
    chain_of(store, 10)

    tamper(connect, table, "DELETE FROM {} WHERE seq = 5")

    result = verify_chain(connect, table=table)
    assert (result.ok, result.first_bad_seq) == (False, 5)
    assert result.problem == "row seq=5 is missing: the chain goes from seq=4 to seq=6"


def test_deleted_and_renumbered_row_breaks_the_links(store: AuditChainStore, connect: Connect, table: str) -> None:
    chain_of(store, 10)

    tamper(connect, table, "DELETE FROM {} WHERE seq = 5")
    tamper(connect, table, "UPDATE {} SET seq = seq - 1 WHERE seq > 5")

    result = verify_chain(connect, table=table)
    assert (result.ok, result.first_bad_seq) == (False, 5)
    assert "does not link to seq=4" in (result.problem or "")


def test_deleted_last_row_is_detected_and_blocks_appends(store: AuditChainStore, connect: Connect, table: str) -> None:
    chain_of(store, 10)

    tamper(connect, table, "DELETE FROM {} WHERE seq = 10")

    result = verify_chain(connect, table=table)
    assert (result.ok, result.first_bad_seq) == (False, 10)
    assert result.problem == "rows after seq=9 were deleted: the head table records seq=10"
    with pytest.raises(AuditChainError, match="ends at seq=9 but its head table records seq=10"):
        store.append([record(11)])


def test_trigger_refuses_update_delete_and_truncate(store: AuditChainStore, connect: Connect, table: str) -> None:
    chain_of(store, 2)
    chain = sql.Identifier(table)

    for statement in ("UPDATE {} SET status = 'failed'", "DELETE FROM {} WHERE seq = 1", "TRUNCATE {}"):
        with connect() as conn, pytest.raises(psycopg.errors.RaiseException, match="append-only"):
            conn.execute(sql.SQL(statement).format(chain))

    assert verify_chain(connect, table=table) == ChainVerification(True, 2)


def test_cli_exits_0_on_a_good_chain_and_1_on_a_tampered_one(
    store: AuditChainStore, connect: Connect, conninfo: str, table: str
) -> None:
    records = chain_of(store, 20)

    good = run_cli(conninfo, table)
    tamper(connect, table, """UPDATE {} SET record = record || '{{"model": "other"}}' WHERE seq = 17""")
    bad = run_cli(conninfo, table)

    assert (good.returncode, good.stdout.strip()) == (0, "audit chain OK: 20 rows")
    assert bad.returncode == 1
    assert f"row seq=17 (audit_id {records[16].audit_id}) was edited" in bad.stderr


def test_cli_exits_2_when_it_cannot_check(conninfo: str) -> None:
    missing = run_cli(conninfo, "no_such_audit_table")

    assert missing.returncode == 2
    assert "could not verify" in missing.stderr


def test_cli_resolves_an_airflow_postgres_connection(
    store: AuditChainStore,
    conninfo: str,
    table: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    chain_of(store, 3)
    params = psycopg.conninfo.conninfo_to_dict(conninfo)
    connection = {"conn_type": "postgres", "host": params["host"], "port": params["port"], "schema": "postgres"}
    monkeypatch.setenv("AIRFLOW_CONN_GENESYS_AUDIT_DB", json.dumps(connection | {"login": "postgres"}))

    status = main(["verify", "--postgres-conn-id", "genesys_audit_db", "--table", table])

    assert (status, capsys.readouterr().out) == (0, "audit chain OK: 3 rows\n")


def test_append_reports_the_head_it_left(store: AuditChainStore, connect: Connect, table: str) -> None:
    assert store.last_head is None

    store.append([record(0), record(1)])
    head = store.last_head
    store.append([])

    with connect() as conn:
        last = conn.execute(
            sql.SQL("SELECT seq, record_hash FROM {} ORDER BY seq DESC LIMIT 1").format(sql.Identifier(table))
        ).fetchone()
    assert head is not None and (head.schema_name, head.table, head.seq, head.record_hash) == ("public", table, *last)
    assert store.last_head == head
    assert verify_chain(connect, table=table, witnesses=[head]) == ChainVerification(True, 2, witnesses_checked=1)


def test_created_at_is_the_time_the_server_accepted_the_record(
    store: AuditChainStore, connect: Connect, table: str
) -> None:
    before = datetime.now(UTC)
    store.append([record(0, created_at=datetime(2001, 9, 9, tzinfo=UTC))])

    with connect() as conn:
        stored = conn.execute(sql.SQL("SELECT created_at FROM {}").format(sql.Identifier(table))).fetchone()[0]
    assert before - timedelta(seconds=5) <= stored <= datetime.now(UTC) + timedelta(seconds=5)


def test_chain_from_before_the_append_function_is_upgraded(
    store: AuditChainStore, connect: Connect, table: str
) -> None:
    chain_of(store, 3)
    with connect() as conn:  # a deployment whose tables predate the function
        conn.execute(sql.SQL("DROP FUNCTION {}(jsonb)").format(sql.Identifier(f"{table}_append")))

    AuditChainStore(connect, table=table).ensure_schema()

    assert store.append([record(3)]) == [4]
    assert verify_chain(connect, table=table) == ChainVerification(True, 4)
