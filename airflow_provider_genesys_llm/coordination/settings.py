"""Settings of fleet-wide coordination, as they will live on the gateway connection.

One validated, immutable object per connection: every worker that reads the same connection
gets the same limits, which is what makes a shared limit meaningful. Coordination is opt-in
(`enabled=False` keeps the per-process limits of `GatewayConfig`), so one-worker users set
nothing up and need no database for it.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

#: Priority classes, most urgent first; anything scheduled (a nightly DAG) should be interactive.
Priority = Literal["interactive", "backfill"]
PRIORITIES: tuple[Priority, ...] = ("interactive", "backfill")


class CoordinationSettings(BaseModel):
    """Fleet-wide limits of one gateway connection, shared by every worker through Postgres."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    #: Off: each process keeps its own `max_concurrency` and `requests_per_minute` (the default).
    enabled: bool = False
    #: Airflow connection id of the Postgres database that holds the shared state.
    postgres_conn_id: str | None = None
    #: Schema of the coordination tables; None uses the connection's search_path.
    table_schema: str | None = Field(None, min_length=1, max_length=63)
    #: Streams the whole fleet may run at once (the gateway's per-organisation stream quota).
    max_concurrency: int = Field(10, ge=1, le=10_000)
    #: Completion requests the whole fleet may start per minute; None: no shared rate limit.
    requests_per_minute: float | None = Field(300.0, gt=0)
    #: Lifetime of a slot lease; a heartbeat renews it every third of it while the stream runs,
    #: so the slots of a killed worker come back within this many seconds.
    lease_seconds: float = Field(5.0, ge=0.5, le=300)
    #: Share of the limit backfill keeps while interactive work waits (0 lets interactive take all).
    min_backfill_share: float = Field(0.2, ge=0.0, le=1.0)
    #: After a 429 the shared limit halves; it grows back by one slot per window without a 429.
    recovery_window_seconds: float = Field(10.0, gt=0, le=3600)
    #: Pause after a 429 that carried no Retry-After.
    default_retry_after_seconds: float = Field(1.0, gt=0, le=600)
    #: Longest sleep between two polls of the shared state when no notification arrives.
    poll_max_seconds: float = Field(0.5, gt=0, le=30)

    @model_validator(mode="after")
    def _database_named(self) -> CoordinationSettings:
        if self.enabled and not self.postgres_conn_id:
            raise ValueError(
                "coordination.enabled is true but coordination.postgres_conn_id is empty: "
                "name the Postgres connection that holds the shared state, or set enabled to false"
            )
        return self


class BudgetSettings(BaseModel):
    """Spend limits in the price table's currency; None means no limit at that level."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    per_task: Decimal | None = Field(None, ge=0)
    per_dag_run: Decimal | None = Field(None, ge=0)
    #: Per UTC day and connection, across every DAG and worker.
    per_day: Decimal | None = Field(None, ge=0)
    #: A reservation of a killed worker stops counting after this long (longer than a completion).
    reservation_seconds: float = Field(900.0, ge=0.5, le=86_400)
