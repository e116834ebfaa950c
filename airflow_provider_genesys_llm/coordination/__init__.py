"""Fleet-wide coordination through Postgres: one gateway quota, exactly-once items, one budget.

Airflow-free (psycopg 3 only), so the client and the batch runner can use it in any process.
Nothing here is active unless a connection opts in with `CoordinationSettings(enabled=True)`.
"""

from .errors import CoordinationError, CoordinationUnavailableError, SlotTimeoutError, UnknownModelPriceError
from .gateway import GateSnapshot, GatewayCoordinator, Slot
from .settings import PRIORITIES, BudgetSettings, CoordinationSettings, Priority

__all__ = [
    "PRIORITIES",
    "BudgetSettings",
    "CoordinationError",
    "CoordinationSettings",
    "CoordinationUnavailableError",
    "GateSnapshot",
    "GatewayCoordinator",
    "Priority",
    "Slot",
    "SlotTimeoutError",
    "UnknownModelPriceError",
]
