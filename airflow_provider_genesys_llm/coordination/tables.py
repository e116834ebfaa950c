"""Every table of the coordination package, in one place: the whole schema an operator meets.

Names are fixed and prefixed (`genesys_llm_`), optionally in a configured schema; they are
composed as identifiers (`psycopg.sql`), never formatted into SQL text. Each object creates its
tables on first use with `Database.ensure_tables`.
"""

from __future__ import annotations

from dataclasses import dataclass

from psycopg import sql


@dataclass(frozen=True)
class TableSpec:
    """One table: its fixed name, its columns and the indexes its queries need; the DDL of every
    table is generated from these, so the statements cannot drift apart in shape or quoting."""

    name: str
    columns: str
    #: (name suffix, column list) of each index.
    indexes: tuple[tuple[str, str], ...] = ()

    def identifier(self, schema: str | None) -> sql.Identifier:
        """The table's identifier, schema-qualified when a schema is configured."""
        return sql.Identifier(schema, self.name) if schema else sql.Identifier(self.name)

    def ddl(self, schema: str | None) -> list[sql.Composed]:
        table = self.identifier(schema)
        create = sql.SQL("CREATE TABLE IF NOT EXISTS {} ({})").format(table, sql.SQL(self.columns))
        return [create] + [
            sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} ({})").format(
                sql.Identifier(f"{self.name}_{suffix}"), table, sql.SQL(columns)
            )
            for suffix, columns in self.indexes
        ]


#: The shared gate: one state row per connection id ...
GATE_STATE = TableSpec(
    "genesys_llm_gate_state",
    "conn_id text PRIMARY KEY, limit_now double precision NOT NULL, last_change timestamptz NOT NULL,"
    " paused_until timestamptz NOT NULL, tokens double precision NOT NULL, tokens_at timestamptz NOT NULL",
)
#: ... its leases ...
GATE_LEASES = TableSpec(
    "genesys_llm_gate_leases",
    "lease_id uuid PRIMARY KEY, conn_id text NOT NULL, owner text NOT NULL, priority text NOT NULL,"
    " acquired_at timestamptz NOT NULL, expires_at timestamptz NOT NULL",
    indexes=(("conn_expires", "conn_id, expires_at"),),
)
#: ... and who waits.
GATE_WAITERS = TableSpec(
    "genesys_llm_gate_waiters",
    "conn_id text NOT NULL, owner text NOT NULL, priority text NOT NULL, waiting integer NOT NULL,"
    " expires_at timestamptz NOT NULL, PRIMARY KEY (conn_id, owner, priority)",
)
#: Item claims: one row per (namespace, result id), `claimed` under a lease or `done`.
ITEM_CLAIMS = TableSpec(
    "genesys_llm_item_claims",
    "namespace text NOT NULL, item_id text NOT NULL, owner text NOT NULL, token text NOT NULL,"
    " status text NOT NULL CHECK (status IN ('claimed', 'done')), attempts integer NOT NULL,"
    " claimed_at timestamptz NOT NULL, expires_at timestamptz NOT NULL, PRIMARY KEY (namespace, item_id)",
)
#: Spend: a row per request, `reserved` (worst case, until it expires) or `settled` (real cost).
SPEND = TableSpec(
    "genesys_llm_spend",
    "reservation_id uuid PRIMARY KEY, conn_id text NOT NULL, day date NOT NULL, dag_run text, task text,"
    " state text NOT NULL CHECK (state IN ('reserved', 'settled')), amount numeric NOT NULL,"
    " created_at timestamptz NOT NULL, expires_at timestamptz",
    indexes=(("conn_day", "conn_id, day"),),
)


@dataclass(frozen=True)
class GateTables:
    """The shared gate's three tables in one schema."""

    state: sql.Identifier
    leases: sql.Identifier
    waiters: sql.Identifier
    schema: str | None

    @classmethod
    def in_schema(cls, schema: str | None) -> GateTables:
        return cls(
            GATE_STATE.identifier(schema), GATE_LEASES.identifier(schema), GATE_WAITERS.identifier(schema), schema
        )

    def ddl(self) -> list[sql.Composed]:
        return [*GATE_STATE.ddl(self.schema), *GATE_LEASES.ddl(self.schema), *GATE_WAITERS.ddl(self.schema)]
