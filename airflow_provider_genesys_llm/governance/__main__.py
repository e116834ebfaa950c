"""`python -m airflow_provider_genesys_llm.governance`: check an audit chain, or set up its writer role.

``verify``: exit status 0 the chain is intact (and matches every witnessed head given), 1 it is
not (the problem is printed), 2 it could not be checked (bad arguments, no connection, no such
table, an unreadable witness). ``create-writer-role``, run as the owner of the audit tables:
exit 0 the role can append and nothing else, 2 it could not be set up (nothing was changed).
``--conninfo`` needs no Airflow; ``--postgres-conn-id`` reads an Airflow connection through the
Airflow layer (``hooks.postgres``), imported for that option alone.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from functools import partial
from pathlib import Path

import psycopg

from .chain import DEFAULT_TABLE, ChainVerification, verify_chain
from .roles import FORBIDDEN, WriterRoleError, create_writer_role
from .store_errors import postgres_reason
from .witness import WitnessFormatError, read_heads


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m airflow_provider_genesys_llm.governance", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    verify = commands.add_parser("verify", help="recompute the audit hash chain and report the first problem")
    _add_connection_options(verify)
    verify.add_argument(
        "--witness-file",
        type=Path,
        action="append",
        default=[],
        help="JSON lines of witnessed chain heads (ChainHead.to_json), e.g. exported from XCom or asset events",
    )
    verify.add_argument(
        "--witness-log",
        type=Path,
        action="append",
        default=[],
        help="a task log file (plain or Airflow 3 JSON lines) to scan for GENESYS_AUDIT_HEAD lines; repeatable",
    )
    writer = commands.add_parser(
        "create-writer-role", help="as the tables' owner: create a role that can only append through the function"
    )
    _add_connection_options(writer)
    writer.add_argument("--role", required=True, help="name of the writer role to create or tighten")
    writer.add_argument(
        "--password-env", metavar="VAR", help="environment variable holding the role's password (never an argument)"
    )
    return parser


def _add_connection_options(command: argparse.ArgumentParser) -> None:
    source = command.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--conninfo",
        help='libpq connection string, e.g. "host=/run/postgresql dbname=airflow"; keep passwords in ~/.pgpass',
    )
    source.add_argument("--postgres-conn-id", help="an Airflow connection of type postgres")
    command.add_argument("--table", default=DEFAULT_TABLE)
    command.add_argument("--schema", default="public")


def _airflow_conninfo(conn_id: str) -> str:
    # Only --postgres-conn-id needs Airflow: the Airflow layer is imported for it alone, so the
    # CLI reads connections by the same rules as the operators.
    from ..hooks.postgres import conninfo_for

    return conninfo_for(conn_id)


def _verify(args: argparse.Namespace, conninfo: str, chain: str) -> int:
    try:
        heads = read_heads(args.witness_file, args.witness_log)
    except (OSError, UnicodeDecodeError, WitnessFormatError) as exc:
        print(f"could not read the witnessed heads: {exc}", file=sys.stderr)
        return 2
    try:
        result = verify_chain(partial(psycopg.connect, conninfo), table=args.table, schema=args.schema, witnesses=heads)
    except (psycopg.Error, ValueError) as exc:
        reason = postgres_reason(exc) if isinstance(exc, psycopg.Error) else exc
        print(f"could not verify the audit chain {chain}: {reason}", file=sys.stderr)
        return 2
    if not result.ok:
        print(f"audit chain {chain} is broken: {result.problem}", file=sys.stderr)
        return 1
    if heads and not result.witnesses_checked:
        chains = ", ".join(sorted({head.chain for head in heads}))
        print(
            f"none of the {len(heads)} witnessed heads is for {chain} (they name {chains}); check --table/--schema",
            file=sys.stderr,
        )
        return 2
    print(f"audit chain OK: {result.rows_checked} rows{_witnessed(result)}")
    return 0


def _witnessed(result: ChainVerification) -> str:
    return f", {result.witnesses_checked} witnessed heads match" if result.witnesses_checked else ""


def _create_writer_role(args: argparse.Namespace, conninfo: str, chain: str) -> int:
    password = None
    if args.password_env:
        password = os.environ.get(args.password_env)
        if not password:
            print(
                f"environment variable {args.password_env} is not set or empty; export the password there",
                file=sys.stderr,
            )
            return 2
    try:
        writer = create_writer_role(
            partial(psycopg.connect, conninfo), args.role, password=password, table=args.table, schema=args.schema
        )
    except psycopg.Error as exc:
        message = postgres_reason(exc)
        print(f"could not set up writer role {args.role!r} for {chain}: {message}", file=sys.stderr)
        return 2
    except (WriterRoleError, ValueError) as exc:
        print(f"could not set up writer role {args.role!r} for {chain}: {exc}", file=sys.stderr)
        return 2
    print(
        f"writer role {writer.role} {'created' if writer.created else 'updated'}"
        f"{' with a password' if writer.password_set else ''}: it can append to {chain} through {writer.function}"
        f" and holds no {', '.join(FORBIDDEN)} on its tables"
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    chain = f"{args.schema}.{args.table}"
    try:
        conninfo = args.conninfo or _airflow_conninfo(args.postgres_conn_id)
    except Exception as exc:  # whatever Airflow raises: unknown id, no metadata access, not installed
        print(f"could not read Airflow connection {args.postgres_conn_id!r}: {exc}", file=sys.stderr)
        return 2
    if args.command == "verify":
        return _verify(args, conninfo, chain)
    return _create_writer_role(args, conninfo, chain)


if __name__ == "__main__":
    sys.exit(main())
