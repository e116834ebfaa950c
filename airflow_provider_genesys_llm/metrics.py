"""Metrics through Airflow's ``Stats`` (StatsD, Datadog or OpenTelemetry, as configured).

Plain StatsD drops tags, so every name that counts outcomes carries the outcome itself
(``genesys_llm.completion.success.count`` and ``genesys_llm.completion.failed.count``, not one
``count`` with a ``status`` tag): a reader of a plain StatsD backend can tell them apart. Tags
(model, transport, error class) are still sent for backends that keep them, and are bounded on
purpose: ids or free text as tags would explode the number of series.

Every operator and sensor that talks to the gateway emits through this module: the completion and
batch operators per completion (``StatsObserver``), the gateway sensor per check and the
transcripts operator per run (``count_outcomes``). ``METRICS`` lists every name, with its type,
tags and meaning, for the README's table and the naming test (tests/test_metrics_names.py).
"""

from __future__ import annotations

import contextlib
import functools
import inspect
from collections.abc import Callable, Iterator
from decimal import Decimal
from typing import Any, NamedTuple, TypeVar

from airflow.sdk.observability.stats import Stats

from .client import CompletionResult

PREFIX = "genesys_llm.completion"
BATCH_PREFIX = "genesys_llm.batch"
GATEWAY_CHECK = "genesys_llm.gateway_check"
TRANSCRIPTS = "genesys_llm.transcripts"
CONVERSATION_JOB = "genesys_llm.conversation_job_check"


class Metric(NamedTuple):
    """One row of the README's metrics table."""

    type: str
    tags: str
    meaning: str


_COMPLETION_TAGS = "model, transport"
#: Every metric this provider emits: the README's table lists the same names.
METRICS: dict[str, Metric] = {
    f"{PREFIX}.success.count": Metric("counter", _COMPLETION_TAGS, "completions that returned an answer"),
    f"{PREFIX}.failed.count": Metric(
        "counter", f"{_COMPLETION_TAGS}, error_class", "completions that failed after their retries"
    ),
    f"{PREFIX}.failed.<ErrorClass>.count": Metric(
        "counter", _COMPLETION_TAGS, "failed completions by error class (e.g. `failed.GatewayBadRequestError.count`)"
    ),
    f"{PREFIX}.latency_ms": Metric(
        "timer", _COMPLETION_TAGS, "whole successful completion, retries and waits included"
    ),
    f"{PREFIX}.ttft_ms": Metric("timer", _COMPLETION_TAGS, "time to first kept token"),
    f"{PREFIX}.rate_limit_wait_ms": Metric("timer", _COMPLETION_TAGS, "client-side rate-limit wait"),
    f"{PREFIX}.tokens_per_second": Metric("gauge", _COMPLETION_TAGS, "completion tokens over the final attempt"),
    f"{PREFIX}.prompt_tokens": Metric("counter", _COMPLETION_TAGS, "prompt tokens billed"),
    f"{PREFIX}.completion_tokens": Metric("counter", _COMPLETION_TAGS, "completion tokens billed"),
    f"{PREFIX}.retries": Metric("counter", _COMPLETION_TAGS, "attempts beyond the first, successes and failures"),
    f"{GATEWAY_CHECK}.ready.count": Metric("counter", "", "gateway sensor checks that found the gateway ready"),
    f"{GATEWAY_CHECK}.not_ready.count": Metric("counter", "", "checks that found it not ready (the sensor waits on)"),
    f"{GATEWAY_CHECK}.failed.count": Metric("counter", "error_class", "checks that failed the task"),
    f"{CONVERSATION_JOB}.ready.count": Metric("counter", "", "conversation-job sensor checks that found the job done"),
    f"{CONVERSATION_JOB}.not_ready.count": Metric("counter", "", "checks that found the job still running"),
    f"{CONVERSATION_JOB}.failed.count": Metric("counter", "error_class", "checks that failed the task"),
    f"{TRANSCRIPTS}.success.count": Metric("counter", "", "transcript landing runs that stored everything"),
    f"{TRANSCRIPTS}.failed.count": Metric("counter", "error_class", "transcript landing runs that failed"),
    f"{BATCH_PREFIX}.cost": Metric("gauge", "currency", "what one batch task's completions cost (with a price table)"),
    f"{BATCH_PREFIX}.deferred_by_budget": Metric(
        "counter", "", "completions a batch left unsent because a budget ran out"
    ),
}


def _safe_name(error_class: str) -> str:
    """Class names are identifiers already; anything else is cut to StatsD-safe characters."""
    return "".join(ch if ch.isalnum() or ch == "_" else "_" for ch in error_class)[:60] or "Unknown"


def count_failure(prefix: str, error_class: str, tags: dict[str, str] | None = None) -> None:
    """``{prefix}.failed.count`` and ``{prefix}.failed.<ErrorClass>.count``, both survive plain StatsD."""
    error = _safe_name(error_class)
    Stats.incr(f"{prefix}.failed.count", tags={**(tags or {}), "error_class": error})
    Stats.incr(f"{prefix}.failed.{error}.count", tags=tags or {})


def batch_spend(cost: Decimal | None, currency: str | None, deferred_by_budget: int) -> None:
    """The batch-level spend metrics (cost only with a price table)."""
    if cost is not None:
        Stats.gauge(f"{BATCH_PREFIX}.cost", float(cost), tags={"currency": currency or ""})
    if deferred_by_budget:
        Stats.incr(f"{BATCH_PREFIX}.deferred_by_budget", deferred_by_budget)


class StatsObserver:
    """Emits one set of metrics per completion; a metrics backend problem never fails a task."""

    def succeeded(self, result: CompletionResult) -> None:
        tags = {"model": result.model, "transport": result.transport}
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
        Stats.incr(f"{PREFIX}.success.count", tags=tags)

    def failed(self, model: str, transport: str, error_class: str, attempts: int) -> None:
        tags = {"model": model, "transport": transport}
        if attempts > 1:
            Stats.incr(f"{PREFIX}.retries", attempts - 1, tags=tags)
        count_failure(PREFIX, error_class, tags)


_F = TypeVar("_F", bound=Callable[..., Any])
_T = TypeVar("_T")


def _counted(prefix: str, value: _T, *, poke: bool) -> _T:
    """Count a call that returned ``value``: ``success``, or for a poke ``ready`` (``True`` or a
    ``PokeReturnValue`` whose ``is_done`` is set) or ``not_ready``."""
    outcome = ("ready" if getattr(value, "is_done", value) else "not_ready") if poke else "success"
    Stats.incr(f"{prefix}.{outcome}.count")
    return value


@contextlib.contextmanager
def _failures_counted(prefix: str) -> Iterator[None]:
    """Count an exception leaving the block as ``failed`` (with its class) and let it propagate unchanged."""
    try:
        yield
    except BaseException as exc:
        count_failure(prefix, type(exc).__name__)
        raise


def count_call(prefix: str, call: Callable[[], _T], *, poke: bool = False) -> _T:
    """Run ``call`` and count it as one outcome, as ``count_outcomes`` does for a method: for a
    caller whose prefix is a class attribute (the sensor base), not known where it is defined."""
    with _failures_counted(prefix):
        return _counted(prefix, call(), poke=poke)


def count_outcomes(prefix: str, *, poke: bool = False) -> Callable[[_F], _F]:
    """Decorate an ``execute``/``aexecute``/``poke`` so each call counts as one outcome.

    Calls that return count as ``success`` (for ``poke=True``: ``ready`` or ``not_ready``), calls
    that raise as ``failed`` with the exception's class. The exception is re-raised unchanged.
    """

    def decorate(func: _F) -> _F:
        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                with _failures_counted(prefix):
                    return _counted(prefix, await func(*args, **kwargs), poke=poke)

            return async_wrapper  # type: ignore[return-value]

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            return count_call(prefix, functools.partial(func, *args, **kwargs), poke=poke)

        return wrapper  # type: ignore[return-value]

    return decorate
