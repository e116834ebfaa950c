"""Every statement for one audit chain, with identifiers quoted by psycopg, never formatted in.

The DDL and the grants live in ``sql/*.sql`` so a DBA can read (and review) exactly what runs;
their ``{placeholders}`` are filled with ``psycopg.sql`` identifiers and literals here.
"""

from __future__ import annotations

import hashlib
from importlib import resources
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from psycopg import sql

#: Longest suffix added to the table name for a related object; Postgres cuts names at 63 bytes.
_LONGEST_SUFFIX = "_kind_status_idx"


def sql_script(name: str) -> str:
    """The text of ``governance/sql/<name>`` (package data)."""
    return resources.files(__package__).joinpath("sql", name).read_text(encoding="utf-8")


class ChainSql:
    """The statements for the chain ``schema.table``; its related objects are named after the table."""

    def __init__(self, schema: str, table: str) -> None:
        from psycopg import sql  # the postgres extra: needed only once a chain is used

        if len((table + _LONGEST_SUFFIX).encode()) > 63:
            limit = 63 - len(_LONGEST_SUFFIX)
            raise ValueError(f"audit table name {table!r} is too long: at most {limit} bytes (index names add more)")
        self.schema = schema
        self.table = table
        self.name = f"{schema}.{table}"
        #: Key of the transaction-level advisory lock that serialises appends across processes.
        self.lock_key = int.from_bytes(
            hashlib.sha256(f"airflow_provider_genesys_llm.audit:{self.name}".encode()).digest()[:8], "big", signed=True
        )
        self.append_function = f"{table}_append"
        self.identifiers = {
            "schema": sql.Identifier(schema),
            "chain": sql.Identifier(schema, table),
            "head": sql.Identifier(schema, f"{table}_head"),
            "append": sql.Identifier(schema, self.append_function),
            "guard": sql.Identifier(schema, f"{table}_append_only"),
            "guard_trigger": sql.Identifier(f"{table}_append_only"),
            "dag_run_index": sql.Identifier(f"{table}_dag_run_idx"),
            "created_at_index": sql.Identifier(f"{table}_created_at_idx"),
            "kind_status_index": sql.Identifier(f"{table}{_LONGEST_SUFFIX}"),
            "chain_name": sql.Literal(self.name),
            "lock_key": sql.Literal(self.lock_key),
        }
        self.create = self.script("chain_schema.sql")
        self.lock = sql.SQL("SELECT pg_advisory_xact_lock(%s)")
        # pg_catalog, not to_regclass: lookups by name need no privilege on the schema's objects.
        self.objects_exist = sql.SQL(
            "SELECT count(*) = 3 FROM ("
            " SELECT c.relname FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = %(schema)s AND c.relname IN (%(table)s::text, %(table)s::text || '_head')"
            " UNION ALL"
            " SELECT p.proname FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace"
            " WHERE n.nspname = %(schema)s AND p.proname = %(table)s::text || '_append') AS found"
        )
        self.append = sql.SQL("SELECT appended_seq, appended_hash FROM {}(%s::jsonb)").format(
            self.identifiers["append"]
        )
        self.head = sql.SQL("SELECT seq, record_hash FROM {}").format(self.identifiers["head"])
        self.rows = sql.SQL(
            "SELECT seq, audit_id, record::text AS record_text, prev_hash, record_hash,"
            " ROW(audit_id, kind, status, dag_id, run_id) IS NOT DISTINCT FROM"
            " ROW(record->>'audit_id', record->>'kind', record->>'status', record->>'dag_id', record->>'run_id')"
            " AS columns_match,"
            " created_at, record->>'created_at' AS recorded_created_at"
            " FROM {} ORDER BY seq"
        ).format(self.identifiers["chain"])

    def script(self, name: str, **extra: sql.Composable) -> sql.Composed:
        """``sql/<name>`` with this chain's identifiers (and ``extra`` ones) in its placeholders."""
        from psycopg import sql

        return sql.SQL(sql_script(name)).format(**self.identifiers, **extra)
