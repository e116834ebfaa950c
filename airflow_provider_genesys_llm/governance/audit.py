"""Audit trail: one record per completion or task, as a log line and in a hash chain in Postgres.

A record says who asked what of which model, with which parameters, what it cost and how it
ended, but never the prompt or the answer: the prompt is represented by ``prompt_hmac`` (keyed), so
two runs can be shown to have sent the same prompt without the audit store holding it.

The chain lives in ``chain.py`` (append, verify), its witnessed heads in ``witness.py`` and the
least-privilege writer role in ``roles.py``: each name has that one home (the ``governance``
package re-exports the ones users need).
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from decimal import Decimal
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from .canonical import canonical_json

__all__ = [
    "COMPLIANCE_TAG",
    "LOG_PREFIX",
    "AuditLog",
    "AuditRecord",
    "Cost",
    "ParameterValue",
    "RecordStatus",
    "RunContext",
    "Timings",
    "TokenUsage",
]

#: Tag carried by every record, naming the governance scheme the records follow.
COMPLIANCE_TAG = "GENESYS_AI_GATEWAY_V2"
#: Prefix of audit log lines, for log search and shipping rules.
LOG_PREFIX = "GENESYS_AUDIT "

ParameterValue = str | int | float | bool | None
#: How a completion or task ended.
RecordStatus = Literal["success", "failed", "skipped"]


class TokenUsage(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    total_tokens: int | None = None


class Timings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    connect_ms: float | None = None
    ttft_ms: float | None = None
    total_ms: float | None = None
    tokens_per_second: float | None = None


class Cost(BaseModel):
    """What a completion or a task cost, priced by the connection's price table."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    amount: Decimal = Field(ge=0)
    currency: str = Field(pattern=r"^[A-Z]{3}$")


class RunContext(BaseModel):
    """Where a record comes from: the run's ids, stamped on every result row, failure and audit
    record. Declared once here; ``AuditRecord`` carries the same fields at its top level."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    dag_id: str | None = None
    task_id: str | None = None
    run_id: str | None = None
    map_index: int | None = None
    try_number: int | None = None
    owner: str | None = None
    conn_id: str | None = None


class AuditRecord(RunContext):
    """What happened in one completion (``kind="completion"``) or one task (``kind="task"``).

    ``extra="forbid"`` and scalar-only ``parameters`` keep free text out: there is no field a
    prompt or an answer could be put in by mistake. ``error_class`` is a class name, not a message.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", allow_inf_nan=False)

    audit_id: str = Field(default_factory=lambda: str(uuid.uuid4()))
    kind: Literal["completion", "task"]
    status: RecordStatus
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))
    compliance_tag: str = COMPLIANCE_TAG
    request_id: str | None = None
    correlation_id: str | None = None
    model: str | None = None
    prompt_id: str | None = None
    #: HMAC-SHA256 of the prompt under the deployment's id key (``governance.keys``): two records
    #: can be shown to carry the same prompt, and a guessed prompt cannot be confirmed without the key.
    prompt_hmac: str | None = Field(default=None, pattern=r"^[0-9a-f]{64}$")
    parameters: dict[str, ParameterValue] = Field(default_factory=dict)
    usage: TokenUsage | None = None
    #: None when the connection has no price table.
    cost: Cost | None = None
    timings: Timings | None = None
    attempts: int | None = None
    error_class: str | None = None
    masking_counts: dict[str, int] = Field(default_factory=dict)
    filters_applied: tuple[str, ...] = ()

    @field_validator("created_at")
    @classmethod
    def _in_utc(cls, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("created_at must be timezone-aware")
        return value.astimezone(UTC)


class AuditLog:
    """Audit records as task log lines, for deployments that ship logs rather than keep a table."""

    @staticmethod
    def to_log_line(record: AuditRecord) -> str:
        """``GENESYS_AUDIT {...}``: one line of compact JSON, whatever the record holds."""
        return LOG_PREFIX + canonical_json(record.model_dump(mode="json"))
