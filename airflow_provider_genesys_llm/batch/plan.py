"""Plan a batch without spending: how many items, how many are stored, what the rest will cost.

A plan reads the items exactly as a run would (same validation, same result ids), asks the sink
which results are stored already, and scales a small sample of real completions (tokens and
latency) to the completions still to send, under the quota the run will have.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..client import GatewayConfig
from ..coordination.spend import CostEstimate, PriceTable, SampleCompletion, estimate
from ..governance.keys import IdKey
from .items import InvalidItem, check_items_source, plan_item
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

    def summary(self) -> str:
        e = self.estimate
        return (
            f"plan: items={self.items} invalid={self.invalid} completions={self.completions} "
            f"already_stored={self.already_stored} to_send={self.to_send} prompt_tokens={e.prompt_tokens} "
            f"completion_tokens={e.completion_tokens} cost={e.cost:.4f} {e.currency} time_s={e.seconds:.0f} "
            f"(from a sample of {self.sample_size} completions)"
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
) -> BatchPlan:
    """Count ``items`` (in windows: memory stays flat), subtract what ``stored_ids`` finds, estimate the rest.

    The estimate prices the connection's default model unless ``request_defaults`` names another.
    """
    counts = {"items": 0, "invalid": 0, "completions": 0, "stored": 0}
    for batch in _windows(check_items_source(items), window):
        ids: list[str] = []
        for position, raw in batch:
            counts["items"] += 1
            outcome = plan_item(raw, position, config, request_defaults, id_key)
            if isinstance(outcome, InvalidItem):
                counts["invalid"] += 1
            else:
                ids += [planned.result_id for planned in outcome]
        counts["completions"] += len(ids)
        counts["stored"] += len(stored_ids(ids)) if ids else 0
    to_send = counts["completions"] - counts["stored"]
    model = str(request_defaults.get("model") or config.model)
    plan = estimate(
        to_send, sample, prices, model, max_concurrency=max_concurrency, requests_per_minute=requests_per_minute
    )
    return BatchPlan(
        counts["items"], counts["invalid"], counts["completions"], counts["stored"], to_send, len(sample), plan
    )
