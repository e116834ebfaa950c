"""`python -m airflow_provider_genesys_llm.erasure`: erasure requests from a shell, no Airflow needed.

    erase  delete everything derived from the ids (see ``sinks/erasure.py``), tombstone and audit it
    check  whether each id is tombstoned (exit 0: all are, 1: some are not)

Ids come from ``--ids-file`` (one per line; ``-`` reads stdin) or the command line (where they
end up in shell history: prefer the file). The id key, the deployment's HMAC key that is the
Airflow Variable ``genesys_llm_id_key``, is read from the environment variable named by
``--id-key-env``. Exit status 2: nothing was done (bad arguments, no database, no key).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from functools import partial
from pathlib import Path

import psycopg

from .governance.chain import DEFAULT_TABLE as DEFAULT_AUDIT_TABLE
from .governance.keys import IdKey, IdKeyError
from .governance.masking import PiiMasker
from .governance.store_errors import postgres_reason
from .sinks.erasure import (
    DEFAULT_TOMBSTONES_TABLE,
    DEFAULT_TRANSCRIPTS_TABLE,
    ErasureError,
    ErasureTargets,
    TombstoneList,
    checked_ids,
    erase,
)

DEFAULT_KEY_ENV = "AIRFLOW_VAR_GENESYS_LLM_ID_KEY"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m airflow_provider_genesys_llm.erasure",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    for name, text in (("erase", "erase conversations or source ids"), ("check", "are these ids tombstoned?")):
        command = commands.add_parser(name, help=text)
        source = command.add_mutually_exclusive_group(required=True)
        source.add_argument("--conninfo", help='libpq connection string, e.g. "host=/run/postgresql dbname=genesys"')
        source.add_argument("--postgres-conn-id", help="an Airflow connection of type postgres (imports Airflow)")
        command.add_argument("--id-key-env", default=DEFAULT_KEY_ENV, help="environment variable holding the id key")
        command.add_argument("--ids-file", type=Path, help="one id per line; - for stdin")
        command.add_argument("ids", nargs="*", help="conversation ids or source ids")
        command.add_argument("--schema", default="public")
        command.add_argument("--tombstones-table", default=DEFAULT_TOMBSTONES_TABLE)
    erase_command = commands.choices["erase"]
    erase_command.add_argument("--transcripts-table", default=DEFAULT_TRANSCRIPTS_TABLE)
    erase_command.add_argument(
        "--results-table",
        action="append",
        dest="results_tables",
        help="a results table (repeat for more); default: every results table in the schema",
    )
    erase_command.add_argument("--audit-table", default=DEFAULT_AUDIT_TABLE)
    erase_command.add_argument("--no-vacuum", action="store_true", help="leave VACUUM to autovacuum")
    return parser


def _ids(args: argparse.Namespace) -> list[str]:
    lines: list[str] = list(args.ids)
    if args.ids_file is not None:
        text = sys.stdin.read() if str(args.ids_file) == "-" else args.ids_file.read_text(encoding="utf-8")
        lines += [line.strip() for line in text.splitlines() if line.strip()]
    return checked_ids(lines)


def _conninfo(args: argparse.Namespace) -> str:
    if args.conninfo:
        return str(args.conninfo)
    from .hooks.postgres import conninfo_for  # only --postgres-conn-id needs Airflow: imported for it alone

    return conninfo_for(args.postgres_conn_id)


def _key(variable: str) -> IdKey:
    value = os.environ.get(variable)
    if not value:
        raise IdKeyError(
            f"environment variable {variable} (the deployment's id key) is not set; export it or name "
            "another with --id-key-env"
        )
    return IdKey(value)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        ids = _ids(args)
        key = _key(args.id_key_env)
        connect = partial(psycopg.connect, _conninfo(args))
        if args.command == "check":
            tombstones = TombstoneList.load(connect, key, table=args.tombstones_table, schema=args.schema)
            erased = sum(tombstones.is_erased(erased_id) for erased_id in ids)
            print(json.dumps({"ids": len(ids), "erased": erased, "not_erased": len(ids) - erased}))
            return 0 if erased == len(ids) else 1
        targets = ErasureTargets(
            schema=args.schema,
            transcripts_table=args.transcripts_table or None,
            results_tables=args.results_tables,
            tombstones_table=args.tombstones_table,
            audit_table=args.audit_table,
        )
        report = erase(
            connect,
            ids,
            key,
            targets=targets,
            masker=PiiMasker(),
            audit_fields={"owner": "cli"},
            vacuum=not args.no_vacuum,
        )
    except (ValueError, OSError, ErasureError, psycopg.Error) as exc:  # IdKeyError is a ValueError
        # A server error's DETAIL can quote a row: its primary message only.
        reason = postgres_reason(exc) if isinstance(exc, psycopg.Error) else exc
        print(f"{args.command} failed, nothing was changed: {type(exc).__name__}: {reason}", file=sys.stderr)
        return 2
    print(json.dumps(report.summary()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
