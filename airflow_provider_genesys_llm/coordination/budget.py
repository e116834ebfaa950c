"""`BudgetLedger`: spend limits per task, per DAG run and per day, enforced across workers.

Before each request a worker reserves the request's worst-case cost; the reservation succeeds
only if, under one advisory lock per connection, everything already settled plus every live
reservation plus this one stays within every configured budget. After the answer the worker
settles the real cost (the difference is free again) or releases the reservation when nothing
was paid. A killed worker's reservation stops counting after `reservation_seconds`. When a
budget is exhausted `reserve` answers with a `BudgetDenied` and the caller leaves the item
unsent, counted as `deferred_by_budget`.
"""

from __future__ import annotations

import uuid
import zlib
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from typing import Literal

from psycopg import sql

from .db import Cursor, Database, Lifecycle
from .settings import BudgetSettings
from .tables import SPEND

BudgetLevel = Literal["per_task", "per_dag_run", "per_day"]
_TODAY_UTC = "coalesce(%s::date, (clock_timestamp() AT TIME ZONE 'UTC')::date)"
#: Settled and expired rows older than this are kept (spend history); only dead reservations go.
_FORGET_DEAD_RESERVATIONS = "1 day"


@dataclass(frozen=True)
class SpendScope:
    """Who spends: the connection, and optionally the DAG run and the task within it.

    `task` should name the task instance without its try number (dag_id/task_id/map_index), so a
    retry shares its task's budget instead of getting a fresh one.
    """

    conn_id: str
    dag_run: str | None = None
    task: str | None = None


@dataclass(frozen=True)
class Reservation:
    reservation_id: uuid.UUID
    scope: SpendScope
    amount: Decimal
    day: date


@dataclass(frozen=True)
class BudgetDenied:
    """The first budget the request would break; the item is deferred, not sent."""

    level: BudgetLevel
    limit: Decimal
    committed: Decimal  # settled plus live reservations at that level
    asked: Decimal
    currency: str

    @property
    def message(self) -> str:
        return (
            f"budget {self.level} of {self.limit} {self.currency} would be exceeded: {self.committed} committed, "
            f"{self.asked} asked; the item is deferred (raise the budget, or run it on a later day)"
        )


class BudgetLedger(Lifecycle):
    """Reservations and settled spend in Postgres, for every worker of the fleet."""

    def __init__(
        self, conninfo: str, settings: BudgetSettings, *, currency: str = "USD", table_schema: str | None = None
    ) -> None:
        self.settings = settings
        self.currency = currency
        self._db = Database(conninfo)
        self._table_schema = table_schema
        self._table = SPEND.identifier(table_schema)

    async def _setup(self) -> None:
        await self._db.ensure_tables(SPEND.ddl(self._table_schema))

    async def aclose(self) -> None:
        await self._db.close()

    async def reserve(
        self, scope: SpendScope, amount: Decimal, *, day: date | None = None
    ) -> Reservation | BudgetDenied:
        """Reserve `amount` (the request's worst case) in every budget, or say which one is exhausted.

        `day` defaults to the database's current UTC date (one clock for the whole fleet)."""
        if amount < 0:
            raise ValueError(f"amount must be at least 0, got {amount}")
        await self.start()
        async with self._db.transaction() as cursor:
            await cursor.execute(
                "SELECT pg_advisory_xact_lock(%s)", (zlib.crc32(f"{SPEND.name}:{scope.conn_id}".encode()),)
            )
            await cursor.execute(sql.SQL("SELECT " + _TODAY_UTC), (day,))
            row = await cursor.fetchone()
            assert row is not None
            today: date = row[0]  # type: ignore[assignment]
            await cursor.execute(
                sql.SQL(
                    "DELETE FROM {} WHERE conn_id = %s AND state = 'reserved'"
                    " AND expires_at < clock_timestamp() - interval {}"
                ).format(self._table, sql.Literal(_FORGET_DEAD_RESERVATIONS)),
                (scope.conn_id,),
            )
            for level, limit in self._limits(scope):
                committed = await self._committed(cursor, level, scope, today)
                if committed + amount > limit:
                    return BudgetDenied(level, limit, committed, amount, self.currency)
            reservation = Reservation(uuid.uuid4(), scope, amount, today)
            await cursor.execute(
                sql.SQL(
                    "INSERT INTO {} (reservation_id, conn_id, day, dag_run, task, state, amount, created_at,"
                    " expires_at) VALUES (%s, %s, %s, %s, %s, 'reserved', %s, clock_timestamp(),"
                    " clock_timestamp() + make_interval(secs => %s))"
                ).format(self._table),
                (
                    reservation.reservation_id,
                    scope.conn_id,
                    today,
                    scope.dag_run,
                    scope.task,
                    amount,
                    self.settings.reservation_seconds,
                ),
            )
        return reservation

    async def settle(self, reservation: Reservation, actual: Decimal) -> None:
        """Record the real cost (also after the reservation expired: it was spent all the same)."""
        await self._db.execute(
            sql.SQL(
                "INSERT INTO {} (reservation_id, conn_id, day, dag_run, task, state, amount, created_at)"
                " VALUES (%s, %s, %s, %s, %s, 'settled', %s, clock_timestamp()) ON CONFLICT (reservation_id)"
                " DO UPDATE SET state = 'settled', amount = excluded.amount, expires_at = NULL"
            ).format(self._table),
            (
                reservation.reservation_id,
                reservation.scope.conn_id,
                reservation.day,
                reservation.scope.dag_run,
                reservation.scope.task,
                actual,
            ),
        )

    async def release(self, reservation: Reservation) -> None:
        """Drop a reservation whose request cost nothing (never sent, refused before generation)."""
        await self._db.execute(
            sql.SQL("DELETE FROM {} WHERE reservation_id = %s AND state = 'reserved'").format(self._table),
            (reservation.reservation_id,),
        )

    async def committed(self, scope: SpendScope, *, day: date | None = None) -> dict[BudgetLevel, Decimal]:
        """Settled spend plus live reservations at each level the scope names."""
        await self.start()
        async with self._db.transaction() as cursor:
            await cursor.execute(sql.SQL("SELECT " + _TODAY_UTC), (day,))
            row = await cursor.fetchone()
            assert row is not None
            levels: list[BudgetLevel] = ["per_day"]
            levels += ["per_dag_run"] if scope.dag_run is not None else []
            levels += ["per_task"] if scope.dag_run is not None and scope.task is not None else []
            today: date = row[0]  # type: ignore[assignment]
            return {level: await self._committed(cursor, level, scope, today) for level in levels}

    def _limits(self, scope: SpendScope) -> list[tuple[BudgetLevel, Decimal]]:
        limits: list[tuple[BudgetLevel, Decimal | None]] = [("per_day", self.settings.per_day)]
        if scope.dag_run is not None:
            limits.append(("per_dag_run", self.settings.per_dag_run))
            if scope.task is not None:
                limits.append(("per_task", self.settings.per_task))
        return [(level, limit) for level, limit in limits if limit is not None]

    async def _committed(self, cursor: Cursor, level: BudgetLevel, scope: SpendScope, today: date) -> Decimal:
        where = {
            "per_day": ("day = %s", (today,)),
            "per_dag_run": ("dag_run = %s", (scope.dag_run,)),
            "per_task": ("dag_run = %s AND task = %s", (scope.dag_run, scope.task)),
        }[level]
        await cursor.execute(
            sql.SQL(
                "SELECT coalesce(sum(amount), 0) FROM {} WHERE conn_id = %s AND "
                + where[0]
                + " AND (state = 'settled' OR expires_at > clock_timestamp())"
            ).format(self._table),
            (scope.conn_id, *where[1]),
        )
        row = await cursor.fetchone()
        return Decimal(row[0]) if row is not None else Decimal(0)  # type: ignore[arg-type]
