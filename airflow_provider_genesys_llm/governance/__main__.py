"""`python -m airflow_provider_genesys_llm.governance verify`: check an audit chain from a shell or CI.

Exit status: 0 the chain is intact, 1 it is not (the problem is printed), 2 it could not be
checked (bad arguments, no connection, no such table). ``--conninfo`` needs no Airflow;
``--postgres-conn-id`` reads an Airflow connection and imports Airflow for that alone.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from functools import partial

import psycopg

from .audit import DEFAULT_TABLE, verify_chain

#: Extras of an Airflow Postgres connection that are libpq options too; the rest are Airflow's.
LIBPQ_EXTRAS = ("sslmode", "sslrootcert", "sslcert", "sslkey", "connect_timeout", "options", "application_name")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m airflow_provider_genesys_llm.governance", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    verify = commands.add_parser("verify", help="recompute the audit hash chain and report the first problem")
    source = verify.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--conninfo",
        help='libpq connection string, e.g. "host=/run/postgresql dbname=airflow"; keep passwords in ~/.pgpass',
    )
    source.add_argument("--postgres-conn-id", help="an Airflow connection of type postgres")
    verify.add_argument("--table", default=DEFAULT_TABLE)
    verify.add_argument("--schema", default="public")
    return parser


def _airflow_conninfo(conn_id: str) -> str:
    from airflow.sdk import BaseHook  # only this option needs Airflow

    conn = BaseHook.get_connection(conn_id)
    extras = {key: conn.extra_dejson[key] for key in LIBPQ_EXTRAS if key in conn.extra_dejson}
    return psycopg.conninfo.make_conninfo(
        host=conn.host, port=conn.port, dbname=conn.schema, user=conn.login, password=conn.password, **extras
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    chain = f"{args.schema}.{args.table}"
    try:
        conninfo = args.conninfo or _airflow_conninfo(args.postgres_conn_id)
    except Exception as exc:  # whatever Airflow raises: unknown id, no metadata access, not installed
        print(f"could not read Airflow connection {args.postgres_conn_id!r}: {exc}", file=sys.stderr)
        return 2
    try:
        result = verify_chain(partial(psycopg.connect, conninfo), table=args.table, schema=args.schema)
    except (psycopg.Error, ValueError) as exc:
        print(f"could not verify the audit chain {chain}: {exc}", file=sys.stderr)
        return 2
    if not result.ok:
        print(f"audit chain {chain} is broken: {result.problem}", file=sys.stderr)
        return 1
    print(f"audit chain OK: {result.rows_checked} rows")
    return 0


if __name__ == "__main__":
    sys.exit(main())
