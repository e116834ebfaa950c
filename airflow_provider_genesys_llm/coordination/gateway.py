"""`GatewayCoordinator`: one gateway quota shared by every worker of a fleet, kept in Postgres.

Per connection id, the fleet shares a concurrency limit made of expiring leases, a request-rate
token bucket and an adaptive limit (halved on a 429, paused until its Retry-After, +1 per quiet
window). Each process runs one granting loop for all its waiting tasks: a short transaction locks
the connection's state row, drops expired leases, counts what runs and what waits fleet-wide,
and grants what the policy allows. Releases NOTIFY the other workers, who otherwise poll with
jittered, bounded sleeps; a heartbeat renews this process's leases, so the slots of a killed
worker come back within `lease_seconds`.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Any, cast

from psycopg import sql

from .db import NOTIFY_CHANNEL, Cursor, Database, Lifecycle, Notifications
from .errors import CoordinationError, CoordinationUnavailableError, SlotTimeoutError
from .policy import Aimd, Bucket, grant
from .settings import PRIORITIES, CoordinationSettings, Priority
from .slots import GateSnapshot, Slot, process_owner
from .tables import GateTables

log = logging.getLogger(__name__)

#: Default bound of a wait for a slot (seconds); callers pass their own.
DEFAULT_SLOT_TIMEOUT = 600.0
_GRANT_FAILURES_TOLERATED = 3
#: HTTP statuses that shrink the shared limit; any status with a Retry-After pauses everyone.
_OVERLOAD_STATUSES = frozenset({429})


class GatewayCoordinator(Lifecycle):
    """The fleet-wide gate of one gateway connection. One per process and event loop."""

    def __init__(
        self, conninfo: str, conn_id: str, settings: CoordinationSettings, *, owner: str | None = None
    ) -> None:
        self.conn_id = conn_id
        self.settings = settings
        self.owner = owner or process_owner()
        self._db = Database(conninfo)
        self._notifications = Notifications(conninfo, conn_id)
        self._aimd = Aimd(settings.max_concurrency, settings.recovery_window_seconds)
        self._bucket = Bucket(settings.requests_per_minute) if settings.requests_per_minute else None
        self._queues: dict[Priority, deque[asyncio.Future[Slot]]] = {p: deque() for p in PRIORITIES}
        self._held: dict[uuid.UUID, Slot] = {}
        self._granter: asyncio.Task[None] | None = None
        self._heartbeat: asyncio.Task[None] | None = None
        self._background: set[asyncio.Task[None]] = set()
        self._t = GateTables.in_schema(settings.table_schema)

    # --- lifecycle ------------------------------------------------------------------------

    async def _setup(self) -> None:
        """Create the tables and this connection's state row."""
        await self._db.ensure_tables(self._t.ddl())
        await self._db.execute(
            sql.SQL(
                "INSERT INTO {} (conn_id, limit_now, last_change, paused_until, tokens, tokens_at)"
                " VALUES (%s, %s, clock_timestamp(), 'epoch', %s, clock_timestamp())"
                " ON CONFLICT (conn_id) DO NOTHING"
            ).format(self._t.state),
            (self.conn_id, float(self.settings.max_concurrency), self._bucket.capacity if self._bucket else 0.0),
        )
        self._notifications.start()
        self._heartbeat = asyncio.create_task(self._renew_forever(), name="genesys-llm-gate-heartbeat")

    async def aclose(self) -> None:
        """Stop the background tasks and give back every lease this process still holds."""
        for task in (self._granter, self._heartbeat):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        self._granter = self._heartbeat = None
        for queue in self._queues.values():
            while queue:
                queue.popleft().cancel()
        if self._held:
            try:
                async with self._db.transaction() as cursor:
                    await cursor.execute(
                        sql.SQL("DELETE FROM {} WHERE owner = %s").format(self._t.leases), (self.owner,)
                    )
                    await self._notify(cursor)
            except CoordinationUnavailableError:
                log.warning("could not give back %d leases on close; they expire by themselves", len(self._held))
            self._held.clear()
        await asyncio.gather(*self._background, return_exceptions=True)
        await self._notifications.close()
        await self._db.close()
        self._started = False

    # --- the gate -------------------------------------------------------------------------

    @asynccontextmanager
    async def slot(self, priority: Priority = "backfill", timeout: float = DEFAULT_SLOT_TIMEOUT) -> AsyncIterator[Slot]:
        """Wait (at most `timeout` seconds) for a place in the fleet's limit and hold it for the block.

        Raises `SlotTimeoutError` when none came free in time, `CoordinationUnavailableError` when
        the database failed repeatedly.
        """
        if priority not in PRIORITIES:
            raise ValueError(f"priority {priority!r} is not one of {PRIORITIES}")
        await self.start()
        slot = await self._wait_for_slot(priority, timeout)
        try:
            yield slot
        finally:
            await self._release(slot)

    async def _wait_for_slot(self, priority: Priority, timeout: float) -> Slot:
        future: asyncio.Future[Slot] = asyncio.get_running_loop().create_future()
        self._queues[priority].append(future)
        if self._granter is None or self._granter.done():
            self._granter = asyncio.create_task(self._grant_while_waiting(), name="genesys-llm-gate-granter")
        else:
            self._notifications.poke()
        started = time.monotonic()
        try:
            async with asyncio.timeout(timeout):
                slot = await future
                slot.waited_seconds = time.monotonic() - started
                return slot
        except BaseException as exc:  # timeout or cancellation: leave the queue, give back a late grant
            if future in self._queues[priority]:
                self._queues[priority].remove(future)
            if future.done() and not future.cancelled() and future.exception() is None:
                self._in_background(self._release(future.result()))
            future.cancel()
            if isinstance(exc, TimeoutError):
                raise SlotTimeoutError(
                    f"no {priority} slot of connection {self.conn_id!r} came free within {timeout:g}s "
                    f"(fleet limit {self.settings.max_concurrency}); a retry waits again: raise the timeout, "
                    "the connection's coordination.max_concurrency, or lower the number of workers"
                ) from None
            raise

    def _in_background(self, coroutine: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coroutine)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _grant_while_waiting(self) -> None:
        failures = 0
        while any(self._queues.values()):
            mine = {p: len(queue) for p, queue in self._queues.items()}
            try:
                granted, wait = await self._grant(mine)
                failures = 0
            except CoordinationError as exc:
                failures += 1
                if failures >= _GRANT_FAILURES_TOLERATED:
                    self._fail_waiters(exc)
                    return
                granted, wait = {}, 0.1 * 2**failures
            for priority, lease_ids in granted.items():
                for lease_id in lease_ids:
                    await self._hand_over(priority, lease_id)
            if any(self._queues.values()):
                await self._notifications.wait(wait * random.uniform(0.6, 1.0))

    async def _hand_over(self, priority: Priority, lease_id: uuid.UUID) -> None:
        queue = self._queues[priority]
        while queue:
            future = queue.popleft()
            if not future.done():
                slot = Slot(lease_id, priority, waited_seconds=0.0)
                self._held[lease_id] = slot
                future.set_result(slot)
                return
        await self._release(Slot(lease_id, priority, waited_seconds=0.0))  # its waiter gave up meanwhile

    def _fail_waiters(self, exc: CoordinationError) -> None:
        for queue in self._queues.values():
            while queue:
                future = queue.popleft()
                if not future.done():
                    future.set_exception(exc)

    async def _grant(self, mine: dict[Priority, int]) -> tuple[dict[Priority, list[uuid.UUID]], float]:
        """One transaction: grant what the policy allows to this process's waiters, register the
        rest as waiting (so other workers see interactive demand); return the leases and how long
        to sleep before asking again."""
        settings, t = self.settings, self._t
        async with self._db.transaction() as cursor:
            limit_now, since_change, paused, tokens, since_tokens = await self._read_state(cursor, lock=True)
            limit_now, used = self._aimd.recovered(min(limit_now, float(settings.max_concurrency)), since_change)
            if self._bucket is not None:
                tokens = self._bucket.refilled(tokens, since_tokens)
            await self._drop_expired(cursor)
            await cursor.execute(
                sql.SQL("DELETE FROM {} WHERE conn_id = %s AND owner = %s").format(t.waiters),
                (self.conn_id, self.owner),
            )
            in_flight, waiting = await self._counts(cursor)
            allowed = 0 if paused > 0 else (int(tokens) if self._bucket is not None else sum(mine.values()))
            counts = grant(
                self._aimd.effective(limit_now),
                settings.min_backfill_share,
                in_flight,
                {p: waiting.get(p, 0) + mine[p] for p in PRIORITIES},
                mine,
                allowed,
            )
            granted = {p: [uuid.uuid4() for _ in range(n)] for p, n in counts.items() if n}
            leases = [(lease_id, p) for p, ids in granted.items() for lease_id in ids]
            if leases:
                await cursor.executemany(
                    sql.SQL(
                        "INSERT INTO {} (lease_id, conn_id, owner, priority, acquired_at, expires_at)"
                        " VALUES (%s, %s, %s, %s, clock_timestamp(), clock_timestamp() + make_interval(secs => %s))"
                    ).format(t.leases),
                    [(lease_id, self.conn_id, self.owner, p, settings.lease_seconds) for lease_id, p in leases],
                )
            still = [(p, mine[p] - counts[p]) for p in PRIORITIES if mine[p] > counts[p]]
            if still:
                await cursor.executemany(
                    sql.SQL(
                        "INSERT INTO {} (conn_id, owner, priority, waiting, expires_at)"
                        " VALUES (%s, %s, %s, %s, clock_timestamp() + make_interval(secs => %s))"
                    ).format(t.waiters),
                    [(self.conn_id, self.owner, p, n, settings.lease_seconds) for p, n in still],
                )
            await cursor.execute(
                sql.SQL(
                    "UPDATE {} SET limit_now = %s, last_change = last_change + make_interval(secs => %s),"
                    " tokens = %s, tokens_at = clock_timestamp() WHERE conn_id = %s"
                ).format(t.state),
                (limit_now, used, tokens - len(leases), self.conn_id),
            )
        return granted, self._next_wait(paused, tokens - len(leases))

    def _next_wait(self, paused: float, tokens: float) -> float:
        if paused > 0:
            return paused
        if self._bucket is not None and tokens < 1:
            return min(self._bucket.wait_for_one(tokens), self.settings.poll_max_seconds)
        return self.settings.poll_max_seconds  # a release NOTIFYs sooner

    async def _counts(self, cursor: Cursor) -> tuple[dict[Priority, int], dict[Priority, int]]:
        counts: list[dict[Priority, int]] = []
        for name, expression in ((self._t.leases, "count(*)"), (self._t.waiters, "sum(waiting)")):
            await cursor.execute(
                sql.SQL("SELECT priority, {} FROM {} WHERE conn_id = %s GROUP BY priority").format(
                    sql.SQL(expression), name
                ),
                (self.conn_id,),
            )
            rows = await cursor.fetchall()  # count(*) is an int, sum(...) a Decimal
            counts.append({cast(Priority, priority): int(cast("int | Decimal", n)) for priority, n in rows})
        return counts[0], counts[1]

    async def _release(self, slot: Slot) -> None:
        """Give the lease back (and apply a reported 429); never raises: an unreleased lease expires."""
        self._held.pop(slot.lease_id, None)
        try:
            async with self._db.transaction() as cursor:
                if slot.status in _OVERLOAD_STATUSES or slot.retry_after is not None:
                    await self._back_off(cursor, slot)
                await cursor.execute(
                    sql.SQL("DELETE FROM {} WHERE lease_id = %s").format(self._t.leases), (slot.lease_id,)
                )
                await self._notify(cursor)
        except CoordinationError as exc:
            log.warning(
                "could not release a gateway slot (%s); it expires within %ss", exc, self.settings.lease_seconds
            )
        self._notifications.poke()

    async def _back_off(self, cursor: Cursor, slot: Slot) -> None:
        pause = slot.retry_after if slot.retry_after is not None else self.settings.default_retry_after_seconds
        await cursor.execute(
            sql.SQL("SELECT limit_now, paused_until > clock_timestamp() FROM {} WHERE conn_id = %s FOR UPDATE").format(
                self._t.state
            ),
            (self.conn_id,),
        )
        row = await cursor.fetchone()
        if row is None:
            return
        limit_now, paused = float(row[0]), bool(row[1])  # type: ignore[arg-type]
        shrink = slot.status in _OVERLOAD_STATUSES and not paused
        await cursor.execute(
            sql.SQL(
                "UPDATE {} SET limit_now = %s, last_change = CASE WHEN %s THEN clock_timestamp() ELSE last_change END,"
                " paused_until = greatest(paused_until, clock_timestamp() + make_interval(secs => %s))"
                " WHERE conn_id = %s"
            ).format(self._t.state),
            (self._aimd.decreased(limit_now, not shrink), shrink, pause, self.conn_id),
        )
        log.warning(
            "gateway answered %s on connection %r: fleet limit %s, everyone paused %.1fs",
            slot.status,
            self.conn_id,
            "halved" if shrink else "unchanged (same overload)",
            pause,
        )

    async def _notify(self, cursor: Cursor) -> None:
        await cursor.execute("SELECT pg_notify(%s, %s)", (NOTIFY_CHANNEL, self.conn_id))

    async def _renew_forever(self) -> None:
        """Renew this process's leases and waiter rows every third of the lease lifetime."""
        interval = self.settings.lease_seconds / 3
        while True:
            await asyncio.sleep(interval)
            try:
                async with self._db.transaction() as cursor:
                    await cursor.execute(
                        sql.SQL(
                            "UPDATE {} SET expires_at = clock_timestamp() + make_interval(secs => %s)"
                            " WHERE owner = %s RETURNING lease_id"
                        ).format(self._t.leases),
                        (self.settings.lease_seconds, self.owner),
                    )
                    alive = {row[0] for row in await cursor.fetchall()}
                    await cursor.execute(
                        sql.SQL(
                            "UPDATE {} SET expires_at = clock_timestamp() + make_interval(secs => %s) WHERE owner = %s"
                        ).format(self._t.waiters),
                        (self.settings.lease_seconds, self.owner),
                    )
            except CoordinationError as exc:
                log.warning("gateway lease heartbeat failed (%s); retrying in %.1fs", exc, interval)
                continue
            for lease_id, slot in list(self._held.items()):
                if lease_id not in alive:
                    slot.lost = True

    # --- observation ----------------------------------------------------------------------

    async def snapshot(self) -> GateSnapshot:
        """The fleet's current limit, streams in flight and waiters (expired entries excluded)."""
        await self.start()
        async with self._db.transaction() as cursor:
            limit_now, since_change, paused, _, _ = await self._read_state(cursor, lock=False)
            await self._drop_expired(cursor)
            in_flight, waiting = await self._counts(cursor)
        limit, _ = self._aimd.recovered(min(limit_now, float(self.settings.max_concurrency)), since_change)
        return GateSnapshot(self._aimd.effective(limit), in_flight, waiting, max(0.0, paused))

    async def _read_state(self, cursor: Cursor, *, lock: bool) -> tuple[float, float, float, float, float]:
        """(limit, seconds since its last change, seconds of pause left, bucket tokens, seconds since
        the bucket was refilled), on the database clock; `lock` holds the row until the commit."""
        await cursor.execute(
            sql.SQL(
                "SELECT limit_now, extract(epoch FROM clock_timestamp() - last_change),"
                " extract(epoch FROM paused_until - clock_timestamp()), tokens,"
                " extract(epoch FROM clock_timestamp() - tokens_at) FROM {} WHERE conn_id = %s {}"
            ).format(self._t.state, sql.SQL("FOR UPDATE" if lock else "")),
            (self.conn_id,),
        )
        row = await cursor.fetchone()
        if row is None:
            raise CoordinationUnavailableError(f"state row of connection {self.conn_id!r} vanished; restart")
        limit, since_change, paused, tokens, since_tokens = (float(value) for value in row)  # type: ignore[arg-type]
        return limit, since_change, paused, tokens, since_tokens

    async def _drop_expired(self, cursor: Cursor) -> None:
        """Leases and waiter rows of dead workers stop counting here."""
        for name in (self._t.leases, self._t.waiters):
            await cursor.execute(
                sql.SQL("DELETE FROM {} WHERE conn_id = %s AND expires_at < clock_timestamp()").format(name),
                (self.conn_id,),
            )
