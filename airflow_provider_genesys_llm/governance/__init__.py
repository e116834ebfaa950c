"""Governance for model output and runs: PII masking, safety filters and a tamper-evident audit trail.

Nothing here imports Airflow, and psycopg only once an audit chain is used, so the client, the
operators and plain scripts can all share it.
"""

from .audit import COMPLIANCE_TAG, AuditLog, AuditRecord, Timings, TokenUsage
from .chain import AuditChainError, AuditChainStore, ChainVerification, verify_chain
from .filters import (
    FilterOutcome,
    FilterPipeline,
    GenerationErrorFilter,
    OutputFilter,
    RegexRemovalFilter,
    ThinkBlockFilter,
    default_filters,
)
from .masking import (
    MaskingPolicy,
    MaskResult,
    PiiDetectedError,
    PiiMasker,
    StreamRedactor,
    apply_policy,
)
from .witness import ChainHead, WitnessFormatError, heads_from_log_lines

__all__ = [
    "COMPLIANCE_TAG",
    "AuditChainError",
    "AuditChainStore",
    "AuditLog",
    "AuditRecord",
    "ChainHead",
    "ChainVerification",
    "FilterOutcome",
    "FilterPipeline",
    "GenerationErrorFilter",
    "MaskResult",
    "MaskingPolicy",
    "OutputFilter",
    "PiiDetectedError",
    "PiiMasker",
    "RegexRemovalFilter",
    "StreamRedactor",
    "ThinkBlockFilter",
    "Timings",
    "TokenUsage",
    "WitnessFormatError",
    "apply_policy",
    "default_filters",
    "heads_from_log_lines",
    "verify_chain",
]
