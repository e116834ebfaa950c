"""Completion metrics through Airflow's ``Stats`` (StatsD, Datadog or OpenTelemetry, as configured).

Tags are bounded on purpose (model, transport, status): ids or free text as tags would explode
the number of series in the metrics backend.
"""

from __future__ import annotations

from decimal import Decimal

from airflow.sdk.observability.stats import Stats

from ..client import CompletionResult

PREFIX = "genesys_llm.completion"
BATCH_PREFIX = "genesys_llm.batch"

#: Every metric this provider emits, with what it measures (documented in the README).
METRICS = {
    f"{PREFIX}.latency_ms": "timing: whole completion including retries and rate-limit waits",
    f"{PREFIX}.ttft_ms": "timing: time to first kept token",
    f"{PREFIX}.rate_limit_wait_ms": "timing: client-side rate-limit wait",
    f"{PREFIX}.tokens_per_second": "gauge: completion tokens over the final attempt's duration",
    f"{PREFIX}.prompt_tokens": "counter: prompt tokens billed",
    f"{PREFIX}.completion_tokens": "counter: completion tokens billed",
    f"{PREFIX}.retries": "counter: attempts beyond the first",
    f"{PREFIX}.count": "counter: completions, tagged status=success|failed",
    f"{BATCH_PREFIX}.cost": "gauge: what one batch task's completions cost, tagged currency (price table)",
    f"{BATCH_PREFIX}.deferred_by_budget": "counter: completions a batch left unsent because a budget ran out",
}


def batch_spend(cost: Decimal | None, currency: str | None, deferred_by_budget: int) -> None:
    """The batch-level spend metrics (cost only with a price table)."""
    if cost is not None:
        Stats.gauge(f"{BATCH_PREFIX}.cost", float(cost), tags={"currency": currency or ""})
    if deferred_by_budget:
        Stats.incr(f"{BATCH_PREFIX}.deferred_by_budget", deferred_by_budget)


class StatsObserver:
    """Emits one set of metrics per completion; a metrics backend problem never fails a task."""

    def succeeded(self, result: CompletionResult) -> None:
        tags = {"model": result.model, "transport": result.transport, "status": "success"}
        Stats.timing(f"{PREFIX}.latency_ms", result.total_ms, tags=tags)
        if result.ttft_ms is not None:
            Stats.timing(f"{PREFIX}.ttft_ms", result.ttft_ms, tags=tags)
        if result.rate_limit_wait_ms:
            Stats.timing(f"{PREFIX}.rate_limit_wait_ms", result.rate_limit_wait_ms, tags=tags)
        Stats.gauge(f"{PREFIX}.tokens_per_second", result.tokens_per_second, tags=tags)
        Stats.incr(f"{PREFIX}.prompt_tokens", result.usage.prompt_tokens, tags=tags)
        Stats.incr(f"{PREFIX}.completion_tokens", result.usage.completion_tokens, tags=tags)
        if result.attempts > 1:
            Stats.incr(f"{PREFIX}.retries", result.attempts - 1, tags=tags)
        Stats.incr(f"{PREFIX}.count", tags=tags)

    def failed(self, model: str, transport: str, error_class: str, attempts: int) -> None:
        tags = {"model": model, "transport": transport, "status": "failed"}
        if attempts > 1:
            Stats.incr(f"{PREFIX}.retries", attempts - 1, tags=tags)
        Stats.incr(f"{PREFIX}.count", tags=tags)
