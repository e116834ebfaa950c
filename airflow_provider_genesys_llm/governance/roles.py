"""A least-privilege writer role for the audit chain: it can append through the function, nothing else.

The pipeline's tasks run code from DAG files and plugins; whoever controls that code controls the
database role the tasks connect with. If that role owns the audit tables, the chain is only as
safe as every DAG. A writer role that can only ``EXECUTE`` the ``SECURITY DEFINER`` append
function cannot update, delete, truncate, insert directly or backdate; the tables' owner stays
with the DBA. This module is run once by that owner (``create-writer-role`` in ``__main__``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .chain import DEFAULT_TABLE, AuditChainStore, ConnectionFactory
from .chain_sql import ChainSql

if TYPE_CHECKING:
    import psycopg

#: Privileges the writer must not hold on either chain table (through PUBLIC, roles or columns).
FORBIDDEN = ("INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER")


class WriterRoleError(RuntimeError):
    """The writer role would not be least-privilege; nothing was changed (the transaction rolled back)."""


@dataclass(frozen=True)
class WriterRole:
    """What ``create_writer_role`` did, for the CLI to print."""

    role: str
    created: bool
    password_set: bool
    function: str


def create_writer_role(
    connect: ConnectionFactory,
    role: str,
    *,
    password: str | None = None,
    table: str = DEFAULT_TABLE,
    schema: str = "public",
) -> WriterRole:
    """Create (or tighten) ``role`` so it can only append to ``schema.table``; run as the tables' owner.

    Creates the chain if it is missing. A password is sent as a SCRAM verifier computed here, so the
    clear text never reaches the server or its statement log. An existing role that is a superuser,
    has CREATEROLE, belongs to other roles or can act as the owner is refused: no grant could make
    it least-privilege.
    """
    from psycopg import sql

    AuditChainStore(connect, table=table, schema=schema).ensure_schema()
    statements = ChainSql(schema, table)
    name = sql.Identifier(role)
    with connect() as conn, conn.transaction():
        existing = conn.execute(_ROLE_STANDING, {"role": role, "schema": schema, "table": table}).fetchone()
        if existing is not None:
            _refuse_powerful(role, statements.name, *existing)
            conn.execute(sql.SQL("ALTER ROLE {} LOGIN NOINHERIT").format(name))  # the rest needs a superuser
        else:
            # A login that can do nothing by itself; NOINHERIT keeps rights of roles it may later join out of reach.
            conn.execute(
                sql.SQL(
                    "CREATE ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS NOINHERIT"
                ).format(name)
            )
        if password is not None:
            verifier = conn.pgconn.encrypt_password(password.encode(), role.encode(), b"scram-sha-256").decode()
            conn.execute(sql.SQL("ALTER ROLE {} PASSWORD {}").format(name, sql.Literal(verifier)))
        conn.execute(statements.script("writer_role.sql", role=name))
        _check_least_privilege(conn, role, statements)
    return WriterRole(role, existing is None, password is not None, f"{statements.name}_append(jsonb)")


#: For an existing role: is it a superuser or a role admin, can it act as the chain's owner, which roles is it in.
_ROLE_STANDING = """
SELECT r.rolsuper OR r.rolcreaterole, pg_catalog.pg_has_role(r.oid, c.relowner, 'MEMBER'),
       pg_catalog.pg_get_userbyid(c.relowner),
       ARRAY(SELECT pg_catalog.pg_get_userbyid(m.roleid) FROM pg_catalog.pg_auth_members m WHERE m.member = r.oid)
FROM pg_catalog.pg_roles r, pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
WHERE r.rolname = %(role)s AND n.nspname = %(schema)s AND c.relname = %(table)s
"""

#: Rows ``(privilege, table)`` the role holds effectively (via PUBLIC, a column grant or a predefined role).
_FORBIDDEN_HELD = """
SELECT p.privilege, c.relname
FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
CROSS JOIN unnest(%(privileges)s::text[]) AS p(privilege)
WHERE n.nspname = %(schema)s AND c.relname IN (%(table)s::text, %(table)s::text || '_head')
  AND CASE WHEN p.privilege IN ('INSERT', 'UPDATE', 'REFERENCES')
           THEN pg_catalog.has_any_column_privilege(%(role)s, c.oid, p.privilege)
           ELSE pg_catalog.has_table_privilege(%(role)s, c.oid, p.privilege) END
UNION ALL
SELECT 'no EXECUTE', p.proname
FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
WHERE n.nspname = %(schema)s AND p.proname = %(table)s::text || '_append'
  AND NOT pg_catalog.has_function_privilege(%(role)s, p.oid, 'EXECUTE')
"""


def _refuse_powerful(role: str, chain: str, powerful: bool, owns: bool, owner: str, memberships: list[str]) -> None:
    """No grant makes a superuser, a role admin, the owner's member or a member of other roles
    (``SET ROLE`` brings their rights) least-privilege."""
    if powerful or owns or memberships:
        if powerful:
            why = "a superuser or has CREATEROLE"
        elif owns:
            why = f"able to act as {owner!r}, the owner of {chain}"
        else:
            why = f"a member of {', '.join(sorted(memberships))} (SET ROLE would bring their rights)"
        raise WriterRoleError(f"role {role!r} is {why}; pick a new role name for the writer")


def _check_least_privilege(conn: psycopg.Connection[Any], role: str, statements: ChainSql) -> None:
    """Effective privileges after the grants, whatever granted them; any left over aborts the transaction."""
    params = {"role": role, "schema": statements.schema, "table": statements.table, "privileges": list(FORBIDDEN)}
    held = conn.execute(_FORBIDDEN_HELD, params).fetchall()
    if held:
        found = ", ".join(f"{privilege} on {name}" for privilege, name in held)
        raise WriterRoleError(
            f"role {role!r} would still hold {found} (granted to PUBLIC or to a role it belongs to); "
            "revoke those grants and run create-writer-role again"
        )
