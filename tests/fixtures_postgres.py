"""Real Postgres for tests: one embedded pgserver (Postgres 16 + pgvector) per session, a fresh
schema per test. Registered from ``conftest.py`` with ``pytest_plugins``."""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pgserver
import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo


@dataclass(frozen=True)
class PgServer:
    """The session's server; it listens on a Unix socket in ``socket_dir`` only."""

    socket_dir: str
    port: int
    dbname: str
    user: str

    @property
    def conninfo(self) -> str:
        return make_conninfo(host=self.socket_dir, port=self.port, dbname=self.dbname, user=self.user)


@dataclass(frozen=True)
class PgConnect:
    """Opens a new connection whose ``search_path`` starts with this test's own ``schema``."""

    server: PgServer
    schema: str

    def __call__(self) -> psycopg.Connection[tuple[object, ...]]:
        return psycopg.connect(self.server.conninfo, options=f"-c search_path={self.schema},public")


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    """pgserver started in a directory of its own and stopped (and deleted) at the end of the session.

    Not under pytest's ``tmp_path``: every pytest session on the machine resets that tree to mode
    0700 (which locks out the postgres processes pgserver runs as another user when tests run as
    root) and prunes old session folders (which deleted a running server's data directory under a
    concurrent session).
    """
    parent = Path(tempfile.mkdtemp(prefix="genesys-pg-"))
    server = pgserver.get_server(parent / "pgdata", cleanup_mode="delete")
    info = server.get_postmaster_info()
    try:
        yield PgServer(socket_dir=str(info.socket_dir), port=info.port or 5432, dbname="postgres", user="postgres")
    finally:
        server.cleanup()
        shutil.rmtree(parent, ignore_errors=True)
        # pgserver's atexit hook runs again after pytest closed the captured streams; all it would
        # do is log an INFO line to a closed stream (logging then prints an error).
        logging.getLogger("pgserver").setLevel(logging.WARNING)


@pytest.fixture
def pg_connect(pg_server: PgServer) -> Iterator[PgConnect]:
    """A connection factory for a schema created for this test and dropped after it."""
    schema = f"test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(pg_server.conninfo, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    yield PgConnect(pg_server, schema)
    with psycopg.connect(pg_server.conninfo, autocommit=True) as admin:
        admin.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


def export_airflow_connection(monkeypatch: pytest.MonkeyPatch, conn_id: str, server: PgServer) -> None:
    """Make ``conn_id`` an Airflow ``postgres`` connection to ``server`` (``AIRFLOW_CONN_<ID>``)."""
    connection = {
        "conn_type": "postgres",
        "host": server.socket_dir,
        "port": server.port,
        "login": server.user,
        "schema": server.dbname,
    }
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(connection))
