"""Airflow ``postgres`` connections for the Airflow-free stores of ``sinks/`` and ``governance/``.

The one place that reads a Postgres connection from Airflow: the stores take a plain psycopg
``connect`` callable, and every operator, callback, hook and CLI option that starts from a
``postgres_conn_id`` comes through here, so all of them accept the same fields and extras.
"""

from __future__ import annotations

import logging
from functools import partial
from typing import Any

import psycopg
from airflow.sdk import BaseHook, Connection
from psycopg.conninfo import make_conninfo

from ..sinks.pgvector import Location, PgVectorStore

log = logging.getLogger(__name__)


def airflow_conninfo(conn: Connection) -> str:
    """A libpq conninfo string from an Airflow ``postgres`` connection (no URI: a socket directory
    as host does not survive one).

    The connection's ``schema`` field is the database name (Airflow's convention) and ``host`` may
    be a Unix-socket directory. Extras that are libpq options (``sslmode``, ``connect_timeout``,
    ...) are passed on; others (``cursor``, ``iam``, ...) are ignored.
    """
    keywords = {option.keyword.decode() for option in psycopg.pq.Conninfo.get_defaults()}
    extras = conn.extra_dejson
    ignored = sorted(set(extras) - keywords)
    if ignored:
        log.debug("connection %s: ignoring extras that are not libpq options: %s", conn.conn_id, ignored)
    params: dict[str, Any] = {
        "host": conn.host,
        "port": conn.port,
        "user": conn.login,
        "password": conn.password,
        "dbname": conn.schema,
    }
    params.update((key, value) for key, value in extras.items() if key in keywords)
    return make_conninfo(**{key: value for key, value in params.items() if value not in (None, "")})


def conninfo_for(postgres_conn_id: str) -> str:
    """The conninfo of the Airflow connection ``postgres_conn_id`` (a metadata or secrets lookup:
    blocking, so async callers run it in a thread)."""
    return airflow_conninfo(BaseHook.get_connection(postgres_conn_id))


def postgres_connect(postgres_conn_id: str) -> partial[psycopg.Connection[Any]]:
    """A ``connect`` callable for the stores, on the Airflow connection ``postgres_conn_id``."""
    return partial(psycopg.connect, conninfo_for(postgres_conn_id))


def pgvector_store_from_airflow(postgres_conn_id: str, **kwargs: Any) -> PgVectorStore:
    """A ``PgVectorStore`` on an Airflow ``postgres`` connection; ``kwargs`` go to its constructor.

    The store knows its host, port and database without connecting (``asset_uri`` at DAG-parse
    time) when the connection names them.
    """
    conn = BaseHook.get_connection(postgres_conn_id)
    conninfo = airflow_conninfo(conn)
    location = Location(conn.host, conn.port or 5432, conn.schema) if conn.host and conn.schema else None
    return PgVectorStore(partial(psycopg.connect, conninfo), location=location, **kwargs)
