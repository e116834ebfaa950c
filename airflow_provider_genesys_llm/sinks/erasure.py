"""Erasure (GDPR article 17, CCPA): delete everything derived from given conversations, for good.

``erase`` removes, in one transaction, a conversation's landed transcripts, its results (answers,
embeddings, metadata) and failures, records a tombstone (a keyed hash of each id) and appends an
audit record holding only those keyed hashes. Either all of it happens or none of it: a crash
half-way leaves nothing deleted and nothing recorded. ``TombstoneList`` is checked before
landing and before enrichment, so a backfill of the same interval does not bring an erased
conversation back.

Ids are matched the way the pipeline builds them: a transcript's source id is
``conversation_id:communication_id:transcript_id``, so an id erases rows whose source id equals
it or starts with it followed by ``:`` (``abc`` never matches ``abcd:...``). Result tables store
source ids masked by governance, and next to them ``source_key``, the keyed hash of the raw
source id (``id_digest``, the tombstone's own hash): a result or failure row whose ``source_key``
is the hash of an erased id is deleted even when masking altered the id (one that looks like a
phone number is stored as a placeholder other ids share). The masked ``source_id`` still matches
a conversation id's rows below it (``conv:comm:tr``; conversation ids are UUIDs, which masking
leaves alone) and rows stored before ``source_key`` existed; such older rows of an id that
masking alters cannot be told apart and are left alone rather than deleting other people's rows.
The report counts ids that masking alters (pass the masker the pipeline used).

What this cannot reach, and the operator must handle: database backups and WAL archives, copies
made outside these tables, and Airflow's own metadata (DAG run conf, XCom of user tasks). Deleted
rows stay in the table files until ``VACUUM`` reclaims them, which ``erase`` runs afterwards
unless told not to. An enrichment already running when the erasure commits can still write the
conversation's result: erase when no run of that interval is in flight, or erase again (it is
idempotent).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import psycopg
from psycopg import sql

from ..governance.audit import AuditLog, AuditRecord
from ..governance.chain import DEFAULT_TABLE as DEFAULT_AUDIT_TABLE
from ..governance.chain import AuditChainError, AuditChainStore
from ..governance.keys import IdKey
from ..governance.masking import PiiMasker
from ..governance.store_errors import StoreError, postgres_reason

log = logging.getLogger(__name__)

#: ``IdKey.digest`` purpose of erased ids: tombstones and the erasure's audit record.
ERASURE_PURPOSE = "erasure"
DEFAULT_TOMBSTONES_TABLE = "genesys_erasure_tombstones"
DEFAULT_TRANSCRIPTS_TABLE = "genesys_transcripts"
#: A source id's parts are joined with this; an id erases itself and everything below it.
SEPARATOR = ":"
#: Columns that make a table a results table of ``PgVectorStore`` (found when none are named).
_RESULT_COLUMNS = ("source_id", "embedding", "content_hash")
_FAILURES_SUFFIX = "_failures"
_TRANSCRIPT_KEY = sql.SQL("conversation_id || ':' || communication_id || ':' || transcript_id")

ConnectionFactory = Callable[[], "psycopg.Connection[Any]"]


class ErasureError(StoreError):
    """The erasure did not happen (nothing was deleted); the message names the step and the table.

    Postgres' DETAIL is left out (it can quote a row); a retry repeats the whole erasure.
    """


@dataclass(frozen=True)
class ErasureTargets:
    """Where derived data lives. ``results_tables=None`` finds every ``PgVectorStore`` results
    table in ``schema`` (each with its ``_failures`` table); missing tables are skipped."""

    schema: str = "public"
    transcripts_table: str | None = DEFAULT_TRANSCRIPTS_TABLE
    results_tables: Sequence[str] | None = None
    tombstones_table: str = DEFAULT_TOMBSTONES_TABLE
    audit_table: str | None = DEFAULT_AUDIT_TABLE


@dataclass(frozen=True)
class ErasureReport:
    """What one erasure removed, by table; holds no id."""

    ids: int
    deleted: dict[str, int] = field(default_factory=dict)
    audit_seq: int | None = None
    #: Ids that masking alters: matched by ``source_key``, except rows stored before it (module doc).
    altered_by_masking: int = 0

    def summary(self) -> dict[str, Any]:
        return {
            "ids": self.ids,
            "rows_deleted": sum(self.deleted.values()),
            "by_table": dict(self.deleted),
            "audit_seq": self.audit_seq,
            "ids_altered_by_masking": self.altered_by_masking,
        }


def id_digest(key: IdKey, erased_id: str) -> str:
    """The keyed hash an erased id is remembered by (tombstone, audit record)."""
    return key.digest(ERASURE_PURPOSE, erased_id)


def prefixes(source_id: str) -> list[str]:
    """``a:b:c`` → ``a``, ``a:b``, ``a:b:c``: every id whose erasure covers this source id."""
    parts = source_id.split(SEPARATOR)
    return [SEPARATOR.join(parts[: end + 1]) for end in range(len(parts))]


def checked_ids(ids: Iterable[str]) -> list[str]:
    """Distinct ids in order; refuses empty ones (they would match nothing, silently)."""
    result: dict[str, None] = {}
    for position, erased_id in enumerate(ids):
        if not isinstance(erased_id, str) or not erased_id.strip() or erased_id != erased_id.strip():
            raise ValueError(
                f"id #{position} is {'not a string' if not isinstance(erased_id, str) else 'empty or padded'}: "
                "give conversation ids or source ids as non-empty strings without surrounding spaces"
            )
        result[erased_id] = None
    if not result:
        raise ValueError("no ids to erase: give at least one conversation id or source id")
    return list(result)


class TombstoneList:
    """Keyed hashes of erased ids, loaded once: ask it before landing or enriching anything.

    ``skipped`` counts the items ``filter_items`` held back, for the task summary.
    """

    def __init__(self, key: IdKey, digests: Iterable[str]) -> None:
        self._key = key
        self._digests = frozenset(digests)
        self.skipped = 0

    def __len__(self) -> int:
        return len(self._digests)

    @classmethod
    def load(
        cls, connect: ConnectionFactory, key: IdKey, *, table: str = DEFAULT_TOMBSTONES_TABLE, schema: str = "public"
    ) -> TombstoneList:
        """The stored tombstones (none when nothing was ever erased)."""
        return cls(key, stored_digests(connect, table=table, schema=schema))

    def is_erased(self, source_id: str) -> bool:
        """Whether ``source_id`` or an id it belongs to (its conversation) was erased."""
        return any(id_digest(self._key, candidate) in self._digests for candidate in prefixes(source_id))

    def filter_items(self, items: Iterable[Any]) -> Iterator[Any]:
        """Batch items without those of erased ids (counted in ``skipped``); anything that is not
        a mapping with a string ``id`` passes through for the runner to judge."""
        for item in items:
            item_id = item.get("id") if isinstance(item, Mapping) else None
            if isinstance(item_id, str) and self.is_erased(item_id):
                self.skipped += 1
                continue
            yield item


def stored_digests(
    connect: ConnectionFactory, *, table: str = DEFAULT_TOMBSTONES_TABLE, schema: str = "public"
) -> list[str]:
    """Every tombstone's keyed hash; none when the table does not exist (nothing was ever erased),
    so a deployment that never erased anything needs neither the table nor the id key to land."""
    with connect() as conn:
        if not _exists(conn, schema, table):
            return []
        return [row[0] for row in conn.execute(sql.SQL("SELECT id_hmac FROM {}").format(sql.Identifier(schema, table)))]


def ensure_tombstones(
    connect: ConnectionFactory, *, table: str = DEFAULT_TOMBSTONES_TABLE, schema: str = "public"
) -> None:
    """Create the tombstone table if missing (idempotent)."""
    with connect() as conn:
        conn.execute(
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} (id_hmac text PRIMARY KEY, erased_at timestamptz NOT NULL DEFAULT now())"
            ).format(sql.Identifier(schema, table))
        )


def erase(
    connect: ConnectionFactory,
    ids: Iterable[str],
    key: IdKey,
    *,
    targets: ErasureTargets | None = None,
    masker: PiiMasker | None = None,
    audit_fields: Mapping[str, Any] | None = None,
    vacuum: bool = True,
) -> ErasureReport:
    """Delete everything derived from ``ids`` in one transaction, tombstone them, audit it.

    ``audit_fields`` are ``AuditRecord`` fields naming who erased (``dag_id``, ``run_id``,
    ``task_id``, ``owner``, ...). Returns the rows deleted per table (``schema.table``).
    """
    targets = targets or ErasureTargets()
    erased = checked_ids(ids)
    altered = sum(masker.mask(erased_id).text != erased_id for erased_id in erased) if masker else 0
    digests = sorted(id_digest(key, erased_id) for erased_id in erased)
    step, table = "prepare", targets.tombstones_table
    try:
        ensure_tombstones(connect, table=targets.tombstones_table, schema=targets.schema)
        chain = _audit_chain(connect, targets)
        with connect() as conn:
            conn.isolation_level = psycopg.IsolationLevel.READ_COMMITTED  # each statement sees the latest commits
            with conn.transaction():
                deleted: dict[str, int] = {}
                for deletion in _deletions(conn, targets):
                    step, table, statement = deletion  # named for the error message
                    params = {"ids": erased, "digests": digests}
                    deleted[f"{targets.schema}.{table}"] = conn.execute(statement, params).rowcount
                step, table = "tombstone", targets.tombstones_table
                with conn.cursor() as cursor:
                    cursor.executemany(
                        sql.SQL("INSERT INTO {} (id_hmac) VALUES (%s) ON CONFLICT (id_hmac) DO NOTHING").format(
                            sql.Identifier(targets.schema, table)
                        ),
                        [(digest,) for digest in digests],
                    )
                record = _audit_record(digests, deleted, altered, audit_fields or {})
                step, table = "audit", targets.audit_table or ""
                # The store opens and closes "its" connection; the proxy lends ours without closing it,
                # so the audit record commits (or rolls back) with the deletions.
                lent = cast("psycopg.Connection[Any]", _LentConnection(conn))
                seqs = AuditChainStore(lambda: lent, **chain).append([record]) if chain else [None]
    except (psycopg.Error, AuditChainError) as exc:
        if isinstance(exc, AuditChainError):
            reason, transient = str(exc), exc.transient
        else:
            reason, transient = postgres_reason(exc), None
        raise ErasureError(
            f"erasure failed at {step} on {targets.schema}.{table}, nothing was deleted: {reason}",
            sqlstate=exc.sqlstate,
            transient=transient,
        ) from None
    log.info("%s", AuditLog.to_log_line(record))
    if altered:
        log.warning(
            "%d erased id(s) are altered by masking: matched by source_key; rows stored before source_key "
            "existed were not matched",
            altered,
        )
    if vacuum:
        _vacuum(connect, targets.schema, [name.split(".", 1)[1] for name, count in deleted.items() if count])
    return ErasureReport(ids=len(erased), deleted=deleted, audit_seq=seqs[0], altered_by_masking=altered)


def _audit_chain(connect: ConnectionFactory, targets: ErasureTargets) -> dict[str, str] | None:
    if targets.audit_table is None:
        return None
    chain = {"table": targets.audit_table, "schema": targets.schema}
    AuditChainStore(connect, **chain).ensure_schema()
    return chain


def _audit_record(
    digests: list[str], deleted: Mapping[str, int], altered: int, fields: Mapping[str, Any]
) -> AuditRecord:
    """A ``kind="task"`` record naming the erasure, its counts and the ids' keyed hashes only."""
    parameters: dict[str, str | int] = {
        "operation": "erasure",
        "ids": len(digests),
        "id_hmacs": ",".join(digests),
        "ids_altered_by_masking": altered,
        **{f"deleted:{table}": count for table, count in sorted(deleted.items())},
    }
    return AuditRecord(kind="task", status="success", parameters=parameters, **fields)


def _deletions(conn: psycopg.Connection[Any], targets: ErasureTargets) -> Iterator[tuple[str, str, sql.Composed]]:
    """``(step, table, DELETE statement)`` for every existing table that holds derived data."""
    if targets.transcripts_table and _exists(conn, targets.schema, targets.transcripts_table):
        yield (
            "transcripts",
            targets.transcripts_table,
            _delete(targets.schema, targets.transcripts_table, _TRANSCRIPT_KEY),
        )
    results = targets.results_tables
    for table in _results_tables(conn, targets.schema) if results is None else results:
        for name in (table, table + _FAILURES_SUFFIX):
            if _exists(conn, targets.schema, name):
                keyed = _has_column(conn, targets.schema, name, "source_key")
                yield "results", name, _delete(targets.schema, name, sql.Identifier("source_id"), by_source_key=keyed)


def _delete(schema: str, table: str, key: sql.Composable, *, by_source_key: bool = False) -> sql.Composed:
    """Rows whose key, or one of its ``:``-prefixes (``a``, ``a:b``, ``a:b:c``), is an erased id,
    and (``by_source_key``) rows whose ``source_key`` is an erased id's keyed hash (indexed).

    Each row's prefixes are joined to the ids on equality, so Postgres hashes the ids: measured
    here, ~20x faster for 100 ids than testing every row against every id with ``starts_with``.
    """
    keyed = sql.SQL(" UNION SELECT ctid FROM {table} WHERE source_key = ANY(%(digests)s::text[])")
    return sql.SQL(
        "DELETE FROM {table} AS doomed USING ("
        " SELECT DISTINCT candidate.ctid AS row_id FROM {table} AS candidate"
        " CROSS JOIN LATERAL string_to_array({key}, {separator}) AS parts"
        " CROSS JOIN LATERAL generate_series(1, cardinality(parts)) AS depth"
        " JOIN unnest(%(ids)s::text[]) AS erased(id) ON erased.id = array_to_string(parts[1:depth], {separator})"
        "{keyed}) AS matched WHERE doomed.ctid = matched.row_id"
    ).format(
        table=sql.Identifier(schema, table),
        key=key,
        separator=sql.Literal(SEPARATOR),
        keyed=keyed.format(table=sql.Identifier(schema, table)) if by_source_key else sql.SQL(""),
    )


def _exists(conn: psycopg.Connection[Any], schema: str, table: str) -> bool:
    row = conn.execute("SELECT to_regclass(%s)", (sql.Identifier(schema, table).as_string(conn),)).fetchone()
    return row is not None and row[0] is not None


def _has_column(conn: psycopg.Connection[Any], schema: str, table: str, column: str) -> bool:
    """Whether ``table`` has ``column`` (a results table from before ``source_key`` has not)."""
    row = conn.execute(
        "SELECT 1 FROM information_schema.columns WHERE table_schema = %s AND table_name = %s AND column_name = %s",
        (schema, table, column),
    ).fetchone()
    return row is not None


def _results_tables(conn: psycopg.Connection[Any], schema: str) -> list[str]:
    """Tables of ``schema`` with every column of a ``PgVectorStore`` results table."""
    rows = conn.execute(
        "SELECT table_name FROM information_schema.columns WHERE table_schema = %s AND column_name = ANY(%s)"
        " GROUP BY table_name HAVING count(DISTINCT column_name) = %s ORDER BY table_name",
        (schema, list(_RESULT_COLUMNS), len(_RESULT_COLUMNS)),
    )
    return [row[0] for row in rows]


def _vacuum(connect: ConnectionFactory, schema: str, tables: list[str]) -> None:
    """Reclaim the deleted rows' space now, so their bytes do not linger in the table files."""
    if not tables:
        return
    with connect() as conn:
        conn.autocommit = True
        for table in tables:
            conn.execute(sql.SQL("VACUUM {}").format(sql.Identifier(schema, table)))


class _LentConnection:
    """The erasure's connection lent to ``AuditChainStore``, so its append joins the erasure's
    transaction: leaving its ``with`` block neither commits nor closes the connection, and the
    isolation level it asks for (READ COMMITTED, Postgres' default, which the erasure runs in)
    cannot be set inside a transaction, so it is not passed on."""

    def __init__(self, conn: psycopg.Connection[Any]) -> None:
        object.__setattr__(self, "_conn", conn)

    def __enter__(self) -> _LentConnection:
        return self

    def __exit__(self, *exc_info: object) -> None:
        return None

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)

    def __setattr__(self, name: str, value: Any) -> None:
        if name != "isolation_level":
            setattr(self._conn, name, value)
