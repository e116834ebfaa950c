"""What one batch shares with the rest of the fleet: item claims and spend.

``FleetControls`` bundles the optional coordination objects a ``BatchRunner`` uses: ``ItemClaims``
(pay for each item once, however often the work is delivered) and a ``BudgetLedger`` with its
``PriceTable`` (reserve the worst case before a request, settle the real cost after). Without
them a batch behaves as it always did; with ``prices`` alone it still reports its cost.
Airflow-free; psycopg is needed only by the claims and the ledger themselves.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import TYPE_CHECKING

from ..client import CompletionRequest, CompletionResult
from ..client.errors import (
    GatewayAuthError,
    GatewayBadRequestError,
    GatewayCircuitOpenError,
    GatewayPermissionError,
    RequestValidationError,
)
from ..client.limits import estimate_tokens, prompt_parts
from ..coordination.errors import CoordinationError
from ..coordination.spend import PriceTable

if TYPE_CHECKING:
    from ..coordination.budget import BudgetLedger, Reservation, SpendScope
    from ..coordination.claims import ClaimOutcome, ItemClaims

log = logging.getLogger(__name__)

#: Errors raised before the gateway could generate anything: their reservation is released, not spent.
NOTHING_GENERATED: tuple[type[BaseException], ...] = (
    RequestValidationError,
    GatewayBadRequestError,
    GatewayAuthError,
    GatewayPermissionError,
    GatewayCircuitOpenError,
)


class BudgetDeferred(Exception):
    """A budget is exhausted: the item is left unsent (and unclaimed) for a later run."""


@dataclass
class FleetControls:
    """Claims and spend of one batch; the runner closes the claims and the ledger when it ends.

    ``claim_wait_seconds``: how long, after every other item, the batch waits for items another
    live delivery holds (they end stored, or their claim expires and comes to this batch).
    """

    claims: ItemClaims | None = None
    ledger: BudgetLedger | None = None
    prices: PriceTable | None = None
    scope: SpendScope | None = None
    claim_wait_seconds: float = 60.0
    #: Ids this batch claimed and has not completed or released yet.
    _mine: set[str] = field(default_factory=set, init=False, repr=False)
    _denied: str | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        if self.ledger is not None and (self.prices is None or self.scope is None):
            raise ValueError("a budget ledger needs prices (the connection's price_table) and a spend scope")
        if self.claim_wait_seconds < 0:
            raise ValueError(f"claim_wait_seconds must be at least 0, got {self.claim_wait_seconds}")

    @property
    def currency(self) -> str | None:
        return self.prices.currency if self.prices is not None else None

    # --- claims -------------------------------------------------------------------------

    async def claim(self, ids: Iterable[str], *, wait: float = 0.0) -> ClaimOutcome | None:
        """Claim ``ids`` (None without claims: every item is this batch's)."""
        if self.claims is None:
            return None
        outcome = await self.claims.claim(ids, wait=wait)
        self._mine.update(outcome.granted)
        return outcome

    async def finish_claims(self, stored: Iterable[str], unfinished: Iterable[str]) -> tuple[str, ...]:
        """Mark stored items done and give unfinished ones (failed, deferred) back; returns the ids
        whose claim had gone to another delivery meanwhile (it may have paid for them too)."""
        if self.claims is None:
            return ()
        done = [item for item in stored if item in self._mine]
        back = [item for item in unfinished if item in self._mine]
        self._mine.difference_update(done + back)
        lost = await self.claims.complete(done)
        await self.claims.release(back)
        if lost:
            log.warning(
                "%d item claims expired while their items were paid for (the worker stalled past the "
                "claim lease): another delivery may have paid for them as well; one row is kept",
                len(lost),
            )
        return lost

    # --- spend --------------------------------------------------------------------------

    async def complete(
        self, request: CompletionRequest, send: Callable[[CompletionRequest], Awaitable[CompletionResult]]
    ) -> tuple[CompletionResult, Decimal | None]:
        """``send(request)`` within the budgets: reserve its worst case, send, settle the real cost.

        Returns the result and its cost (None without prices); raises ``BudgetDeferred`` when a
        budget is exhausted (after the first refusal every later item is deferred without asking).
        """
        reservation = await self._reserve(request)
        try:
            result = await send(request)
        except BaseException as exc:
            if reservation is not None:
                await asyncio.shield(self._abandon(reservation, request, exc))
            raise
        cost = self.cost_of(result)
        if reservation is not None and cost is not None:
            await self._settle(reservation, cost)
        return result, cost

    def cost_of(self, result: CompletionResult) -> Decimal | None:
        if self.prices is None:
            return None
        return self.prices.cost(result.model, result.usage.prompt_tokens, result.usage.completion_tokens)

    async def _reserve(self, request: CompletionRequest) -> Reservation | None:
        if self.ledger is None:
            return None
        if self._denied is not None:
            raise BudgetDeferred(self._denied)
        from ..coordination.budget import BudgetDenied

        assert self.prices is not None and self.scope is not None  # checked in __post_init__
        worst = self.prices.worst_case(request.model, estimate_tokens(prompt_parts(request)), request.max_tokens)
        answer = await self.ledger.reserve(self.scope, worst)
        if isinstance(answer, BudgetDenied):
            if self._denied is None:  # workers asking at the same time are all refused: say it once
                log.warning("%s; every item still to send in this batch is deferred", answer.message)
            self._denied = answer.message
            raise BudgetDeferred(answer.message)
        return answer

    async def _abandon(self, reservation: Reservation, request: CompletionRequest, exc: BaseException) -> None:
        """A request that failed: free its reservation when nothing can have been generated, else
        count its worst case (partial output may be billed: the conservative side)."""
        if isinstance(exc, NOTHING_GENERATED):
            await self._quietly(self._ledger().release(reservation), "release")
        else:
            await self._settle(reservation, reservation.amount)

    async def _settle(self, reservation: Reservation, cost: Decimal) -> None:
        await self._quietly(self._ledger().settle(reservation, cost), "settle")

    def _ledger(self) -> BudgetLedger:
        assert self.ledger is not None
        return self.ledger

    @staticmethod
    async def _quietly(call: Awaitable[None], what: str) -> None:
        """A paid completion is kept even if the ledger is unreachable: its reservation keeps
        counting the worst case until it expires."""
        try:
            await call
        except CoordinationError as exc:
            log.warning("could not %s a budget reservation (%s); it counts its worst case until it expires", what, exc)

    async def aclose(self) -> None:
        """Close claims (releasing what is unfinished, so a retry takes it at once) and the ledger."""
        for part in (self.claims, self.ledger):
            if part is not None:
                await part.aclose()
