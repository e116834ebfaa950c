"""Start an embedded Postgres 16 + pgvector (pgserver) in a temporary directory for a benchmark.

The postmaster and its backends are child processes: their memory and CPU are not the bench's.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pgserver
from psycopg.conninfo import make_conninfo


@contextmanager
def pgserver_conninfo() -> Iterator[str]:
    """A conninfo (Unix socket, user and database ``postgres``) valid until the block ends."""
    with tempfile.TemporaryDirectory() as tmp:
        server = pgserver.get_server(Path(tmp) / "pgdata", cleanup_mode="stop")
        try:
            info = server.get_postmaster_info()
            yield make_conninfo(host=str(info.socket_dir), port=info.port or 5432, user="postgres", dbname="postgres")
        finally:
            server.cleanup()
            # pgserver's atexit hook would log the stop a second time; nothing more to say by then.
            logging.getLogger("pgserver").setLevel(logging.WARNING)
