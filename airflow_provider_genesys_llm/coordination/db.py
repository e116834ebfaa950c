"""The coordination database: one short transaction at a time, bounded, parameterised.

Every coordination object of a process talks to Postgres through a `Database`: one async
connection, used by one transaction at a time (a psycopg connection cannot interleave two),
with statement and lock timeouts so that no query can hang a worker, and errors reduced to
their primary message (psycopg's text can quote a whole row, with whatever PII it holds).
Table names are identifiers composed with `psycopg.sql`, never string formatting.
"""

from __future__ import annotations

import asyncio
import logging
import zlib
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Self

import psycopg
from psycopg import sql

from .errors import CoordinationUnavailableError

log = logging.getLogger(__name__)

#: Bounds of every statement and lock wait, and of connecting (seconds).
STATEMENT_TIMEOUT_SECONDS = 5.0
CONNECT_TIMEOUT_SECONDS = 10
NOTIFY_CHANNEL = "genesys_llm_coordination"

Cursor = psycopg.AsyncCursor[tuple[object, ...]]


def unavailable(exc: psycopg.Error) -> CoordinationUnavailableError:
    """A typed error carrying only the server's primary message (its DETAIL may quote a row)."""
    primary = exc.diag.message_primary if exc.diag is not None else None
    message = primary or type(exc).__name__
    return CoordinationUnavailableError(
        f"coordination database error: {message} (check the Postgres connection named by "
        "coordination.postgres_conn_id); a retry reconnects"
    )


class Database:
    """One connection per process and purpose, reconnected after a failure."""

    def __init__(self, conninfo: str) -> None:
        self._conninfo = conninfo
        self._connection: psycopg.AsyncConnection[tuple[object, ...]] | None = None
        self._lock = asyncio.Lock()

    async def _connected(self) -> psycopg.AsyncConnection[tuple[object, ...]]:
        if self._connection is None or self._connection.closed or self._connection.broken:
            connection = await psycopg.AsyncConnection.connect(
                self._conninfo, autocommit=True, connect_timeout=CONNECT_TIMEOUT_SECONDS
            )
            millis = int(STATEMENT_TIMEOUT_SECONDS * 1000)
            await connection.execute(sql.SQL("SET statement_timeout = {}").format(sql.Literal(millis)))
            await connection.execute(sql.SQL("SET lock_timeout = {}").format(sql.Literal(millis)))
            self._connection = connection
        return self._connection

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Cursor]:
        """A cursor inside one transaction, committed when the block ends without error."""
        async with self._lock:
            try:
                connection = await self._connected()
                async with connection.transaction(), connection.cursor() as cursor:
                    yield cursor
            except psycopg.Error as exc:
                raise unavailable(exc) from None

    async def execute(self, statement: sql.Composed, params: Sequence[object] = ()) -> list[tuple[object, ...]]:
        """Run one statement in a transaction of its own; the rows it returns (none without RETURNING)."""
        async with self.transaction() as cursor:
            await cursor.execute(statement, params)
            return await cursor.fetchall() if cursor.description is not None else []

    async def ensure_tables(self, statements: Sequence[sql.Composed]) -> None:
        """Create tables once, however many processes start at the same moment (an advisory
        lock serialises the creators: concurrent CREATE ... IF NOT EXISTS can still collide)."""
        async with self.transaction() as cursor:
            await cursor.execute("SELECT pg_advisory_xact_lock(%s)", (zlib.crc32(NOTIFY_CHANNEL.encode()),))
            for statement in statements:
                await cursor.execute(statement)

    async def close(self) -> None:
        async with self._lock:
            if self._connection is not None:
                await self._connection.close()
                self._connection = None


class Lifecycle:
    """An async context manager whose `start` (tables, state rows) runs once, on first use."""

    _started = False

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def start(self) -> None:
        """Idempotent and safe in parallel processes (see `Database.ensure_tables`)."""
        if not self._started:
            await self._setup()
            self._started = True

    async def _setup(self) -> None:
        raise NotImplementedError

    async def aclose(self) -> None:
        raise NotImplementedError


class Notifications:
    """LISTEN on the coordination channel; `wait` returns early when a payload of interest arrives.

    Notifications only shorten waits: a missed one costs at most one poll interval, so a broken
    listener is logged and retried, never fatal.
    """

    def __init__(self, conninfo: str, payload: str) -> None:
        self._conninfo = conninfo
        self._payload = payload
        self._event = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._listen(), name="genesys-llm-coordination-listener")

    def poke(self) -> None:
        """Wake the waiter now (a local event, e.g. a new local waiter)."""
        self._event.set()

    async def wait(self, timeout: float) -> None:
        """Sleep up to `timeout` seconds, less when poked or notified."""
        try:
            await asyncio.wait_for(self._event.wait(), timeout)
        except TimeoutError:
            pass
        self._event.clear()

    async def _listen(self) -> None:
        while True:
            try:
                async with await psycopg.AsyncConnection.connect(
                    self._conninfo, autocommit=True, connect_timeout=CONNECT_TIMEOUT_SECONDS
                ) as connection:
                    await connection.execute(sql.SQL("LISTEN {}").format(sql.Identifier(NOTIFY_CHANNEL)))
                    while True:
                        async for notify in connection.notifies(timeout=1.0):
                            if notify.payload == self._payload:
                                self._event.set()
            except psycopg.Error as exc:
                log.warning("coordination listener lost its connection (%s); reconnecting", type(exc).__name__)
                await asyncio.sleep(1.0)

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
