"""``GenesysLLMGatewayTrigger``: wait in the triggerer until the gateway can take work.

The readiness decision (which statuses count, how many requests must be left, which errors mean
"not yet" and which mean "stop") lives in ``GatewayReadiness``, a small object with no I/O that
the sensor's poke path uses too, so the blocking and the deferrable paths cannot drift.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Unpack

from airflow.triggers.base import TriggerEvent

from ..client import CompletionResult, GatewayStatus
from ._polling import DeadlinePollingTrigger, PollingSettings, describe_error, worth_another_check

if TYPE_CHECKING:
    from ..hooks.genesys_llm import GenesysLLMHook

#: Prompt of the optional probe completion (a billed call, kept as short as possible).
DEFAULT_PROBE_PROMPT = "Reply with the single word OK."
#: Tokens the probe may generate: enough to see a first token, little to pay for.
DEFAULT_PROBE_MAX_TOKENS = 8


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
        return worth_another_check(exc)

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


@dataclass(frozen=True)
class GatewayCheck:
    """What the sensor and its trigger check: when the gateway counts as ready and whether to probe
    it. Validated once, here, whether the sensor builds it in a DAG file or the trigger in the
    triggerer. (The probe's prompt is not part of it: it is a templated, masked sensor field.)"""

    accept_degraded: bool = False
    min_remaining_requests: int = 1
    probe: bool = False
    probe_max_tokens: int = DEFAULT_PROBE_MAX_TOKENS

    def __post_init__(self) -> None:
        self.readiness()  # validates the readiness settings where they are judged
        tokens = self.probe_max_tokens
        if isinstance(tokens, bool) or not isinstance(tokens, int) or tokens < 1:
            raise ValueError(f"probe_max_tokens must be an integer of at least 1, got {tokens!r}")

    def readiness(self) -> GatewayReadiness:
        """A fresh judge for one wait."""
        return GatewayReadiness(self.accept_degraded, self.min_remaining_requests)

    def kwargs(self) -> dict[str, Any]:
        """The settings as the trigger's keyword arguments."""
        return asdict(self)


class GenesysLLMGatewayTrigger(DeadlinePollingTrigger[GatewayReadiness]):
    """Poll the gateway status until it is ready, the deadline passes, or a permanent error occurs.

    Yields exactly one event: ``{"status": "success", "summary": {...}}``,
    ``{"status": "timeout", "message": ..., "summary": {...}}`` or
    ``{"status": "error", "message": ..., "error_type": ...}``.

    Each status check is one attempt (no client retries): the next poll is the retry. Deadline and
    backoff: see ``DeadlinePollingTrigger``.

    :param probe: once ready, run one tiny completion (a billed call) and report its latencies.
    """

    def __init__(
        self,
        *,
        accept_degraded: bool = False,
        min_remaining_requests: int = 1,
        probe: bool = False,
        probe_prompt: str = DEFAULT_PROBE_PROMPT,
        probe_max_tokens: int = DEFAULT_PROBE_MAX_TOKENS,
        **polling: Unpack[PollingSettings],
    ) -> None:
        super().__init__(**polling)
        self.check = GatewayCheck(accept_degraded, min_remaining_requests, probe, probe_max_tokens)
        self.probe_prompt = probe_prompt

    def serialize(self) -> tuple[str, dict[str, Any]]:
        """The connection id and plain settings; never a credential or token."""
        return (
            "airflow_provider_genesys_llm.triggers.gateway.GenesysLLMGatewayTrigger",
            {
                **self._polling_kwargs(),
                **self.check.kwargs(),
                "probe_prompt": self.probe_prompt,
            },
        )

    def _new_state(self) -> GatewayReadiness:
        return self.check.readiness()

    async def _check(self, hook: GenesysLLMHook, readiness: GatewayReadiness) -> TriggerEvent | None:
        try:
            status = await asyncio.wait_for(hook.aget_status(retry=False), self._check_timeout())
        except Exception as exc:
            if not readiness.observe_error(exc):
                return self._error_event(exc, "gateway status check failed")
            self.log.warning("Gateway status check failed (%s); not ready yet.", readiness.last_error)
            return None
        if readiness.observe(status):
            return await self._finish(hook, readiness)
        self.log.info("Gateway not ready: %s.", readiness.describe())
        return None

    def _timeout_event(self, readiness: GatewayReadiness) -> TriggerEvent:
        return TriggerEvent(
            {
                "status": "timeout",
                "message": self._timeout_message(readiness),
                "summary": readiness.summary(time.time() - self.started_at),
            }
        )

    async def _finish(self, hook: GenesysLLMHook, readiness: GatewayReadiness) -> TriggerEvent | None:
        """The success event, after the probe when one is asked for; None when a transient probe
        failure means the gateway is not ready after all."""
        latencies = None
        if self.check.probe:
            try:
                probe = hook.acomplete(probe_messages(self.probe_prompt), max_tokens=self.check.probe_max_tokens)
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
