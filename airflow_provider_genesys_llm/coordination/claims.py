"""`ItemClaims`: pay for each item once, however often Airflow or Celery delivers the work.

Before paying for an item, a task claims its result id with a lease. A second delivery of the
same work (a duplicate task, an overlapping run, a retry while the first attempt still runs)
finds the claim and waits for it or skips the item; a claim of a killed worker expires and is
taken over; a finished item is marked done, so later deliveries skip it without asking the
sink. Ownership is a random token per `ItemClaims` object: the same task-instance key in two
processes (a redelivered task) is still two owners.
"""

from __future__ import annotations

import asyncio
import logging
import random
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass

from psycopg import sql

from .db import Database, Lifecycle
from .errors import CoordinationError
from .tables import ITEM_CLAIMS

log = logging.getLogger(__name__)

#: Longest pause between two looks at items another owner holds.
MAX_CLAIM_POLL_SECONDS = 2.0


@dataclass(frozen=True)
class ClaimOutcome:
    """What a claim found, per item id; every id asked for is in exactly one of the first three."""

    granted: tuple[str, ...]  # yours now: pay for these, then `complete` (or `release`) them
    done: tuple[str, ...]  # completed by some owner: skip
    busy: tuple[str, ...]  # held by a live claim of another owner: wait for them or skip them
    taken_over: tuple[str, ...] = ()  # part of `granted`: expired claims of another owner


class ItemClaims(Lifecycle):
    """Claims of one namespace (e.g. a result table) for one owner; one per task attempt."""

    def __init__(
        self,
        conninfo: str,
        namespace: str,
        owner: str,
        *,
        lease_seconds: float = 30.0,
        table_schema: str | None = None,
    ) -> None:
        if lease_seconds < 0.5:
            raise ValueError(f"lease_seconds must be at least 0.5, got {lease_seconds}")
        self.namespace = namespace
        self.owner = owner
        self.token = secrets.token_hex(8)
        self.lease_seconds = lease_seconds
        self._db = Database(conninfo)
        self._table_schema = table_schema
        self._table = ITEM_CLAIMS.identifier(table_schema)
        self._held: set[str] = set()
        #: Ids whose claim expired and went to another owner while held here (the worker stalled).
        self.lost: set[str] = set()
        self._heartbeat: asyncio.Task[None] | None = None

    async def _setup(self) -> None:
        await self._db.ensure_tables(ITEM_CLAIMS.ddl(self._table_schema))

    async def aclose(self) -> None:
        """Stop renewing; claims still held are released so another delivery can take them now."""
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            await asyncio.gather(self._heartbeat, return_exceptions=True)
            self._heartbeat = None
        if self._held:
            try:
                await self.release(list(self._held))
            except CoordinationError:
                log.warning("could not release %d item claims; they expire by themselves", len(self._held))
        await self._db.close()

    @property
    def held(self) -> frozenset[str]:
        return frozenset(self._held)

    async def claim(self, item_ids: Iterable[str], *, wait: float = 0.0) -> ClaimOutcome:
        """Claim `item_ids`; with `wait` > 0, keep trying items other owners hold for up to that many
        seconds (they end done, or expire and come to us). Ids still held elsewhere stay `busy`."""
        await self.start()
        remaining = sorted(set(item_ids))  # a fixed order: two claimers never deadlock on row locks
        deadline = time.monotonic() + wait
        granted: list[str] = []
        done: list[str] = []
        taken: list[str] = []
        while True:
            outcome = await self._claim_once(remaining)
            granted += outcome.granted
            done += outcome.done
            taken += outcome.taken_over
            remaining = list(outcome.busy)
            left = deadline - time.monotonic()
            if not remaining or left <= 0:
                return ClaimOutcome(tuple(granted), tuple(done), tuple(remaining), tuple(taken))
            poll = min(MAX_CLAIM_POLL_SECONDS, self.lease_seconds / 4, left)
            await asyncio.sleep(poll * random.uniform(0.5, 1.0))

    async def _claim_once(self, item_ids: list[str]) -> ClaimOutcome:
        if not item_ids:
            return ClaimOutcome((), (), ())
        async with self._db.transaction() as cursor:
            await cursor.execute(
                sql.SQL(
                    "INSERT INTO {table} AS c (namespace, item_id, owner, token, status, attempts, claimed_at,"
                    " expires_at) SELECT %s, id, %s, %s, 'claimed', 1, clock_timestamp(),"
                    " clock_timestamp() + make_interval(secs => %s) FROM unnest(%s::text[]) AS id ORDER BY id"
                    " ON CONFLICT (namespace, item_id) DO UPDATE SET owner = excluded.owner, token = excluded.token,"
                    " attempts = c.attempts + 1, claimed_at = excluded.claimed_at, expires_at = excluded.expires_at"
                    " WHERE c.status = 'claimed' AND (c.expires_at < clock_timestamp() OR c.token = excluded.token)"
                    " RETURNING item_id, xmax <> 0"
                ).format(table=self._table),
                (self.namespace, self.owner, self.token, self.lease_seconds, item_ids),
            )
            won = {str(item_id): bool(updated) for item_id, updated in await cursor.fetchall()}
            await cursor.execute(
                sql.SQL("SELECT item_id FROM {} WHERE namespace = %s AND item_id = ANY(%s) AND status = 'done'").format(
                    self._table
                ),
                (self.namespace, [item_id for item_id in item_ids if item_id not in won]),
            )
            finished = {str(row[0]) for row in await cursor.fetchall()}
        taken = tuple(item_id for item_id, updated in won.items() if updated and item_id not in self._held)
        self._held.update(won)
        if won:
            self._ensure_heartbeat()
        busy = tuple(item_id for item_id in item_ids if item_id not in won and item_id not in finished)
        return ClaimOutcome(tuple(won), tuple(sorted(finished)), busy, taken)

    async def complete(self, item_ids: Iterable[str]) -> tuple[str, ...]:
        """Mark items done (call after their results are stored); returns the ids whose claim had
        already gone to another owner, which may have paid for them as well."""
        return await self._finish(item_ids, "UPDATE {} SET status = 'done'")

    async def release(self, item_ids: Iterable[str]) -> tuple[str, ...]:
        """Give claims back unfinished (the item failed or was deferred): another delivery may take them now."""
        return await self._finish(item_ids, "DELETE FROM {}")

    async def _finish(self, item_ids: Iterable[str], statement: str) -> tuple[str, ...]:
        ids = sorted(set(item_ids))
        if not ids:
            return ()
        rows = await self._db.execute(
            sql.SQL(
                statement + " WHERE namespace = %s AND item_id = ANY(%s) AND token = %s"
                " AND status = 'claimed' RETURNING item_id"
            ).format(self._table),
            (self.namespace, ids, self.token),
        )
        mine = {str(row[0]) for row in rows}
        self._held.difference_update(ids)
        lost = tuple(item_id for item_id in ids if item_id not in mine)
        self.lost.update(lost)
        return lost

    def _ensure_heartbeat(self) -> None:
        if self._heartbeat is None or self._heartbeat.done():
            self._heartbeat = asyncio.create_task(self._renew_while_held(), name="genesys-llm-claims-heartbeat")

    async def _renew_while_held(self) -> None:
        interval = self.lease_seconds / 3
        while self._held:
            await asyncio.sleep(interval)
            before = set(self._held)  # ids claimed while this runs are not judged by it
            try:
                rows = await self._db.execute(
                    sql.SQL(
                        "UPDATE {} SET expires_at = clock_timestamp() + make_interval(secs => %s)"
                        " WHERE namespace = %s AND token = %s AND status = 'claimed' RETURNING item_id"
                    ).format(self._table),
                    (self.lease_seconds, self.namespace, self.token),
                )
                alive = {str(row[0]) for row in rows}
            except CoordinationError as exc:
                log.warning("item claim heartbeat failed (%s); retrying in %.1fs", exc, interval)
                continue
            gone = (before & self._held) - alive
            self.lost.update(gone)
            self._held.difference_update(gone)
