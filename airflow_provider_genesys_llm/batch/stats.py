"""Batch statistics in bounded memory, whatever the number of items."""

from __future__ import annotations

import random
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from decimal import Decimal
from typing import Any

#: Latency samples kept for percentiles; exact up to this many completions, a uniform sample beyond.
RESERVOIR_SIZE = 10_000
#: Failed item ids listed in the XCom manifest; the full list is in the sink's failures table.
FAILED_IDS_IN_MANIFEST = 50
#: Completion audit ids listed in the XCom manifest; every record is in the audit table.
AUDIT_IDS_IN_MANIFEST = 100
#: Invalid items quoted (position, code and reason, never their text) in the log and manifest.
INVALID_EXAMPLES = 5
#: Distinct invalid-reason codes counted one by one; any further codes are counted as "other".
INVALID_CODES = 64
#: Prompt versions listed in the manifest (most rows first; per-item overrides can make many).
VERSIONS_IN_MANIFEST = 20


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


def counters(stats: object, part: type) -> dict[str, int]:
    """The integer counters the dataclass ``part`` declares, read from ``stats``: a counter reaches
    a manifest or summary by being declared, never by being listed a second time."""
    return {f.name: getattr(stats, f.name) for f in fields(part) if f.type in ("int", int)}


@dataclass
class Outcomes:
    """Where the input went: every completion lands in exactly one of ``succeeded``, ``failed``,
    ``skipped_existing``, ``embedded_earlier``, ``skipped_claimed``, ``deferred_by_budget`` or
    ``skipped_other_version``, every item that is never sent in ``invalid``; each count sits with its details."""

    #: Completions paid for in this run and stored (see ``awaiting_embedding`` for how many lack a vector).
    succeeded: int = 0
    #: Completions the gateway or the output policy refused; recorded in the failures table.
    failed: int = 0
    #: The first ``FAILED_IDS_IN_MANIFEST`` failed item ids; all of them are in the failures table.
    failed_ids: list[str] = field(default_factory=list)
    #: Items never sent (schema, limits, NUL, surrogates, bad bytes, empty prompt); failures table.
    invalid: int = 0
    invalid_reasons: Counter[str] = field(default_factory=Counter)
    invalid_examples: list[str] = field(default_factory=list)
    #: Completions stored with their embedding by an earlier run: not sent again.
    skipped_existing: int = 0
    #: Completions paid for by an earlier attempt that stored them awaiting an embedding: embedded now, not sent.
    embedded_earlier: int = 0
    #: Completions another live delivery of the same work held past the claim wait: it pays and stores them.
    skipped_claimed: int = 0
    #: Completions left unsent because a budget ran out; a later run (the next day) sends them.
    deferred_by_budget: int = 0
    #: Items sent again because their stored rows were all of other prompt versions (``reenrich="outdated"``).
    reenriched: int = 0
    #: Completions not sent because their item is stored at another prompt version (``reenrich="never"``).
    skipped_other_version: int = 0
    #: ``{version: {"label": ..., "rows": n}}`` of the results table after the run.
    versions: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: Completions whose claim expired while this run paid for them (the worker stalled past the lease).
    claims_lost: int = 0

    @property
    def failures(self) -> int:
        return self.failed + self.invalid

    @property
    def total(self) -> int:
        """Every outcome of the run's input: the failure ratio's denominator, so a re-run of a
        batch that passed sees the same ratio (its stored results count, as they did the first time)."""
        return (
            self.succeeded
            + self.failures
            + self.skipped_existing
            + self.embedded_earlier
            + self.skipped_claimed
            + self.deferred_by_budget
            + self.skipped_other_version
        )

    @property
    def failed_ratio(self) -> float:
        return self.failures / self.total if self.total else 0.0

    def note_invalid(self, position: int, code: str, reason: str) -> None:
        """Count an invalid item by reason code (bounded) and keep the first few reasons for the log."""
        self.invalid += 1
        if code not in self.invalid_reasons and len(self.invalid_reasons) >= INVALID_CODES:
            code = "other"
        self.invalid_reasons[code] += 1
        if len(self.invalid_examples) < INVALID_EXAMPLES:
            self.invalid_examples.append(f"item #{position} ({code}): {reason[:200]}")

    def note_failure(self, source_id: str) -> None:
        if len(self.failed_ids) < FAILED_IDS_IN_MANIFEST:
            self.failed_ids.append(source_id)

    def largest_versions(self) -> dict[str, dict[str, Any]]:
        """``versions`` bounded: the largest ``VERSIONS_IN_MANIFEST``, the rest summed as ``"other"``."""
        ranked = sorted(self.versions.items(), key=lambda entry: -int(entry[1]["rows"]))
        shown = dict(ranked[:VERSIONS_IN_MANIFEST])
        if rest := ranked[VERSIONS_IN_MANIFEST:]:
            shown["other"] = {"label": f"{len(rest)} more versions", "rows": sum(int(v["rows"]) for _, v in rest)}
        return shown


@dataclass
class Writes:
    """What reached the sink."""

    rows_written: int = 0
    #: Rows given their embedding in this run (results of this run and of earlier attempts).
    embeddings_written: int = 0
    #: Rows stored without an embedding so far (paid; completed by ``set_embeddings`` or the next attempt).
    awaiting_embedding: int = 0
    embedding_fallbacks: int = 0
    embedding_fallback_reasons: Counter[str] = field(default_factory=Counter)


@dataclass
class Usage:
    """What the completions used: requests, tokens, money and time."""

    attempts: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    #: What this run's completions cost (None without a price table), in ``currency``.
    cost: Decimal | None = None
    currency: str | None = None
    latency_ms: Reservoir = field(default_factory=Reservoir)
    ttft_ms: Reservoir = field(default_factory=Reservoir)

    def note_cost(self, cost: Decimal | None, currency: str | None) -> None:
        if cost is not None:
            self.cost = (self.cost or Decimal(0)) + cost
            self.currency = currency


@dataclass
class Governed:
    """What governance did: values masked, outputs filtered, audit records written."""

    masking_counts: Counter[str] = field(default_factory=Counter)
    filtered: int = 0
    audit_records: int = 0
    audit_ids: list[str] = field(default_factory=list)

    def note_masking(self, prompt: Mapping[str, int], output: Mapping[str, int], filters: tuple[str, ...]) -> None:
        self.masking_counts.update(prompt)
        self.masking_counts.update(output)
        if filters:
            self.filtered += 1

    def note_audit(self, audit_id: str) -> None:
        self.audit_records += 1
        if len(self.audit_ids) < AUDIT_IDS_IN_MANIFEST:
            self.audit_ids.append(audit_id)


@dataclass
class Validated:
    """With an output schema: completions stored with a valid output, re-asks sent (each paid and
    counted in the tokens), and items whose answer stayed invalid (also counted in ``failed``)."""

    output_valid: int = 0
    output_reasked: int = 0
    output_invalid: int = 0

    def output_counts(self) -> dict[str, int]:
        """The output-schema counts, only for a run that validated answers (the manifest stays small)."""
        counts = counters(self, Validated)
        return counts if any(counts.values()) else {}


@dataclass
class BatchStats(Outcomes, Writes, Usage, Governed, Validated):
    """Everything one run counts, in bounded memory; ``manifest`` is its XCom-safe summary."""

    items_done: int = 0

    def manifest(self, **extra: Any) -> dict[str, Any]:
        """The small, XCom-safe summary: counts, tokens and latencies, never texts or vectors."""
        return {
            "counts": {
                "total": self.total,
                **counters(self, Outcomes),
                **counters(self, Writes),
                **self.output_counts(),
            },
            "versions": self.largest_versions(),
            "cost": None if self.cost is None else {"amount": str(self.cost), "currency": self.currency},
            "failed_ratio": round(self.failed_ratio, 4),
            "invalid_reasons": dict(self.invalid_reasons),
            "invalid_examples": list(self.invalid_examples),
            "embedding_fallback_reasons": dict(self.embedding_fallback_reasons),
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
            "masking_counts": dict(self.masking_counts),
            "outputs_filtered": self.filtered,
            "audit": {
                "completion_records": self.audit_records,
                "completion_audit_ids": list(self.audit_ids),
                "completion_audit_ids_truncated": self.audit_records > len(self.audit_ids),
            },
            **extra,
        }
