"""Airflow-free async client for the Genesys Cloud LLM Gateway.

Nothing under this package imports Airflow: it can be used, tested and benchmarked on its own,
and the Airflow hook is a thin wrapper around ``GatewayClient``.
"""

from .client import ClientStats, CompletionStream, GatewayClient, RestartEvent, StreamEvent, TokenEvent
from .config import DEFAULT_SCOPES, GatewayConfig, GatewayPaths, ModelLimits, resolve_region
from .errors import (
    AnswerTooLargeError,
    DownloadUrlRefusedError,
    GatewayAuthError,
    GatewayBadRequestError,
    GatewayCircuitOpenError,
    GatewayConnectionError,
    GatewayError,
    GatewayPermissionError,
    GatewayProtocolError,
    GatewayRateLimitError,
    GatewayTimeoutError,
    GatewayUnavailableError,
    RequestValidationError,
    StreamTruncatedError,
)
from .models import CompletionRequest, CompletionResult, GatewayStatus, Message, Usage

__all__ = [
    "DEFAULT_SCOPES",
    "AnswerTooLargeError",
    "ClientStats",
    "CompletionRequest",
    "CompletionResult",
    "CompletionStream",
    "DownloadUrlRefusedError",
    "GatewayAuthError",
    "GatewayBadRequestError",
    "GatewayCircuitOpenError",
    "GatewayClient",
    "GatewayConfig",
    "GatewayConnectionError",
    "GatewayError",
    "GatewayPaths",
    "GatewayPermissionError",
    "GatewayProtocolError",
    "GatewayRateLimitError",
    "GatewayStatus",
    "GatewayTimeoutError",
    "GatewayUnavailableError",
    "Message",
    "ModelLimits",
    "RequestValidationError",
    "RestartEvent",
    "StreamEvent",
    "StreamTruncatedError",
    "TokenEvent",
    "Usage",
    "resolve_region",
]
