"""Witnessed heads and the least-privilege writer role, on a real Postgres (pgserver), attacked.

The tamper cases are what the owner of the audit tables (or a superuser) can do: every one of them
leaves a chain that verifies on its own, and every one is reported once the heads the tasks
published are given to verify.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path

import psycopg
import pytest
from fixtures_postgres import PgConnect, PgServer
from psycopg import sql
from pydantic import ValidationError

from airflow_provider_genesys_llm.governance.__main__ import main
from airflow_provider_genesys_llm.governance.audit import AuditRecord
from airflow_provider_genesys_llm.governance.chain import (
    AuditChainError,
    AuditChainStore,
    ChainVerification,
    chain_hash,
    verify_chain,
)
from airflow_provider_genesys_llm.governance.roles import WriterRoleError, create_writer_role
from airflow_provider_genesys_llm.governance.witness import ChainHead, WitnessFormatError, heads_from_log_lines

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Chain:
    """One chain in this test's schema, its owner's connections and the heads two tasks published."""

    connect: PgConnect
    schema: str
    table: str
    store: AuditChainStore
    witnesses: list[ChainHead]

    def verify(self, witnesses: list[ChainHead] | None = None) -> ChainVerification:
        return verify_chain(self.connect, table=self.table, schema=self.schema, witnesses=witnesses or [])

    def name(self, suffix: str = "") -> sql.Identifier:
        """The chain table (or, with ``_head``, ``_append``, its head table or function), schema-qualified."""
        return sql.Identifier(self.schema, self.table + suffix)

    def sql(self, statement: str, *params: object) -> None:
        """Run ``statement`` as the owner; ``{chain}``, ``{head}`` and ``{append}`` are the chain's objects."""
        with self.connect() as conn:
            conn.execute(self.format(statement), params or None)

    def format(self, statement: str) -> sql.Composed:
        return sql.SQL(statement).format(chain=self.name(), head=self.name("_head"), append=self.name("_append"))


def record(index: int, **changes: object) -> AuditRecord:
    fields: dict[str, object] = {"kind": "completion", "status": "success", "dag_id": "d", "run_id": f"r{index}"}
    return AuditRecord(**(fields | changes))


@pytest.fixture
def chain(pg_connect: PgConnect) -> Chain:
    """Ten rows appended by two tasks of five; each task's head is a witness."""
    table = f"audit_{uuid.uuid4().hex[:8]}"
    store = AuditChainStore(pg_connect, table=table, schema=pg_connect.schema)
    store.ensure_schema()
    witnesses = []
    for task in range(2):
        store.append([record(task * 5 + i) for i in range(5)])
        assert store.last_head is not None
        witnesses.append(store.last_head)
    return Chain(pg_connect, pg_connect.schema, table, store, witnesses)


@pytest.fixture
def writer(pg_server: PgServer, chain: Chain) -> Iterator[str]:
    """A writer role for ``chain``, created by the owner through the CLI; dropped afterwards."""
    role = f"writer_{uuid.uuid4().hex[:8]}"
    assert (
        main(
            [
                "create-writer-role",
                "--conninfo",
                pg_server.conninfo,
                "--schema",
                chain.schema,
                "--table",
                chain.table,
                "--role",
                role,
            ]
        )
        == 0
    )
    yield role
    drop_role(pg_server, role)


def drop_role(server: PgServer, role: str) -> None:
    with psycopg.connect(server.conninfo, autocommit=True) as admin:
        exists = admin.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
        if exists:
            admin.execute(sql.SQL("DROP OWNED BY {0}; DROP ROLE {0}").format(sql.Identifier(role)))


def as_role(server: PgServer, role: str) -> Callable[[], psycopg.Connection]:
    return partial(psycopg.connect, server.conninfo, user=role)


# --- The tamper cases, done by the owner ----------------------------------------------------


def truncate_and_roll_back(chain: Chain) -> None:
    """Delete the three newest rows and point the head table at the new last row."""
    chain.sql("ALTER TABLE {chain} DISABLE TRIGGER USER")
    chain.sql("DELETE FROM {chain} WHERE seq > 7")
    chain.sql("ALTER TABLE {chain} ENABLE TRIGGER USER")
    chain.sql("UPDATE {head} SET (seq, record_hash) = (SELECT seq, record_hash FROM {chain} WHERE seq = 7)")


def truncate_roll_back_and_refill(chain: Chain) -> None:
    """The same, then the pipeline carries on: seq 8..12 exist again, with other records."""
    truncate_and_roll_back(chain)
    chain.store.append([record(100 + i) for i in range(5)])


def wipe(chain: Chain) -> None:
    chain.sql("ALTER TABLE {chain} DISABLE TRIGGER USER")
    chain.sql("TRUNCATE {chain}, {head}")
    chain.sql("ALTER TABLE {chain} ENABLE TRIGGER USER")


def rehash_from(first: int) -> Callable[[Chain], None]:
    """Change the record at seq ``first`` and rewrite every hash after it, head included: a consistent chain."""

    def rehash(chain: Chain) -> None:
        chain.sql("ALTER TABLE {chain} DISABLE TRIGGER USER")
        chain.sql(
            """UPDATE {chain} SET record = jsonb_set(record, '{{status}}', '"failed"'), status = 'failed'"""
            " WHERE seq = %s",
            first,
        )
        with chain.connect() as conn:
            rows = conn.execute(chain.format("SELECT seq, record::text, prev_hash FROM {chain} ORDER BY seq"))
            rows = rows.fetchall()
            previous = rows[0][2]
            for seq, text, _ in rows:
                digest = chain_hash(previous, text)
                update = chain.format("UPDATE {chain} SET prev_hash = %s, record_hash = %s WHERE seq = %s")
                conn.execute(update, (previous, digest, seq))
                previous = digest
        chain.sql("ALTER TABLE {chain} ENABLE TRIGGER USER")
        chain.sql("UPDATE {head} SET record_hash = (SELECT record_hash FROM {chain} ORDER BY seq DESC LIMIT 1)")

    return rehash


def drop_and_restart(rows: int) -> Callable[[Chain], None]:
    """Drop tables and function, let the pipeline recreate them and append ``rows`` new records."""

    def restart(chain: Chain) -> None:
        chain.sql("DROP TABLE {chain}, {head}")
        chain.sql("DROP FUNCTION {append}(jsonb)")
        fresh = AuditChainStore(chain.connect, table=chain.table, schema=chain.schema)
        fresh.ensure_schema()
        fresh.append([record(200 + i) for i in range(rows)])

    return restart


TAMPER_CASES = {
    # name: (tamper, first bad seq reported with witnesses, words the report must contain)
    "truncate+rollback": (truncate_and_roll_back, 8, "ends at seq=7 but a witness saw it reach seq=10"),
    "truncate+rollback+refill": (truncate_roll_back_and_refill, 10, "rows after seq=5"),
    "wipe both tables": (wipe, 1, "empty but a witness saw it reach seq=10"),
    "rehash whole history": (rehash_from(1), 5, "row seq=5 is not the row a witness saw"),
    "rehash after a witness": (rehash_from(7), 10, "rows after seq=5 (the last witnessed head that matches)"),
    "drop, recreate, restart": (drop_and_restart(3), 4, "ends at seq=3 but a witness saw it reach seq=10"),
    "drop, recreate, restart past the witnesses": (drop_and_restart(12), 5, "row seq=5 is not the row"),
}


@pytest.mark.parametrize("case", TAMPER_CASES)
def test_tampering_by_the_owner_passes_alone_and_is_reported_with_witnesses(chain: Chain, case: str) -> None:
    tamper, first_bad, words = TAMPER_CASES[case]
    assert chain.verify(chain.witnesses).ok

    tamper(chain)

    # Why the witness is needed: the tables alone are consistent after every one of these.
    alone = chain.verify()
    assert alone.ok, alone.problem
    witnessed = chain.verify(chain.witnesses)
    assert (witnessed.ok, witnessed.first_bad_seq, witnessed.witnesses_checked) == (False, first_bad, 2)
    assert words in (witnessed.problem or "")


def test_witnesses_of_other_chains_are_ignored(chain: Chain) -> None:
    other = chain.witnesses[1].model_copy(update={"table": "another_chain"})
    truncate_and_roll_back(chain)

    result = chain.verify([other])

    assert (result.ok, result.witnesses_checked) == (True, 0)


# --- Heads as values and as log lines --------------------------------------------------------


def test_head_json_round_trips_and_refuses_what_is_not_a_head(chain: Chain) -> None:
    head = chain.witnesses[1]

    text = head.to_json()

    assert json.loads(text) == {
        "schema": chain.schema,
        "table": chain.table,
        "seq": 10,
        "record_hash": head.record_hash,
    }
    assert ChainHead.from_json(text) == head == ChainHead.model_validate(head.to_dict())
    assert head.to_log_line() == "GENESYS_AUDIT_HEAD " + text
    valid = json.loads(text)
    for broken in ({"seq": -1}, {"seq": "10"}, {"record_hash": "ABC"}, {"seq": 0}, {"extra": 1}, {"table": ""}):
        with pytest.raises(ValueError):
            ChainHead.from_json(json.dumps(valid | broken))
    with pytest.raises(ValidationError, match="frozen"):
        head.seq = 11  # type: ignore[misc]


def test_heads_come_from_plain_and_airflow_json_log_lines(chain: Chain) -> None:
    first, second = chain.witnesses
    airflow_line = {
        "timestamp": "2026-12-04T10:00:00.000000Z",
        "level": "info",
        "event": second.to_log_line(),
        "logger": "airflow.task.operators",
    }
    lines = [
        "[2026-12-04T10:00:00.000+0000] {batch.py:235} INFO - " + first.to_log_line() + " (published)\n",
        json.dumps({"event": 'GENESYS_AUDIT {"kind":"task"}', "level": "info"}),
        "not json {at all",
        json.dumps(airflow_line),
        "",
    ]

    assert heads_from_log_lines(lines) == [first, second]


def test_a_damaged_head_line_is_an_error_not_a_missing_witness() -> None:
    secret = "4111 1111 1111 1111"
    lines = ["ok", json.dumps({"event": f'GENESYS_AUDIT_HEAD {{"seq": 3, "note": "{secret}"}}'})]

    with pytest.raises(WitnessFormatError, match="task.log line 2") as raised:
        heads_from_log_lines(lines, "task.log")
    assert secret not in str(raised.value)
    with pytest.raises(WitnessFormatError, match="line 1: GENESYS_AUDIT_HEAD is not followed by a JSON object"):
        heads_from_log_lines(["GENESYS_AUDIT_HEAD seq=3"])


# --- The CLI with witnesses ------------------------------------------------------------------


def write_witnesses(tmp_path: Path, chain: Chain) -> list[str]:
    """The first head as an exported JSON-lines file, the second in a plain and an Airflow JSON log."""
    first, second = chain.witnesses
    heads = tmp_path / "heads.jsonl"
    heads.write_text(first.to_json() + "\n\n")
    plain = tmp_path / "attempt=1.log"
    plain.write_text(f"[2026-12-04 10:00:00] INFO - starting\n[2026-12-04 10:00:01] INFO - {second.to_log_line()}\n")
    structured = tmp_path / "attempt=2.log"
    structured.write_text(json.dumps({"event": second.to_log_line(), "level": "info"}) + "\n")
    return ["--witness-file", str(heads), "--witness-log", str(plain), "--witness-log", str(structured)]


def test_cli_verify_with_witnesses(
    chain: Chain, pg_server: PgServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    command = ["verify", "--conninfo", pg_server.conninfo, "--schema", chain.schema, "--table", chain.table]
    witnesses = write_witnesses(tmp_path, chain)

    good = main(command + witnesses)
    good_out = capsys.readouterr().out
    truncate_and_roll_back(chain)
    alone = main(command)
    alone_out = capsys.readouterr().out
    bad = main(command + witnesses)
    bad_err = capsys.readouterr().err

    assert (good, good_out) == (0, "audit chain OK: 10 rows, 3 witnessed heads match\n")
    assert (alone, alone_out) == (0, "audit chain OK: 7 rows\n")
    assert bad == 1
    assert bad_err == (
        f"audit chain {chain.schema}.{chain.table} is broken: the chain ends at seq=7 but a witness saw it reach "
        "seq=10: rows seq=8..10 were deleted and the head table rolled back\n"
    )


def test_cli_verify_refuses_witnesses_it_cannot_use(
    chain: Chain, pg_server: PgServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    command = ["verify", "--conninfo", pg_server.conninfo, "--schema", chain.schema, "--table", chain.table]
    elsewhere = tmp_path / "other.jsonl"
    elsewhere.write_text(chain.witnesses[0].model_copy(update={"table": "other"}).to_json() + "\n")
    damaged = tmp_path / "damaged.jsonl"
    damaged.write_text(chain.witnesses[0].to_json() + '\n{"seq": 1}\n')

    assert main(command + ["--witness-file", str(elsewhere)]) == 2
    assert f"none of the 1 witnessed heads is for {chain.schema}.{chain.table}" in capsys.readouterr().err
    assert main(command + ["--witness-file", str(damaged)]) == 2
    assert "damaged.jsonl line 2: is not a chain head" in capsys.readouterr().err
    assert main(command + ["--witness-log", str(tmp_path / "missing.log")]) == 2


# --- The least-privilege writer --------------------------------------------------------------


def test_writer_role_cannot_touch_the_tables(chain: Chain, pg_server: PgServer, writer: str) -> None:
    attempts = [
        "INSERT INTO {chain} SELECT seq + 100, audit_id || 'x', kind, status, dag_id, run_id, created_at, record,"
        " prev_hash, record_hash FROM {chain}",
        "INSERT INTO {chain} (seq, audit_id, kind, status, created_at, record, prev_hash, record_hash)"
        " VALUES (11, 'a', 'task', 'success', now(), '{{}}', '', '')",
        "UPDATE {chain} SET status = 'failed'",
        "DELETE FROM {chain} WHERE seq > 7",
        "TRUNCATE {chain}",
        "UPDATE {head} SET seq = 7",
        "DELETE FROM {head}",
        "TRUNCATE {head}",
        "INSERT INTO {head} VALUES (true, 1, '')",
        "SELECT * FROM {chain}",
        "ALTER TABLE {chain} DISABLE TRIGGER USER",
        "DROP TABLE {chain}",
        "CREATE OR REPLACE FUNCTION {append}(records jsonb) RETURNS TABLE (appended_seq bigint, appended_hash text)"
        " LANGUAGE sql AS 'SELECT 1::bigint, ''x'''",
    ]
    for attempt in attempts:
        with as_role(pg_server, writer)() as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(chain.format(attempt))

    assert chain.verify(chain.witnesses).rows_checked == 10
    assert chain.verify(chain.witnesses).ok


def test_writer_appends_through_the_store_and_cannot_backdate(chain: Chain, pg_server: PgServer, writer: str) -> None:
    store = AuditChainStore(as_role(pg_server, writer), table=chain.table, schema=chain.schema)
    backdated = record(50, created_at=datetime(2001, 1, 1, tzinfo=UTC))
    store.ensure_schema()  # the objects exist: nothing to create, no CREATE privilege needed
    before = datetime.now(UTC)

    seqs = store.append([backdated, record(51)])
    with as_role(pg_server, writer)() as conn:  # straight to the function, with a date of its choosing
        direct = conn.execute(
            chain.format("SELECT appended_seq FROM {append}(%s::jsonb)"),
            (json.dumps([record(52).model_dump(mode="json") | {"created_at": "2001-01-01T00:00:00Z"}]),),
        ).fetchall()
    after = datetime.now(UTC)

    assert (seqs, direct) == ([11, 12], [(13,)])
    assert store.last_head is not None and store.last_head.seq == 12
    with chain.connect() as conn:
        stamped = conn.execute(chain.format("SELECT created_at, record->>'created_at' FROM {chain} WHERE seq > 10"))
        stamped = stamped.fetchall()
    for column, recorded in stamped:
        assert before - timedelta(seconds=5) <= column <= after + timedelta(seconds=5)
        assert datetime.fromisoformat(recorded) == column
    assert chain.verify([*chain.witnesses, store.last_head]).ok


def test_writer_function_refuses_bad_input_and_ignores_shadow_tables(
    chain: Chain, pg_server: PgServer, writer: str
) -> None:
    append = chain.format("SELECT * FROM {append}(%s::jsonb)")
    store = AuditChainStore(as_role(pg_server, writer), table=chain.table, schema=chain.schema)

    refused = {'{"kind": "task"}': "JSON array", "[1]": "JSON object", '[{"kind": "task"}]': "null value"}
    for bad, words in refused.items():
        with as_role(pg_server, writer)() as conn, pytest.raises(psycopg.Error, match=words):
            conn.execute(append, (bad,))
    with as_role(pg_server, writer)() as conn:
        # A temporary table shadowing the chain's name on the caller's search_path.
        conn.execute(sql.SQL("CREATE TEMP TABLE {} (LIKE pg_catalog.pg_class)").format(sql.Identifier(chain.table)))
        conn.execute("SET search_path = pg_temp, public")
        appended = conn.execute(append, (json.dumps([record(60).model_dump(mode="json")]),)).fetchall()

    assert [seq for seq, _ in appended] == [11]
    assert store.append([record(61)]) == [12]
    assert chain.verify(chain.witnesses).rows_checked == 12


def test_writer_store_cannot_create_a_missing_chain(pg_connect: PgConnect, pg_server: PgServer, writer: str) -> None:
    store = AuditChainStore(as_role(pg_server, writer), table="not_created_yet", schema=pg_connect.schema)

    with pytest.raises(AuditChainError, match="run `python -m airflow_provider_genesys_llm.governance create-writer"):
        store.ensure_schema()


def test_create_writer_role_sets_a_scram_password_and_is_idempotent(
    chain: Chain, pg_server: PgServer, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    role = f"writer_{uuid.uuid4().hex[:8]}"
    password = f"pw-{uuid.uuid4().hex}"
    monkeypatch.setenv("GENESYS_AUDIT_WRITER_PASSWORD", password)
    command = [
        "create-writer-role",
        "--conninfo",
        pg_server.conninfo,
        "--schema",
        chain.schema,
        "--table",
        chain.table,
        "--role",
        role,
        "--password-env",
        "GENESYS_AUDIT_WRITER_PASSWORD",
    ]
    try:
        first, second = main(command), main(command)
        out, err = capsys.readouterr()
        with psycopg.connect(pg_server.conninfo) as admin:
            stored, superuser, inherits = admin.execute(
                "SELECT rolpassword, rolsuper, rolinherit FROM pg_authid WHERE rolname = %s", (role,)
            ).fetchone()
    finally:
        drop_role(pg_server, role)

    assert (first, second) == (0, 0)
    assert f"writer role {role} created with a password: it can append to {chain.schema}.{chain.table}" in out
    assert f"writer role {role} updated with a password" in out
    assert "holds no INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER on its tables" in out
    assert password not in out + err
    assert stored.startswith("SCRAM-SHA-256$") and password not in stored
    assert (superuser, inherits) == (False, False)


def test_create_writer_role_refuses_roles_that_could_rewrite_the_chain(
    chain: Chain, pg_server: PgServer, capsys: pytest.CaptureFixture[str]
) -> None:
    member = f"member_{uuid.uuid4().hex[:8]}"
    leaky = f"leaky_{uuid.uuid4().hex[:8]}"
    command = ["create-writer-role", "--conninfo", pg_server.conninfo, "--schema", chain.schema, "--table", chain.table]
    with psycopg.connect(pg_server.conninfo, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE ROLE {} IN ROLE pg_write_all_data").format(sql.Identifier(member)))
    try:
        superuser = main(command + ["--role", "postgres"])
        superuser_err = capsys.readouterr().err
        in_role = main(command + ["--role", member])
        in_role_err = capsys.readouterr().err
        chain.sql("GRANT UPDATE (status) ON {chain} TO PUBLIC")
        with pytest.raises(WriterRoleError, match=r"would still hold UPDATE on audit_\w+ \(granted to PUBLIC"):
            create_writer_role(chain.connect, leaky, table=chain.table, schema=chain.schema)
        with psycopg.connect(pg_server.conninfo) as admin:
            rolled_back = admin.execute("SELECT count(*) FROM pg_roles WHERE rolname = %s", (leaky,)).fetchone()
    finally:
        drop_role(pg_server, member)

    assert (superuser, in_role) == (2, 2)
    assert "role 'postgres' is a superuser or has CREATEROLE" in superuser_err
    assert f"role {member!r} is a member of pg_write_all_data" in in_role_err
    assert rolled_back == (0,)


CHILD = """
import sys
from functools import partial
import psycopg
from airflow_provider_genesys_llm.governance.audit import AuditRecord
from airflow_provider_genesys_llm.governance.chain import AuditChainStore
conninfo, role, schema, table, appends = sys.argv[1:]
store = AuditChainStore(partial(psycopg.connect, conninfo, user=role), table=table, schema=schema)
store.ensure_schema()
for index in range(int(appends)):
    seqs = store.append([AuditRecord(kind="completion", status="success") for _ in range(3)])
    print("seqs", *seqs)
    print(store.last_head.to_log_line(), flush=True)
"""


def test_processes_appending_as_the_writer_keep_one_gap_free_chain(
    chain: Chain, pg_server: PgServer, writer: str
) -> None:
    children = [
        subprocess.Popen(
            [sys.executable, "-c", CHILD, pg_server.conninfo, writer, chain.schema, chain.table, "20"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        for _ in range(3)
    ]
    outputs = []
    for child in children:
        out, err = child.communicate(timeout=120)
        assert child.returncode == 0, err[-2000:]
        outputs.append(out.splitlines())

    batches = [[int(seq) for seq in line.split()[1:]] for lines in outputs for line in lines if line.startswith("seqs")]
    heads = [head for lines in outputs for head in heads_from_log_lines(lines)]
    assert sorted(seq for batch in batches for seq in batch) == list(range(11, 11 + 3 * 20 * 3))
    assert all(batch == list(range(batch[0], batch[0] + 3)) for batch in batches)
    result = chain.verify([*chain.witnesses, *heads])
    assert (result.ok, result.rows_checked, result.witnesses_checked) == (True, 190, 62)
