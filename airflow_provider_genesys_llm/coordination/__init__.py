"""Fleet-wide coordination through Postgres: one gateway quota, exactly-once items, one budget.

Airflow-free (psycopg 3 only), so the client and the batch runner can use it in any process.
Nothing here is active unless a connection opts in with `CoordinationSettings(enabled=True)`.
"""

from .budget import BudgetDenied, BudgetLedger, Reservation, SpendScope
from .claims import ClaimOutcome, ItemClaims
from .errors import CoordinationError, CoordinationUnavailableError, SlotTimeoutError, UnknownModelPriceError
from .gateway import GatewayCoordinator
from .settings import PRIORITIES, BudgetSettings, CoordinationSettings, Priority
from .slots import GateSnapshot, Slot
from .spend import CostEstimate, ModelPrice, PriceTable, SampleCompletion, estimate

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
