"""``GenesysLLMGatewayTrigger``: wait in the triggerer until the gateway can take work.

The readiness decision (which statuses count, how many requests must be left, which errors mean
"not yet" and which mean "stop") lives in ``GatewayReadiness``, a small object with no I/O that
the sensor's poke path uses too, so the blocking and the deferrable paths cannot drift.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from ..client import CompletionResult, GatewayError, GatewayStatus

if TYPE_CHECKING:
    from ..hooks.genesys_llm import GenesysLLMHook

#: Prompt of the optional probe completion (a billed call, kept as short as possible).
DEFAULT_PROBE_PROMPT = "Reply with the single word OK."
#: Tokens the probe may generate: enough to see a first token, little to pay for.
DEFAULT_PROBE_MAX_TOKENS = 8
#: A status check (or probe) may run this long even when the deadline is closer: the last check
#: at the deadline must get a real chance to answer instead of being cut at once.
MIN_CHECK_SECONDS = 5.0


def is_transient(exc: BaseException) -> bool:
    """True for errors that mean "not ready yet" (rate limited, unavailable, timed out, dropped);
    False for errors a later check cannot fix (credentials, permission, bad config, protocol)."""
    if isinstance(exc, GatewayError):
        return exc.retryable
    return isinstance(exc, TimeoutError)


def describe_error(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError) and not str(exc):
        return "TimeoutError: the check did not answer in time"
    return f"{type(exc).__name__}: {exc}"


def probe_latencies(result: CompletionResult) -> dict[str, float | None]:
    """What the probe measured: connection set-up (TCP, TLS, WebSocket handshake), time to first
    token and the whole completion, in milliseconds."""
    return {"connect_ms": result.connect_ms, "ttft_ms": result.ttft_ms, "total_ms": result.total_ms}


def probe_messages(prompt: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": prompt}]


@dataclass
class GatewayReadiness:
    """Judges status answers and errors; remembers what it saw for the summary and the timeout message.

    ``checks`` counts status checks, answered or failed.
    """

    accept_degraded: bool = False
    min_remaining_requests: int = 1
    checks: int = 0
    last_status: str | None = None
    last_remaining: int | None = None
    last_error: str | None = None
    accepted: frozenset[str] = field(init=False)

    def __post_init__(self) -> None:
        if isinstance(self.min_remaining_requests, bool) or not isinstance(self.min_remaining_requests, int):
            raise TypeError(f"min_remaining_requests must be an integer, got {self.min_remaining_requests!r}")
        if self.min_remaining_requests < 0:
            raise ValueError(f"min_remaining_requests must be at least 0, got {self.min_remaining_requests}")
        self.accepted = frozenset({"available", "degraded"} if self.accept_degraded else {"available"})

    def observe(self, status: GatewayStatus) -> bool:
        """Record one status answer; True when the gateway is ready."""
        self.checks += 1
        self.last_error = None
        self.last_status = status.status
        self.last_remaining = status.rate_limit.remaining if status.rate_limit else None
        return status.status in self.accepted and (
            self.last_remaining is None or self.last_remaining >= self.min_remaining_requests
        )

    def observe_error(self, exc: BaseException, *, probe: bool = False) -> bool:
        """Record a failed status check (or probe); True when it is transient (keep waiting)."""
        if not probe:
            self.checks += 1
        self.last_error = ("probe failed: " if probe else "") + describe_error(exc)
        return is_transient(exc)

    def describe(self) -> str:
        """The last thing seen, for logs and failure messages."""
        if self.last_status is None:
            text = "no status answer yet"
        else:
            remaining = "unknown" if self.last_remaining is None else str(self.last_remaining)
            text = (
                f"last status {self.last_status!r} (waiting for {' or '.join(sorted(self.accepted))}), "
                f"{remaining} requests remaining in the rate-limit window "
                f"(need at least {self.min_remaining_requests})"
            )
        text += f", after {self.checks} check(s)"
        if self.last_error:
            text += f"; the last attempt failed with {self.last_error}"
        return text

    def summary(self, waited_seconds: float, probe: dict[str, float | None] | None = None) -> dict[str, Any]:
        """The sensor's XCom value: small and JSON-ready."""
        summary: dict[str, Any] = {
            "status": self.last_status,
            "remaining": self.last_remaining,
            "checks": self.checks,
            "waited_seconds": round(max(0.0, waited_seconds), 3),
        }
        if probe is not None:
            summary["probe"] = probe
        return summary


class GenesysLLMGatewayTrigger(BaseTrigger):
    """Poll the gateway status until it is ready, the deadline passes, or a permanent error occurs.

    Yields exactly one event: ``{"status": "success", "summary": {...}}``,
    ``{"status": "timeout", "message": ..., "summary": {...}}`` or
    ``{"status": "error", "message": ..., "error_type": ...}``.

    Polls start ``poll_interval`` apart and double up to ``max_poll_interval``. Each status check
    is one attempt (no client retries): the next poll is the retry.

    :param deadline: wall-clock deadline (``time.time()`` epoch seconds). Wall clock on purpose:
        the trigger is serialized and may resume in another triggerer process, where a
        ``time.monotonic()`` value from this one would mean nothing.
    :param started_at: wall-clock time the sensor started waiting, for ``waited_seconds``.
    :param probe: once ready, run one tiny completion (a billed call) and report its latencies.
    """

    def __init__(
        self,
        *,
        genesys_llm_conn_id: str,
        deadline: float,
        accept_degraded: bool = False,
        min_remaining_requests: int = 1,
        poll_interval: float = 60.0,
        max_poll_interval: float = 60.0,
        started_at: float | None = None,
        probe: bool = False,
        probe_prompt: str = DEFAULT_PROBE_PROMPT,
        probe_max_tokens: int = DEFAULT_PROBE_MAX_TOKENS,
    ) -> None:
        super().__init__()
        if poll_interval <= 0:
            raise ValueError(f"poll_interval must be more than 0 seconds, got {poll_interval}")
        if max_poll_interval < poll_interval:
            raise ValueError(f"max_poll_interval ({max_poll_interval}) is below poll_interval ({poll_interval})")
        if probe_max_tokens < 1:
            raise ValueError(f"probe_max_tokens must be at least 1, got {probe_max_tokens}")
        GatewayReadiness(accept_degraded, min_remaining_requests)  # validates the two settings now
        self.genesys_llm_conn_id = genesys_llm_conn_id
        self.deadline = float(deadline)
        self.accept_degraded = accept_degraded
        self.min_remaining_requests = min_remaining_requests
        self.poll_interval = float(poll_interval)
        self.max_poll_interval = float(max_poll_interval)
        self.started_at = float(started_at) if started_at is not None else time.time()
        self.probe = probe
        self.probe_prompt = probe_prompt
        self.probe_max_tokens = probe_max_tokens

    def serialize(self) -> tuple[str, dict[str, Any]]:
        """The connection id and plain settings; never a credential or token."""
        return (
            "airflow_provider_genesys_llm.triggers.gateway.GenesysLLMGatewayTrigger",
            {
                "genesys_llm_conn_id": self.genesys_llm_conn_id,
                "deadline": self.deadline,
                "accept_degraded": self.accept_degraded,
                "min_remaining_requests": self.min_remaining_requests,
                "poll_interval": self.poll_interval,
                "max_poll_interval": self.max_poll_interval,
                "started_at": self.started_at,
                "probe": self.probe,
                "probe_prompt": self.probe_prompt,
                "probe_max_tokens": self.probe_max_tokens,
            },
        )

    def _check_timeout(self) -> float:
        return max(self.deadline - time.time(), MIN_CHECK_SECONDS)

    async def run(self) -> AsyncIterator[TriggerEvent]:
        """Poll with backoff and yield exactly one terminal event."""
        from ..hooks.genesys_llm import GenesysLLMHook

        readiness = GatewayReadiness(self.accept_degraded, self.min_remaining_requests)
        hook = GenesysLLMHook(self.genesys_llm_conn_id)
        try:
            try:
                # Reads the connection without blocking the event loop (a secrets backend lookup
                # would otherwise stall every trigger of this triggerer). The client is bound to
                # this loop; the hook's async methods (``aget_status``, ``acomplete``) share it.
                await hook.aget_async_client()
            except Exception as exc:
                yield self._error_event(exc, "could not set up the gateway client")
                return
            interval = self.poll_interval
            while True:
                try:
                    status = await asyncio.wait_for(hook.aget_status(retry=False), self._check_timeout())
                except Exception as exc:
                    if not readiness.observe_error(exc):
                        yield self._error_event(exc, "gateway status check failed")
                        return
                    self.log.warning("Gateway status check failed (%s); not ready yet.", readiness.last_error)
                else:
                    if readiness.observe(status):
                        event = await self._finish(hook, readiness)
                        if event is not None:
                            yield event
                            return
                    else:
                        self.log.info("Gateway not ready: %s.", readiness.describe())
                left = self.deadline - time.time()
                if left <= 0:
                    yield TriggerEvent(
                        {
                            "status": "timeout",
                            "message": self._timeout_message(readiness),
                            "summary": readiness.summary(time.time() - self.started_at),
                        }
                    )
                    return
                await asyncio.sleep(min(interval, left))
                interval = min(interval * 2, self.max_poll_interval)
        finally:
            await hook.aclose()

    async def _finish(self, hook: GenesysLLMHook, readiness: GatewayReadiness) -> TriggerEvent | None:
        """The success event, after the probe when one is asked for; None when a transient probe
        failure means the gateway is not ready after all."""
        latencies = None
        if self.probe:
            try:
                probe = hook.acomplete(probe_messages(self.probe_prompt), max_tokens=self.probe_max_tokens)
                result = await asyncio.wait_for(probe, self._check_timeout())
            except Exception as exc:
                if not readiness.observe_error(exc, probe=True):
                    return self._error_event(exc, "probe completion failed")
                self.log.warning("Probe completion failed (%s); not ready yet.", readiness.last_error)
                return None
            latencies = probe_latencies(result)
        summary = readiness.summary(time.time() - self.started_at, latencies)
        self.log.info("Gateway ready: %s", summary)
        return TriggerEvent({"status": "success", "summary": summary})

    def _timeout_message(self, readiness: GatewayReadiness) -> str:
        budget = self.deadline - self.started_at
        return f"Gateway {self.genesys_llm_conn_id!r} was not ready within {budget:.1f}s: {readiness.describe()}."

    def _error_event(self, exc: BaseException, what: str) -> TriggerEvent:
        return TriggerEvent(
            {
                "status": "error",
                "message": f"{what} on connection {self.genesys_llm_conn_id!r}: {describe_error(exc)}",
                "error_type": type(exc).__name__,
            }
        )
