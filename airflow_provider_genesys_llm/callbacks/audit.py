"""Task-level audit records for any task, ours or not, as callbacks or a notifier.

``on_success_callback=audit_task_callback(...)`` (or the notifier) writes one ``kind="task"``
record to the task log and, when given a Postgres connection, to the hash-chained audit table.
The batch operator uses the same builder for its own task record.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from airflow.sdk.bases.notifier import BaseNotifier

from ..governance.audit import COMPLIANCE_TAG, AuditLog, AuditRecord, RecordStatus, TokenUsage
from ..governance.chain import DEFAULT_TABLE as DEFAULT_AUDIT_TABLE
from ..governance.chain import AuditChainStore
from ..governance.witness import ChainHead
from ..hooks.postgres import postgres_connect

log = logging.getLogger(__name__)


def record_context(
    context: Mapping[str, Any], *, owner: str | None = None, conn_id: str | None = None
) -> dict[str, Any]:
    """The run's ids that every audit record of this task instance carries."""
    ti = context["ti"]
    return {
        "dag_id": ti.dag_id,
        "task_id": ti.task_id,
        "run_id": ti.run_id,
        "map_index": ti.map_index if ti.map_index is not None and ti.map_index >= 0 else None,
        "try_number": ti.try_number,
        "owner": owner,
        "conn_id": conn_id,
    }


def task_audit_record(
    context: Mapping[str, Any],
    *,
    status: RecordStatus,
    error_class: str | None = None,
    conn_id: str | None = None,
    model: str | None = None,
    usage: Mapping[str, int] | None = None,
    attempts: int | None = None,
    masking_counts: Mapping[str, int] | None = None,
    compliance_tag: str = COMPLIANCE_TAG,
) -> AuditRecord:
    """The ``kind="task"`` record of the task instance in ``context``."""
    return AuditRecord(
        kind="task",
        status=status,
        model=model,
        usage=TokenUsage(**usage) if usage else None,
        attempts=attempts,
        error_class=error_class,
        masking_counts=dict(masking_counts or {}),
        compliance_tag=compliance_tag,
        **record_context(context, owner=getattr(context.get("task"), "owner", None), conn_id=conn_id),
    )


def audit_store(postgres_conn_id: str, table: str = DEFAULT_AUDIT_TABLE, schema: str = "public") -> AuditChainStore:
    store = AuditChainStore(postgres_connect(postgres_conn_id), table=table, schema=schema)
    store.ensure_schema()
    return store


def write_audit_records(
    records: Sequence[AuditRecord], postgres_conn_id: str | None, table: str = DEFAULT_AUDIT_TABLE
) -> ChainHead | None:
    """Each record to the task log, and to the audit chain when a Postgres connection is given.

    After an append the chain head it left is logged too (``GENESYS_AUDIT_HEAD``): a witness kept
    outside the database, which ``verify --witness-log`` checks the chain against.
    """
    for record in records:
        log.info("%s", AuditLog.to_log_line(record))
    if not postgres_conn_id:
        return None
    store = audit_store(postgres_conn_id, table)
    store.append(records)
    return publish_head(store)


def publish_head(store: AuditChainStore) -> ChainHead | None:
    """Log the head ``store`` left with its last append; returns it for XCom and asset events."""
    head = store.last_head
    if head is not None:
        log.info("%s", head.to_log_line())
    return head


def _status_of(context: Mapping[str, Any]) -> tuple[RecordStatus, str | None]:
    exception = context.get("exception")
    if exception is None:
        return "success", None
    return "failed", type(exception).__name__ if isinstance(exception, BaseException) else str(exception)[:100]


def audit_task_callback(
    postgres_conn_id: str | None = None, *, table: str = DEFAULT_AUDIT_TABLE, compliance_tag: str = COMPLIANCE_TAG
) -> Callable[[Mapping[str, Any]], None]:
    """A callable for ``on_success_callback``, ``on_failure_callback`` or ``on_retry_callback``."""

    def callback(context: Mapping[str, Any]) -> None:
        status, error_class = _status_of(context)
        record = task_audit_record(context, status=status, error_class=error_class, compliance_tag=compliance_tag)
        write_audit_records([record], postgres_conn_id, table)

    return callback


class GenesysAuditNotifier(BaseNotifier):
    """The same task-level audit record as a notifier (``on_failure_callback=GenesysAuditNotifier(...)``)."""

    template_fields = ("postgres_conn_id", "table")

    def __init__(self, postgres_conn_id: str | None = None, table: str = DEFAULT_AUDIT_TABLE) -> None:
        super().__init__()
        self.postgres_conn_id = postgres_conn_id
        self.table = table

    def notify(self, context: Any) -> None:
        audit_task_callback(self.postgres_conn_id, table=self.table)(context)
