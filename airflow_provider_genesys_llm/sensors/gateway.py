"""``GenesysLLMGatewaySensor``: hold downstream work until the gateway can take it."""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import timedelta
from functools import cached_property
from typing import TYPE_CHECKING, Any, ClassVar

from airflow.sdk import BaseSensorOperator, PokeReturnValue, conf
from airflow.sdk.exceptions import AirflowException, AirflowSensorTimeout

from ..governance.masking import PiiMasker
from ..hooks.genesys_llm import GenesysLLMHook
from ..operators.metrics import GATEWAY_CHECK, count_outcomes  # issue 11: outcome metrics
from ..operators.rendered_fields import MaskedRenderedFieldsMixin
from ..triggers.gateway import (
    DEFAULT_PROBE_MAX_TOKENS,
    DEFAULT_PROBE_PROMPT,
    GatewayReadiness,
    GenesysLLMGatewayTrigger,
    probe_latencies,
    probe_messages,
)

if TYPE_CHECKING:
    from airflow.sdk import Context

#: Cap on the wait between checks with ``exponential_backoff=True`` when ``max_wait`` is unset.
DEFAULT_MAX_POLL_INTERVAL = 600.0
#: The deferral's own timeout runs this much past the trigger's deadline, so the trigger's
#: timeout event (which names the last status) arrives first; the deferral timeout is a backstop.
DEFERRAL_GRACE_SECONDS = 60.0


class GenesysLLMGatewaySensor(MaskedRenderedFieldsMixin, BaseSensorOperator):
    """Wait until the gateway reports ``available`` and its rate-limit window has room.

    Ready means: status ``available`` (or ``degraded`` with ``accept_degraded=True``) and at least
    ``min_remaining_requests`` requests left in the caller's window (``rate_limit.remaining``; a
    status without it satisfies that condition). Rate-limited, unavailable, timed-out or dropped
    checks count as "not ready yet", and each check is one attempt (the next check is the retry);
    credential, permission and configuration errors fail at once.

    Returns (XCom) ``{"status", "remaining", "checks", "waited_seconds"}``, plus
    ``"probe": {"connect_ms", "ttft_ms", "total_ms"}`` when probed. ``checks`` counts the checks of
    this attempt (of this trigger run, when deferred; of this try, in reschedule mode).

    :param genesys_llm_conn_id: the ``genesys_llm`` connection.
    :param accept_degraded: also accept status ``degraded``.
    :param min_remaining_requests: requests that must be left in the rate-limit window.
    :param probe: once ready, run one tiny completion and report connect (TCP, TLS and WebSocket
        handshake) time, time to first token and total time. **A probe is a billed call.**
    :param probe_prompt: the probe's user message.
    :param probe_max_tokens: the probe's ``max_tokens``.
    :param deferrable: wait in the triggerer instead of a worker slot. The trigger checks first
        at once, then ``poke_interval`` apart; with ``exponential_backoff=True`` the interval
        doubles up to ``max_wait`` (default 600 s), in both modes.

    ``timeout`` bounds the wait in every mode; when it runs out the task fails with
    ``AirflowSensorTimeout`` naming the last status and remaining count.
    """

    template_fields: Sequence[str] = ("genesys_llm_conn_id", "probe_prompt")
    masked_template_fields: ClassVar[tuple[str, ...]] = ("probe_prompt",)
    preview_masker = PiiMasker()

    def __init__(
        self,
        *,
        genesys_llm_conn_id: str = GenesysLLMHook.default_conn_name,
        accept_degraded: bool = False,
        min_remaining_requests: int = 1,
        probe: bool = False,
        probe_prompt: str = DEFAULT_PROBE_PROMPT,
        probe_max_tokens: int = DEFAULT_PROBE_MAX_TOKENS,
        deferrable: bool = conf.getboolean("operators", "default_deferrable", fallback=False),
        **kwargs: Any,
    ) -> None:
        if kwargs.get("exponential_backoff") and kwargs.get("max_wait") is None:
            kwargs["max_wait"] = DEFAULT_MAX_POLL_INTERVAL
        super().__init__(**kwargs)
        GatewayReadiness(accept_degraded, min_remaining_requests)  # validates both now, not at run time
        if isinstance(probe_max_tokens, bool) or not isinstance(probe_max_tokens, int) or probe_max_tokens < 1:
            raise ValueError(f"probe_max_tokens must be an integer of at least 1, got {probe_max_tokens!r}")
        if deferrable and self.poke_interval <= 0:
            raise ValueError("a deferrable GenesysLLMGatewaySensor needs poke_interval > 0")
        self.genesys_llm_conn_id = genesys_llm_conn_id
        self.accept_degraded = accept_degraded
        self.min_remaining_requests = min_remaining_requests
        self.probe = probe
        self.probe_prompt = probe_prompt
        self.probe_max_tokens = probe_max_tokens
        self.deferrable = deferrable
        self._readiness: GatewayReadiness | None = None
        self._started: float | None = None

    @cached_property
    def hook(self) -> GenesysLLMHook:
        """One hook for the whole wait, so checks reuse its token and connections."""
        return GenesysLLMHook(self.genesys_llm_conn_id)

    def _state(self) -> GatewayReadiness:
        if self._readiness is None:
            self._readiness = GatewayReadiness(self.accept_degraded, self.min_remaining_requests)
            self._started = time.monotonic()
        return self._readiness

    # --- poke (and reschedule) mode -------------------------------------------------------

    def execute(self, context: Context) -> Any:
        if self.deferrable:
            self._defer()
        self._readiness = None
        try:
            return super().execute(context)
        except AirflowSensorTimeout as exc:
            raise AirflowSensorTimeout(
                f"{exc} Gateway {self.genesys_llm_conn_id!r} was not ready: {self._state().describe()}."
            ) from None
        finally:
            if "hook" in self.__dict__:
                self.hook.close()

    @count_outcomes(GATEWAY_CHECK, poke=True)  # issue 11
    def poke(self, context: Context) -> bool | PokeReturnValue:
        readiness = self._state()
        try:
            status = self.hook.get_status(retry=False)  # the next poke is the retry
        except Exception as exc:
            if not readiness.observe_error(exc):
                raise
            self.log.warning("Gateway status check failed (%s); not ready yet.", readiness.last_error)
            return False
        if not readiness.observe(status):
            self.log.info("Gateway not ready: %s.", readiness.describe())
            return False
        latencies = None
        if self.probe:
            try:
                prompt = self.raw_field("probe_prompt")
                result = self.hook.complete(probe_messages(prompt), max_tokens=self.probe_max_tokens)
            except Exception as exc:
                if not readiness.observe_error(exc, probe=True):
                    raise
                self.log.warning("Probe completion failed (%s); not ready yet.", readiness.last_error)
                return False
            latencies = probe_latencies(result)
        assert self._started is not None
        summary = readiness.summary(time.monotonic() - self._started, latencies)
        self.log.info("Gateway ready: %s", summary)
        return PokeReturnValue(is_done=True, xcom_value=summary)

    # --- deferrable mode ------------------------------------------------------------------

    def _defer(self) -> None:
        now = time.time()
        max_poll = self.max_wait.total_seconds() if self.exponential_backoff and self.max_wait else 0.0
        self.defer(
            trigger=GenesysLLMGatewayTrigger(
                genesys_llm_conn_id=self.genesys_llm_conn_id,
                deadline=now + self.timeout,
                started_at=now,
                accept_degraded=self.accept_degraded,
                min_remaining_requests=self.min_remaining_requests,
                poll_interval=self.poke_interval,
                max_poll_interval=max(self.poke_interval, max_poll),
                probe=self.probe,
                # Masked: the trigger's arguments are stored in Airflow's database, and the gateway
                # would receive the masked prompt anyway.
                probe_prompt=self.probe_prompt,
                probe_max_tokens=self.probe_max_tokens,
            ),
            method_name="execute_complete",
            timeout=timedelta(seconds=self.timeout + DEFERRAL_GRACE_SECONDS),
        )

    @count_outcomes(GATEWAY_CHECK, poke=True)  # issue 11
    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> dict[str, Any]:
        """Resume after the trigger: return its summary, or fail with its message."""
        if not event:
            raise AirflowException("the gateway trigger ended without an event")
        status = event.get("status")
        if status == "success":
            self.log.info("Gateway ready: %s", event["summary"])
            return event["summary"]
        message = event.get("message") or f"the gateway trigger ended with status {status!r}"
        if status == "timeout":
            raise AirflowSensorTimeout(message)
        raise AirflowException(message)
