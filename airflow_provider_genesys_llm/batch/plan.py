"""Plan a batch without spending: how many items, how many are stored, what the rest will cost.

A plan reads the items exactly as a run would (same validation, same result ids), asks the sink
which results are stored already and at which prompt versions (``reenrich`` decides as in a
run: ``prompt_version.judge_item``), and scales a small sample of real completions (tokens and
latency) to the completions still to send, under the quota the run will have.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..client import GatewayConfig
from ..coordination.spend import CostEstimate, PriceTable, SampleCompletion, estimate
from ..governance.keys import IdKey
from ..sinks.erasure import id_digest
from ..sinks.pgvector import UNVERSIONED
from .items import InvalidItem, PlannedCompletion, check_items_source, plan_item
from .prompt_version import Reenrich, judge_item
from .runner import _windows


@dataclass(frozen=True)
class BatchPlan:
    """What a run of the same items would do; ``estimate`` covers the completions ``to_send``."""

    items: int
    invalid: int
    completions: int
    already_stored: int
    to_send: int
    sample_size: int
    estimate: CostEstimate
    #: Items that would be sent again because they are stored only at other prompt versions.
    reenrich: int = 0
    #: Items stored at other versions that ``reenrich="never"`` leaves as they are.
    kept: int = 0
    #: ``{stored version: {"reenrich": items, "skip": items}}``: what the run does with the items
    #: stored at each version (an item stored at several versions counts under each).
    versions: dict[str, dict[str, int]] = field(default_factory=dict)

    def summary(self) -> str:
        e = self.estimate
        return (
            f"plan: items={self.items} invalid={self.invalid} completions={self.completions} "
            f"already_stored={self.already_stored} to_send={self.to_send} prompt_tokens={e.prompt_tokens} "
            f"completion_tokens={e.completion_tokens} cost={e.cost:.4f} {e.currency} time_s={e.seconds:.0f} "
            f"(from a sample of {self.sample_size} completions) reenrich={self.reenrich} kept={self.kept} "
            f"by_version={self.versions}"
        )

    def to_dict(self) -> dict[str, Any]:
        """XCom-safe: counts, tokens, cost as a string (exact), seconds."""
        e = self.estimate
        return {
            "items": self.items,
            "invalid": self.invalid,
            "completions": self.completions,
            "already_stored": self.already_stored,
            "to_send": self.to_send,
            "sample_size": self.sample_size,
            "prompt_tokens": e.prompt_tokens,
            "completion_tokens": e.completion_tokens,
            "cost": {"amount": str(e.cost), "currency": e.currency},
            "seconds": round(e.seconds, 1),
            "reenrich": self.reenrich,
            "kept": self.kept,
            "versions": {version: dict(counts) for version, counts in self.versions.items()},
        }


def plan_batch(
    items: Iterable[Any],
    *,
    config: GatewayConfig,
    request_defaults: Mapping[str, Any],
    id_key: IdKey,
    stored_ids: Callable[[list[str]], set[str]],
    sample: Sequence[SampleCompletion],
    prices: PriceTable,
    max_concurrency: int,
    requests_per_minute: float | None,
    window: int = 1000,
    stored_versions: Callable[[list[str]], dict[str, set[str | None]]] | None = None,
    reenrich: Reenrich = "outdated",
    version_parameters: Mapping[str, Any] | None = None,
) -> BatchPlan:
    """Count ``items`` (in windows: memory stays flat), subtract what ``stored_ids`` finds and what
    ``reenrich`` keeps at its stored version (``stored_versions``), estimate the rest.

    The estimate prices the connection's default model unless ``request_defaults`` names another.
    """
    counts = {"items": 0, "invalid": 0, "completions": 0, "stored": 0, "kept_completions": 0}
    versions = _VersionCounts()
    for batch in _windows(check_items_source(items), window):
        groups: list[list[PlannedCompletion]] = []
        for position, raw in batch:
            counts["items"] += 1
            outcome = plan_item(raw, position, config, request_defaults, id_key, version_parameters)
            if isinstance(outcome, InvalidItem):
                counts["invalid"] += 1
            else:
                groups.append(outcome)
        ids = [planned.result_id for group in groups for planned in group]
        counts["completions"] += len(ids)
        stored = stored_ids(ids) if ids else set()
        counts["stored"] += len(stored)
        if stored_versions is not None and groups:
            keys = [id_digest(id_key, group[0].source_id) for group in groups]
            found = stored_versions(keys)
            for key, group in zip(keys, groups, strict=True):
                pending = [p for p in group if p.result_id not in stored]
                current = frozenset(p.prompt_version for p in group)
                judged = judge_item(current, bool(pending), found.get(key), reenrich)
                counts["kept_completions"] += len(pending) if judged == "kept" else 0
                versions.note(judged, current, found.get(key, set()))
    to_send = counts["completions"] - counts["stored"] - counts["kept_completions"]
    model = str(request_defaults.get("model") or config.model)
    plan = estimate(
        to_send, sample, prices, model, max_concurrency=max_concurrency, requests_per_minute=requests_per_minute
    )
    return BatchPlan(
        counts["items"],
        counts["invalid"],
        counts["completions"],
        counts["stored"],
        to_send,
        len(sample),
        plan,
        reenrich=versions.reenrich,
        kept=versions.kept,
        versions=versions.by_version,
    )


class _VersionCounts:
    """Per stored version, the items a run would send again (``reenrich``) or leave (``skip``)."""

    def __init__(self) -> None:
        self.reenrich = 0
        self.kept = 0
        self.by_version: dict[str, dict[str, int]] = {}

    def note(self, judged: str, current: frozenset[str], stored: set[str | None]) -> None:
        if judged == "reenrich":
            self.reenrich += 1
        elif judged == "kept":
            self.kept += 1
        if judged == "stored":
            self._count(current, "skip")
        elif judged in ("reenrich", "kept"):
            self._count(stored, "reenrich" if judged == "reenrich" else "skip")

    def _count(self, versions: Iterable[str | None], what: str) -> None:
        for version in versions:
            counts = self.by_version.setdefault(version or UNVERSIONED, {"reenrich": 0, "skip": 0})
            counts[what] += 1
