"""The audit hash chain in Postgres: appends through a server-side function, and its verification.

Each row carries ``seq`` (1, 2, 3, ... without gaps), ``prev_hash`` (the previous row's hash, 64
zeros for the first) and ``record_hash = sha256(prev_hash + canonical JSON of the record)``. The
canonical JSON is Postgres's own text form of the ``jsonb`` value, so the bytes hashed at append
time are exactly the bytes ``verify_chain`` reads back: a Python re-serialisation would disagree
with ``jsonb`` on numbers such as ``-0.0`` or ``1e16`` and report tampering that never happened.
A one-row ``{table}_head`` table, updated with every append, remembers the last ``seq`` and hash.

Appends go through ``{table}_append(jsonb)`` (``sql/chain_schema.sql``), a ``SECURITY DEFINER``
function that takes a transaction-level advisory lock (appends come from many workers at once),
computes seq and hashes and stamps ``created_at`` from the server clock. The pipeline can thus
connect as a role that may execute that function and nothing else (``create-writer-role``): it
cannot edit, delete or backdate rows. The owner of the tables still can, and so can a superuser;
``verify_chain`` therefore trusts nothing the database was meant to guarantee, and takes heads
witnessed outside the database (``witness.py``) to catch what the tables alone cannot show.

psycopg is imported only when a chain is used: records and log lines need no database driver.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from pydantic import TypeAdapter, ValidationError

from .canonical import canonical_json
from .chain_sql import ChainSql
from .store_errors import StoreError, wrapped_errors
from .witness import GENESIS_HASH, ChainHead, Problem, WitnessCheck

if TYPE_CHECKING:
    import psycopg

    from .audit import AuditRecord

DEFAULT_TABLE = "genesys_llm_audit"

ConnectionFactory = Callable[[], "psycopg.Connection[Any]"]


class AuditChainError(StoreError):
    """The chain cannot be appended to safely; run ``verify`` to find out why. A refusal of the
    chain itself (missing, broken, no privilege) is not transient; a lost connection is."""


@dataclass(frozen=True)
class ChainVerification:
    """Outcome of ``verify_chain``. ``rows_checked`` counts rows read, the bad one included;
    ``witnesses_checked`` counts the witnessed heads that named this chain."""

    ok: bool
    rows_checked: int
    first_bad_seq: int | None = None
    problem: str | None = None
    witnesses_checked: int = 0


def chain_hash(prev_hash: str, canonical_record: str) -> str:
    """The chain's link: anyone with the rows can recompute it (hex sha256 of the two, UTF-8)."""
    return hashlib.sha256((prev_hash + canonical_record).encode()).hexdigest()


class AuditChainStore:
    """Appends audit records to a hash chain in Postgres.

    ``connect`` returns a new psycopg connection; each call here opens one and closes it. The
    connecting role needs only EXECUTE on the append function once the owner created the chain.
    """

    def __init__(self, connect: ConnectionFactory, *, table: str = DEFAULT_TABLE, schema: str = "public") -> None:
        self._connect = connect
        self._sql = ChainSql(schema, table)
        #: The head this store left with its last append, for the task to publish as a witness.
        self.last_head: ChainHead | None = None

    def ensure_schema(self) -> None:
        """Create the tables, trigger and append function if missing; safe to call from every worker.

        When they all exist nothing is executed, so a writer role without CREATE passes here.
        """
        import psycopg

        with wrapped_errors(AuditChainError, "ensure_schema", self._sql.name), self._connect() as conn:
            found = conn.execute(self._sql.objects_exist, {"schema": self._sql.schema, "table": self._sql.table})
            if found.fetchone() == (True,):
                return
            try:
                with conn.transaction():
                    conn.execute(self._sql.lock, (self._sql.lock_key,))
                    conn.execute(self._sql.create)
            except psycopg.errors.InsufficientPrivilege as exc:
                raise AuditChainError(
                    f"audit chain {self._sql.name} is missing and this role may not create it: run "
                    "`python -m airflow_provider_genesys_llm.governance create-writer-role` as the owner",
                    sqlstate=exc.sqlstate,
                ) from None

    def append(self, records: Sequence[AuditRecord]) -> list[int]:
        """Append ``records`` in one transaction, in order; return their ``seq`` numbers.

        The server overwrites each record's ``created_at`` with the time it accepted it.
        """
        import psycopg

        if not records:
            return []
        documents = "[" + ",".join(canonical_json(record.model_dump(mode="json")) for record in records) + "]"
        with wrapped_errors(AuditChainError, "append", self._sql.name):
            try:
                with self._connect() as conn:
                    # Under REPEATABLE READ the snapshot would predate the lock and miss the last append.
                    conn.isolation_level = psycopg.IsolationLevel.READ_COMMITTED
                    rows = conn.execute(self._sql.append, (documents,)).fetchall()
            except psycopg.errors.RaiseException as exc:
                # The append function's own refusal (a broken or edited chain): its primary message
                # carries no record content, and a retry would be refused again.
                refusal = exc.diag.message_primary or f"audit chain {self._sql.name} refused the append"
                raise AuditChainError(refusal, sqlstate=exc.sqlstate, transient=False) from None
        last_seq, last_hash = rows[-1]
        self.last_head = ChainHead(schema=self._sql.schema, table=self._sql.table, seq=last_seq, record_hash=last_hash)
        return [row[0] for row in rows]


def verify_chain(
    connect: ConnectionFactory,
    *,
    table: str = DEFAULT_TABLE,
    schema: str = "public",
    witnesses: Iterable[ChainHead] = (),
) -> ChainVerification:
    """Recompute the whole chain in ``seq`` order, compare its end with the head table and every
    row a witness saw with the witnessed hash (heads of other chains are ignored).

    Rows stream through a server-side cursor, so memory stays flat on a million rows; one
    REPEATABLE READ snapshot covers rows and head, so appends running meanwhile cannot cause a
    false alarm. Stops at the first problem.
    """
    from psycopg import IsolationLevel
    from psycopg.rows import class_row

    statements = ChainSql(schema, table)
    walk = _ChainWalk(statements.name, WitnessCheck(statements.name, witnesses))
    with connect() as conn:
        conn.isolation_level = IsolationLevel.REPEATABLE_READ
        conn.read_only = True
        with conn.transaction():
            head = conn.execute(statements.head).fetchone()
            with conn.cursor(name="genesys_audit_verify", row_factory=class_row(_ChainRow)) as cursor:
                cursor.itersize = 2_000
                cursor.execute(statements.rows)
                problem = walk.first_problem(cursor, head)
    witnessed = walk.witness.count
    if problem:
        return ChainVerification(False, walk.rows, *problem, witnesses_checked=witnessed)
    return ChainVerification(True, walk.rows, witnesses_checked=witnessed)


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

    def __init__(self, name: str, witness: WitnessCheck) -> None:
        self.rows = 0
        self.witness = witness
        self._name = name
        self._seq = 0
        self._hash = GENESIS_HASH

    def first_problem(self, rows: Iterable[_ChainRow], head: tuple[int, str] | None) -> Problem | None:
        """``(first bad seq, description)`` of the first thing wrong, or ``None`` for a sound chain."""
        for row in rows:
            if problem := self._check_row(row):
                return problem
        return self._check_head(head) or self.witness.check_end(self._seq)

    def _check_row(self, row: _ChainRow) -> Problem | None:
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
        return self.witness.check_row(row.seq, row.record_hash)

    def _check_head(self, head: tuple[int, str] | None) -> Problem | None:
        """The head table knows where the chain should end, so deleting the newest rows shows here
        (unless the head was rolled back too: that takes a witness)."""
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
