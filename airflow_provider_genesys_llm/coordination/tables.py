"""Every table of the coordination package, in one place: the whole schema an operator meets.

Names are fixed and prefixed (`genesys_llm_`), optionally in a configured schema; they are
composed as identifiers (`psycopg.sql`), never formatted into SQL text. Each object creates its
tables on first use with `Database.ensure_tables`.
"""

from __future__ import annotations

from dataclasses import dataclass

from psycopg import sql

GATE_STATE = "genesys_llm_gate_state"
GATE_LEASES = "genesys_llm_gate_leases"
GATE_WAITERS = "genesys_llm_gate_waiters"
ITEM_CLAIMS = "genesys_llm_item_claims"
SPEND = "genesys_llm_spend"


def table(schema: str | None, name: str) -> sql.Identifier:
    """A table identifier, schema-qualified when a schema is configured."""
    return sql.Identifier(schema, name) if schema else sql.Identifier(name)


@dataclass(frozen=True)
class GateTables:
    """The shared gate: one state row per connection id, its leases, and who waits."""

    state: sql.Identifier
    leases: sql.Identifier
    waiters: sql.Identifier

    @classmethod
    def in_schema(cls, schema: str | None) -> GateTables:
        return cls(table(schema, GATE_STATE), table(schema, GATE_LEASES), table(schema, GATE_WAITERS))

    def ddl(self) -> list[sql.Composed]:
        return [
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} (conn_id text PRIMARY KEY, limit_now double precision NOT NULL,"
                " last_change timestamptz NOT NULL, paused_until timestamptz NOT NULL,"
                " tokens double precision NOT NULL, tokens_at timestamptz NOT NULL)"
            ).format(self.state),
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} (lease_id uuid PRIMARY KEY, conn_id text NOT NULL,"
                " owner text NOT NULL, priority text NOT NULL, acquired_at timestamptz NOT NULL,"
                " expires_at timestamptz NOT NULL)"
            ).format(self.leases),
            sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} (conn_id, expires_at)").format(
                sql.Identifier(f"{GATE_LEASES}_conn_expires"), self.leases
            ),
            sql.SQL(
                "CREATE TABLE IF NOT EXISTS {} (conn_id text NOT NULL, owner text NOT NULL, priority text NOT NULL,"
                " waiting integer NOT NULL, expires_at timestamptz NOT NULL, PRIMARY KEY (conn_id, owner, priority))"
            ).format(self.waiters),
        ]


def claims_ddl(claims: sql.Identifier) -> list[sql.Composed]:
    """Item claims: one row per (namespace, result id), `claimed` under a lease or `done`."""
    return [
        sql.SQL(
            "CREATE TABLE IF NOT EXISTS {} (namespace text NOT NULL, item_id text NOT NULL,"
            " owner text NOT NULL, token text NOT NULL, status text NOT NULL CHECK (status IN"
            " ('claimed', 'done')), attempts integer NOT NULL, claimed_at timestamptz NOT NULL,"
            " expires_at timestamptz NOT NULL, PRIMARY KEY (namespace, item_id))"
        ).format(claims)
    ]


def spend_ddl(spend: sql.Identifier) -> list[sql.Composed]:
    """Spend: a row per request, `reserved` (worst case, until it expires) or `settled` (real cost)."""
    return [
        sql.SQL(
            "CREATE TABLE IF NOT EXISTS {} (reservation_id uuid PRIMARY KEY, conn_id text NOT NULL,"
            " day date NOT NULL, dag_run text, task text, state text NOT NULL CHECK (state IN"
            " ('reserved', 'settled')), amount numeric NOT NULL, created_at timestamptz NOT NULL,"
            " expires_at timestamptz)"
        ).format(spend),
        sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} (conn_id, day)").format(
            sql.Identifier(f"{SPEND}_conn_day"), spend
        ),
    ]
