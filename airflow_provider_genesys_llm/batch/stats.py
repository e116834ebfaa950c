"""Batch statistics in bounded memory, whatever the number of items."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

#: Latency samples kept for percentiles; exact up to this many completions, a uniform sample beyond.
RESERVOIR_SIZE = 10_000
#: Failed item ids listed in the XCom manifest; the full list is in the sink's failures table.
FAILED_IDS_IN_MANIFEST = 50
#: Completion audit ids listed in the XCom manifest; every record is in the audit table.
AUDIT_IDS_IN_MANIFEST = 100


class Reservoir:
    """Uniform sample of a stream of numbers (Vitter's algorithm R), seeded so runs are repeatable."""

    def __init__(self, size: int = RESERVOIR_SIZE) -> None:
        self._size = size
        self._seen = 0
        self._values: list[float] = []
        self._random = random.Random(0)
        self.maximum = 0.0

    def add(self, value: float) -> None:
        self._seen += 1
        self.maximum = max(self.maximum, value)
        if len(self._values) < self._size:
            self._values.append(value)
        else:
            slot = self._random.randrange(self._seen)
            if slot < self._size:
                self._values[slot] = value

    def percentile(self, q: float) -> float | None:
        if not self._values:
            return None
        ordered = sorted(self._values)
        return round(ordered[min(len(ordered) - 1, int(q / 100.0 * len(ordered)))], 3)


@dataclass
class BatchStats:
    succeeded: int = 0
    failed: int = 0
    invalid: int = 0
    skipped_existing: int = 0
    rows_written: int = 0
    attempts: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    embedding_fallbacks: int = 0
    failed_ids: list[str] = field(default_factory=list)
    masking_counts: Counter[str] = field(default_factory=Counter)
    filtered: int = 0
    audit_records: int = 0
    audit_ids: list[str] = field(default_factory=list)
    latency_ms: Reservoir = field(default_factory=Reservoir)
    ttft_ms: Reservoir = field(default_factory=Reservoir)

    @property
    def failures(self) -> int:
        return self.failed + self.invalid

    @property
    def processed(self) -> int:
        return self.succeeded + self.failures + self.skipped_existing

    @property
    def failed_ratio(self) -> float:
        attempted = self.succeeded + self.failures
        return self.failures / attempted if attempted else 0.0

    def note_failure(self, source_id: str) -> None:
        if len(self.failed_ids) < FAILED_IDS_IN_MANIFEST:
            self.failed_ids.append(source_id)

    def note_masking(self, prompt: Mapping[str, int], output: Mapping[str, int], filters: tuple[str, ...]) -> None:
        self.masking_counts.update(prompt)
        self.masking_counts.update(output)
        if filters:
            self.filtered += 1

    def note_audit(self, audit_id: str) -> None:
        self.audit_records += 1
        if len(self.audit_ids) < AUDIT_IDS_IN_MANIFEST:
            self.audit_ids.append(audit_id)

    def manifest(self, **extra: Any) -> dict[str, Any]:
        """The small, XCom-safe summary: counts, tokens and latencies, never texts or vectors."""
        return {
            "counts": {
                "succeeded": self.succeeded,
                "failed": self.failed,
                "invalid": self.invalid,
                "skipped_existing": self.skipped_existing,
                "rows_written": self.rows_written,
            },
            "failed_ratio": round(self.failed_ratio, 4),
            "failed_ids": list(self.failed_ids),
            "failed_ids_truncated": self.failures > len(self.failed_ids),
            "attempts": self.attempts,
            "tokens": {
                "prompt": self.prompt_tokens,
                "completion": self.completion_tokens,
                "total": self.prompt_tokens + self.completion_tokens,
            },
            "latency_ms": {
                "p50": self.latency_ms.percentile(50),
                "p95": self.latency_ms.percentile(95),
                "max": round(self.latency_ms.maximum, 3),
            },
            "ttft_ms": {"p50": self.ttft_ms.percentile(50), "p95": self.ttft_ms.percentile(95)},
            "embedding_fallbacks": self.embedding_fallbacks,
            "masking_counts": dict(self.masking_counts),
            "outputs_filtered": self.filtered,
            "audit": {
                "completion_records": self.audit_records,
                "completion_audit_ids": list(self.audit_ids),
                "completion_audit_ids_truncated": self.audit_records > len(self.audit_ids),
            },
            **extra,
        }
