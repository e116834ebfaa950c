"""Audit trail: one record per completion or task, as a log line and in a hash chain in Postgres.

A record says who asked what of which model, with which parameters, what it cost and how it
ended, but never the prompt or the answer: the prompt is represented by ``prompt_sha256``, so
two runs can be shown to have sent the same prompt without the audit store holding it.

The chain. Each row carries ``seq`` (1, 2, 3, ... without gaps), ``prev_hash`` (the previous
row's hash, 64 zeros for the first) and ``record_hash = sha256(prev_hash + canonical JSON of the
record)``. The canonical JSON is Postgres's own text form of the ``jsonb`` value (keys sorted,
fixed spacing), fetched before hashing, so the bytes hashed at append time are exactly the bytes
``verify_chain`` reads back: a Python re-serialisation would disagree with ``jsonb`` on numbers
such as ``-0.0`` or ``1e16`` and report tampering that never happened. A one-row ``{table}_head``
table, updated in the same transaction as every append, remembers the last ``seq`` and hash, so
deleting the newest rows is detected too.

Appends come from many Airflow workers at once, so they are serialised across processes by a
Postgres transaction-level advisory lock whose key is derived from the table name; the primary
key on ``seq`` would turn any race that got past it into an error rather than a fork. A trigger
refuses UPDATE, DELETE and TRUNCATE on the chain table. A superuser (or the table owner) can
still disable or drop it, which is why ``verify_chain`` recomputes everything and trusts nothing
the trigger was meant to guarantee.

psycopg is imported only when a chain is used: records and log lines need no database driver.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator

if TYPE_CHECKING:
    import psycopg
    from psycopg import sql

#: Tag carried by every record, naming the governance scheme the records follow.
COMPLIANCE_TAG = "GENESYS_AI_GATEWAY_V2"
#: Prefix of audit log lines, for log search and shipping rules.
LOG_PREFIX = "GENESYS_AUDIT "
DEFAULT_TABLE = "genesys_llm_audit"
#: ``prev_hash`` of the first row.
GENESIS_HASH = "0" * 64

ConnectionFactory = Callable[[], "psycopg.Connection[Any]"]
ParameterValue = str | int | float | bool | None


class TokenUsage(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    total_tokens: int | None = None


class Timings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    connect_ms: float | None = None
    ttft_ms: float | None = None
    total_ms: float | None = None
    tokens_per_second: float | None = None


class AuditRecord(BaseModel):
    """What happened in one completion (``kind="completion"``) or one task (``kind="task"``).

    ``extra="forbid"`` and scalar-only ``parameters`` keep free text out: there is no field a
    prompt or an answer could be put in by mistake. ``error_class`` is a class name, not a message.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    audit_id: str = Field(default_factory=lambda: str(uuid.uuid4()))
    kind: Literal["completion", "task"]
    status: Literal["success", "failed", "skipped"]
    created_at: datetime = Field(default_factory=lambda: datetime.now(timezone.utc))
    compliance_tag: str = COMPLIANCE_TAG
    request_id: str | None = None
    correlation_id: str | None = None
    dag_id: str | None = None
    task_id: str | None = None
    run_id: str | None = None
    map_index: int | None = None
    try_number: int | None = None
    owner: str | None = None
    conn_id: str | None = None
    model: str | None = None
    prompt_id: str | None = None
    prompt_sha256: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    parameters: dict[str, ParameterValue] = Field(default_factory=dict)
    usage: TokenUsage | None = None
    timings: Timings | None = None
    attempts: int | None = None
    error_class: str | None = None
    masking_counts: dict[str, int] = Field(default_factory=dict)
    filters_applied: tuple[str, ...] = ()

    @field_validator("created_at")
    @classmethod
    def _in_utc(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("created_at must be timezone-aware")
        return value.astimezone(timezone.utc)


def canonical_json(value: Any) -> str:
    """Compact JSON with sorted keys: equal values give equal text. Non-JSON values become ``str``."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False, default=str)


def prompt_sha256(
    messages: Sequence[Mapping[str, Any] | BaseModel] | None = None,
    system: str | None = None,
    prompt_id: str | None = None,
    variables: Mapping[str, Any] | None = None,
) -> str:
    """Fingerprint of everything that makes up a prompt, for records that must not hold it.

    Absent and empty are the same prompt: ``messages=None`` hashes like ``messages=[]``.
    """
    payload = {
        "messages": [item.model_dump() if isinstance(item, BaseModel) else dict(item) for item in messages or ()],
        "system": system,
        "prompt_id": prompt_id,
        "variables": dict(variables or {}),
    }
    return hashlib.sha256(canonical_json(payload).encode()).hexdigest()


class AuditLog:
    """Audit records as task log lines, for deployments that ship logs rather than keep a table."""

    @staticmethod
    def to_log_line(record: AuditRecord) -> str:
        """``GENESYS_AUDIT {...}``: one line of compact JSON, whatever the record holds."""
        return LOG_PREFIX + canonical_json(record.model_dump(mode="json"))


class AuditChainError(RuntimeError):
    """The chain cannot be appended to safely; run ``verify`` to find out why."""


@dataclass(frozen=True)
class ChainVerification:
    """Outcome of ``verify_chain``. ``rows_checked`` counts rows read, the bad one included."""

    ok: bool
    rows_checked: int
    first_bad_seq: int | None = None
    problem: str | None = None


def chain_hash(prev_hash: str, canonical_record: str) -> str:
    """The chain's link: anyone with the rows can recompute it (hex sha256 of the two, UTF-8)."""
    return hashlib.sha256((prev_hash + canonical_record).encode()).hexdigest()


class AuditChainStore:
    """Appends audit records to a hash chain in Postgres.

    ``connect`` returns a new psycopg connection; each call here opens one and closes it.
    """

    def __init__(self, connect: ConnectionFactory, *, table: str = DEFAULT_TABLE, schema: str = "public") -> None:
        self._connect = connect
        self._sql = _ChainSql(schema, table)

    def ensure_schema(self) -> None:
        """Create the tables, indexes and trigger if missing; safe to call from every worker."""
        with self._connect() as conn, conn.transaction():
            conn.execute(self._sql.lock, (self._sql.lock_key,))
            for statement in self._sql.create:
                conn.execute(statement)

    def append(self, records: Sequence[AuditRecord]) -> list[int]:
        """Append ``records`` in one transaction, in order; return their ``seq`` numbers."""
        from psycopg import IsolationLevel

        if not records:
            return []
        documents = [canonical_json(record.model_dump(mode="json")) for record in records]
        with self._connect() as conn:
            # Under REPEATABLE READ the snapshot would predate the lock and miss the last append.
            conn.isolation_level = IsolationLevel.READ_COMMITTED
            with conn.transaction():
                canonical = [row[0] for row in conn.execute(self._sql.canonical, (documents,))]
                conn.execute(self._sql.lock, (self._sql.lock_key,))
                rows = _chain_rows(records, canonical, *self._head(conn))
                with conn.cursor() as cursor:
                    cursor.executemany(self._sql.insert, rows)
                conn.execute(self._sql.set_head, (rows[-1][0], rows[-1][-1]))
        return [row[0] for row in rows]

    def _head(self, conn: psycopg.Connection[Any]) -> tuple[int, str]:
        """The last ``(seq, record_hash)``; refuses to build on a chain whose end was tampered with."""
        last = conn.execute(self._sql.last_row).fetchone()
        head = conn.execute(self._sql.head).fetchone()
        if last != head:
            raise AuditChainError(
                f"audit chain {self._sql.name} ends at seq={last[0] if last else 0} but its head table records "
                f"seq={head[0] if head else 0}; appending would hide that, run verify"
            )
        return (last[0], last[1]) if last else (0, GENESIS_HASH)


def _chain_rows(
    records: Sequence[AuditRecord], canonical: Sequence[str], seq: int, prev_hash: str
) -> list[tuple[Any, ...]]:
    """Table rows for ``records`` continuing a chain that ends at ``seq`` with hash ``prev_hash``."""
    rows = []
    for record, text in zip(records, canonical, strict=True):
        seq += 1
        record_hash = chain_hash(prev_hash, text)
        indexed = (record.audit_id, record.kind, record.status, record.dag_id, record.run_id, record.created_at)
        rows.append((seq, *indexed, text, prev_hash, record_hash))
        prev_hash = record_hash
    return rows


def verify_chain(
    connect: ConnectionFactory, *, table: str = DEFAULT_TABLE, schema: str = "public"
) -> ChainVerification:
    """Recompute the whole chain in ``seq`` order and compare its end with the head table.

    Rows stream through a server-side cursor, so memory stays flat on a million rows; one
    REPEATABLE READ snapshot covers rows and head, so appends running meanwhile cannot cause a
    false alarm. Stops at the first problem.
    """
    from psycopg import IsolationLevel
    from psycopg.rows import class_row

    statements = _ChainSql(schema, table)
    walk = _ChainWalk(statements.name)
    with connect() as conn:
        conn.isolation_level = IsolationLevel.REPEATABLE_READ
        conn.read_only = True
        with conn.transaction():
            head = conn.execute(statements.head).fetchone()
            with conn.cursor(name="genesys_audit_verify", row_factory=class_row(_ChainRow)) as cursor:
                cursor.itersize = 2_000
                cursor.execute(statements.rows)
                problem = walk.first_problem(cursor, head)
    if problem:
        return ChainVerification(False, walk.rows, *problem)
    return ChainVerification(True, walk.rows)


#: ``(first bad seq, description)``.
_Problem = tuple[int, str]


@dataclass(frozen=True)
class _ChainRow:
    """One row as verification reads it; ``columns_match`` is computed by Postgres."""

    seq: int
    audit_id: str
    record_text: str
    prev_hash: str
    record_hash: str
    columns_match: bool
    created_at: datetime
    recorded_created_at: str | None


class _ChainWalk:
    """A verification pass: how far it got and the hash the next row must link to."""

    def __init__(self, name: str) -> None:
        self.rows = 0
        self._name = name
        self._seq = 0
        self._hash = GENESIS_HASH

    def first_problem(self, rows: Iterable[_ChainRow], head: tuple[int, str] | None) -> _Problem | None:
        """``(first bad seq, description)`` of the first thing wrong, or ``None`` for a sound chain."""
        for row in rows:
            if problem := self._check_row(row):
                return problem
        return self._check_head(head)

    def _check_row(self, row: _ChainRow) -> _Problem | None:
        self.rows += 1
        expected = self._seq + 1
        if row.seq != expected:
            return expected, f"row seq={expected} is missing: the chain goes from seq={self._seq} to seq={row.seq}"
        described = f"row seq={row.seq} (audit_id {row.audit_id})"
        if row.prev_hash != self._hash:
            return row.seq, f"{described} does not link to seq={self._seq}: a row before it was removed or replaced"
        if chain_hash(row.prev_hash, row.record_text) != row.record_hash:
            return row.seq, f"{described} was edited: its record no longer matches its record_hash"
        if not row.columns_match or _parsed_time(row.recorded_created_at) != row.created_at:
            return row.seq, f"{described} was edited: its indexed columns differ from the hashed record"
        self._seq, self._hash = row.seq, row.record_hash
        return None

    def _check_head(self, head: tuple[int, str] | None) -> _Problem | None:
        """The head table knows where the chain should end, so deleting the newest rows shows here."""
        if head is None:
            return (1, f"the head table of {self._name} is empty but the chain has rows") if self._seq else None
        head_seq, head_hash = head
        if head_seq > self._seq:
            return self._seq + 1, f"rows after seq={self._seq} were deleted: the head table records seq={head_seq}"
        if head_seq < self._seq:
            return head_seq + 1, f"rows after seq={head_seq} were added without the chain store's head update"
        if head_hash != self._hash:
            return self._seq, f"row seq={self._seq} was replaced: the head table records another hash for it"
        return None


_DATETIME: TypeAdapter[datetime | None] = TypeAdapter(datetime | None)


def _parsed_time(text: str | None) -> datetime | None:
    """The record's ``created_at``, or ``None`` if tampering left it unreadable."""
    try:
        return _DATETIME.validate_python(text)
    except ValidationError:
        return None


#: Longest suffix added to the table name for a related object; Postgres cuts names at 63 bytes.
_LONGEST_SUFFIX = "_kind_status_idx"


class _ChainSql:
    """Every statement for one chain table, with identifiers quoted by psycopg, never formatted in."""

    def __init__(self, schema: str, table: str) -> None:
        from psycopg import sql  # the postgres extra: needed only once a chain is used

        if len((table + _LONGEST_SUFFIX).encode()) > 63:
            limit = 63 - len(_LONGEST_SUFFIX)
            raise ValueError(f"audit table name {table!r} is too long: at most {limit} bytes (index names add more)")
        self.name = f"{schema}.{table}"
        self.lock_key = int.from_bytes(
            hashlib.sha256(f"airflow_provider_genesys_llm.audit:{self.name}".encode()).digest()[:8], "big", signed=True
        )
        chain = sql.Identifier(schema, table)
        head = sql.Identifier(schema, f"{table}_head")
        self.create = _schema_statements(schema, table)
        self.lock = sql.SQL("SELECT pg_advisory_xact_lock(%s)")
        self.canonical = sql.SQL("SELECT d::jsonb::text FROM unnest(%s::text[]) WITH ORDINALITY AS u(d, n) ORDER BY n")
        self.last_row = sql.SQL("SELECT seq, record_hash FROM {} ORDER BY seq DESC LIMIT 1").format(chain)
        self.head = sql.SQL("SELECT seq, record_hash FROM {}").format(head)
        self.insert = sql.SQL(
            "INSERT INTO {} (seq, audit_id, kind, status, dag_id, run_id, created_at, record, prev_hash, record_hash)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s, %s::jsonb, %s, %s)"
        ).format(chain)
        self.set_head = sql.SQL(
            "INSERT INTO {} (singleton, seq, record_hash) VALUES (true, %s, %s)"
            " ON CONFLICT (singleton) DO UPDATE SET seq = EXCLUDED.seq, record_hash = EXCLUDED.record_hash"
        ).format(head)
        self.rows = sql.SQL(
            "SELECT seq, audit_id, record::text AS record_text, prev_hash, record_hash,"
            " ROW(audit_id, kind, status, dag_id, run_id) IS NOT DISTINCT FROM"
            " ROW(record->>'audit_id', record->>'kind', record->>'status', record->>'dag_id', record->>'run_id')"
            " AS columns_match,"
            " created_at, record->>'created_at' AS recorded_created_at"
            " FROM {} ORDER BY seq"
        ).format(chain)


def _schema_statements(schema: str, table: str) -> list[sql.Composed]:
    """DDL for the chain table, its indexes, its append-only trigger and the head table."""
    from psycopg import sql

    chain = sql.Identifier(schema, table)
    guard = sql.Identifier(schema, f"{table}_append_only")
    return [
        sql.SQL(
            "CREATE TABLE IF NOT EXISTS {} ("
            " seq bigint PRIMARY KEY CHECK (seq > 0),"
            " audit_id text NOT NULL UNIQUE,"
            " kind text NOT NULL,"
            " status text NOT NULL,"
            " dag_id text,"
            " run_id text,"
            " created_at timestamptz NOT NULL,"
            " record jsonb NOT NULL,"
            " prev_hash text NOT NULL,"
            " record_hash text NOT NULL)"
        ).format(chain),
        sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} (dag_id, run_id)").format(
            sql.Identifier(f"{table}_dag_run_idx"), chain
        ),
        sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} (created_at)").format(
            sql.Identifier(f"{table}_created_at_idx"), chain
        ),
        sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} (kind, status, created_at)").format(
            sql.Identifier(f"{table}{_LONGEST_SUFFIX}"), chain
        ),
        sql.SQL(
            "CREATE TABLE IF NOT EXISTS {} ("
            " singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),"
            " seq bigint NOT NULL,"
            " record_hash text NOT NULL)"
        ).format(sql.Identifier(schema, f"{table}_head")),
        sql.SQL(
            "CREATE OR REPLACE FUNCTION {}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN"
            " RAISE EXCEPTION 'audit table %.% is append-only: % refused', TG_TABLE_SCHEMA, TG_TABLE_NAME, TG_OP;"
            " END $$"
        ).format(guard),
        # CREATE OR REPLACE TRIGGER needs Postgres 14 or later.
        sql.SQL(
            "CREATE OR REPLACE TRIGGER {} BEFORE UPDATE OR DELETE OR TRUNCATE ON {}"
            " FOR EACH STATEMENT EXECUTE FUNCTION {}()"
        ).format(sql.Identifier(f"{table}_append_only"), chain, guard),
    ]
