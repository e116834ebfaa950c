"""Fleet-wide coordination through Postgres: one gateway quota, exactly-once items, one budget.

Airflow-free, so the client and the batch runner can use it in any process. Nothing here is
active unless a connection opts in with `CoordinationSettings(enabled=True)`. The settings, prices
and errors need only pydantic; the database-backed classes (`GatewayCoordinator`, `ItemClaims`,
`BudgetLedger`) import psycopg on first use, so the client can read the settings of a connection
on an install without the `postgres` extra.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .errors import CoordinationError, CoordinationUnavailableError, SlotTimeoutError, UnknownModelPriceError
from .settings import PRIORITIES, BudgetSettings, CoordinationSettings, Priority
from .slots import GateSnapshot, Slot
from .spend import CostEstimate, ModelPrice, PriceTable, SampleCompletion, estimate

if TYPE_CHECKING:
    from .budget import BudgetDenied, BudgetLedger, Reservation, SpendScope
    from .claims import ClaimOutcome, ItemClaims
    from .gateway import GatewayCoordinator

#: Names whose modules need psycopg, and the module each lives in.
_WITH_PSYCOPG = {
    "BudgetDenied": "budget",
    "BudgetLedger": "budget",
    "Reservation": "budget",
    "SpendScope": "budget",
    "ClaimOutcome": "claims",
    "ItemClaims": "claims",
    "GatewayCoordinator": "gateway",
}


def __getattr__(name: str) -> Any:
    module = _WITH_PSYCOPG.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f".{module}", __name__), name)


__all__ = [
    "PRIORITIES",
    "BudgetDenied",
    "BudgetLedger",
    "BudgetSettings",
    "ClaimOutcome",
    "CoordinationError",
    "CoordinationSettings",
    "CoordinationUnavailableError",
    "CostEstimate",
    "GateSnapshot",
    "GatewayCoordinator",
    "ItemClaims",
    "ModelPrice",
    "PriceTable",
    "Priority",
    "Reservation",
    "SampleCompletion",
    "Slot",
    "SlotTimeoutError",
    "SpendScope",
    "UnknownModelPriceError",
    "estimate",
]
