"""What completions cost: a price table per model, and an estimate from a small sample.

Prices are `Decimal` per 1,000 tokens (no binary rounding in money); a model missing from the
table is an error, never a silent zero, because a budget that prices nothing stops nothing.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from statistics import fmean

from pydantic import BaseModel, ConfigDict, Field

from .errors import UnknownModelPriceError

_THOUSAND = Decimal(1000)


class ModelPrice(BaseModel):
    """Price of one model per 1,000 prompt and completion tokens."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    prompt_per_1k: Decimal = Field(ge=0)
    completion_per_1k: Decimal = Field(ge=0)


class PriceTable(BaseModel):
    """Prices per model, in one currency; lives on the gateway connection."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    currency: str = Field("USD", pattern=r"^[A-Z]{3}$")
    models: dict[str, ModelPrice] = Field(default_factory=dict)

    def price(self, model: str) -> ModelPrice:
        price = self.models.get(model)
        if price is None:
            raise UnknownModelPriceError(
                f"price table has no entry for model {model!r} (known: {sorted(self.models)}); "
                "add it to the connection's price table: a retry fails the same way"
            )
        return price

    def cost(self, model: str, prompt_tokens: int, completion_tokens: int) -> Decimal:
        price = self.price(model)
        return (price.prompt_per_1k * prompt_tokens + price.completion_per_1k * completion_tokens) / _THOUSAND

    def worst_case(self, model: str, prompt_tokens: int, max_tokens: int) -> Decimal:
        """The most a request can cost: its prompt plus every completion token it may produce."""
        return self.cost(model, prompt_tokens, max_tokens)


@dataclass(frozen=True)
class SampleCompletion:
    """One completion of the sample: what it read, wrote and how long it took."""

    prompt_tokens: int
    completion_tokens: int
    latency_seconds: float


@dataclass(frozen=True)
class CostEstimate:
    """The plan of a run: tokens, cost and time for `items` items under the quota."""

    items: int
    prompt_tokens: int
    completion_tokens: int
    cost: Decimal
    currency: str
    seconds: float

    def summary(self) -> str:
        return (
            f"items={self.items} prompt_tokens={self.prompt_tokens} completion_tokens={self.completion_tokens} "
            f"cost={self.cost:.4f} {self.currency} time_s={self.seconds:.0f}"
        )


def estimate(
    items: int,
    sample: Sequence[SampleCompletion],
    prices: PriceTable,
    model: str,
    *,
    max_concurrency: int,
    requests_per_minute: float | None,
) -> CostEstimate:
    """Scale a sample to `items` items: mean tokens per item times items, priced by the table;
    time is whichever binds harder, the stream quota (mean latency / concurrency per item) or the
    request rate."""
    if items < 0:
        raise ValueError(f"items must be at least 0, got {items}")
    if not sample:
        raise ValueError("the sample is empty: complete a few items first (a plan needs tokens per item)")
    prompt = math.ceil(fmean(s.prompt_tokens for s in sample) * items)
    completion = math.ceil(fmean(s.completion_tokens for s in sample) * items)
    per_item = fmean(s.latency_seconds for s in sample) / max_concurrency
    if requests_per_minute:
        per_item = max(per_item, 60.0 / requests_per_minute)
    cost = prices.cost(model, prompt, completion)
    return CostEstimate(items, prompt, completion, cost, prices.currency, per_item * items)
