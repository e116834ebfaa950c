"""``GenesysLLMGatewaySensor``: hold downstream work until the gateway can take it."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Unpack

from airflow.sdk import PokeReturnValue, conf

from ..governance.masking import PiiMasker
from ..hooks.genesys_llm import GenesysLLMHook
from ..metrics import GATEWAY_CHECK
from ..rendered_fields import MaskedRenderedFieldsMixin
from ..triggers.gateway import (
    DEFAULT_PROBE_MAX_TOKENS,
    DEFAULT_PROBE_PROMPT,
    GatewayCheck,
    GatewayReadiness,
    GenesysLLMGatewayTrigger,
    probe_latencies,
    probe_messages,
)
from ._polling import DeadlinePollingSensor

if TYPE_CHECKING:
    from airflow.sdk import Context

    from ..triggers._polling import PollingSettings


class GenesysLLMGatewaySensor(MaskedRenderedFieldsMixin, DeadlinePollingSensor[GatewayReadiness]):
    """Wait until the gateway reports ``available`` and its rate-limit window has room.

    Ready means: status ``available`` (or ``degraded`` with ``accept_degraded=True``) and at least
    ``min_remaining_requests`` requests left in the caller's window (``rate_limit.remaining``; a
    status without it satisfies that condition). Rate-limited, unavailable, timed-out or dropped
    checks count as "not ready yet", and each check is one attempt (the next check is the retry);
    credential, permission and configuration errors fail at once.

    Returns (XCom) ``{"status", "remaining", "checks", "waited_seconds"}``, plus
    ``"probe": {"connect_ms", "ttft_ms", "total_ms"}`` when probed. ``checks`` counts the checks of
    this attempt (of this trigger run, when deferred; of this try, in reschedule mode).

    :param genesys_llm_conn_id: the ``genesys_llm`` connection, templated.
        Default ``"genesys_llm_default"``.
    :param accept_degraded: also accept status ``degraded`` (the gateway serves, but reports
        reduced service). Default ``False``; ``True`` for work that must start anyway.
    :param min_remaining_requests: requests that must be left in the caller's rate-limit window, so
        a batch does not start into a 429; at least 0. Default 1; raise it to about the batch's
        first burst (its concurrency).
    :param probe: once ready, run one tiny completion and report connect (TCP, TLS and WebSocket
        handshake) time, time to first token and total time; a probe that fails transiently counts
        as "not ready yet". **A probe is a billed call.** Default ``False``.
    :param probe_prompt: the probe's user message, templated; masked before it is sent, in the
        rendered-template store and in the trigger's stored arguments.
        Default ``"Reply with the single word OK."``.
    :param probe_max_tokens: the probe's ``max_tokens``: enough to see a first token, little to pay
        for; an integer of at least 1. Default 8.
    :param deferrable: wait in the triggerer instead of a worker slot. The trigger checks first
        at once, then ``poke_interval`` apart; with ``exponential_backoff=True`` the interval
        doubles up to ``max_wait`` (default 600 s), in both modes. Default: the
        ``[operators] default_deferrable`` setting (``False``).

    ``timeout`` bounds the wait in every mode; when it runs out the task fails with
    ``AirflowSensorTimeout`` naming the last status and remaining count.
    """

    template_fields: Sequence[str] = ("genesys_llm_conn_id", "probe_prompt")
    masked_template_fields: ClassVar[tuple[str, ...]] = ("probe_prompt",)
    preview_masker = PiiMasker()
    trigger_name = "the gateway trigger"
    done_message = "Gateway ready"
    metric_prefix = GATEWAY_CHECK

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
        super().__init__(genesys_llm_conn_id=genesys_llm_conn_id, deferrable=deferrable, **kwargs)
        # Validated now, when the DAG is parsed, not at run time.
        self.check = GatewayCheck(accept_degraded, min_remaining_requests, probe, probe_max_tokens)
        self.probe_prompt = probe_prompt

    def _new_state(self) -> GatewayReadiness:
        return self.check.readiness()

    def _not_done(self, state: GatewayReadiness) -> str:
        return f"Gateway {self.genesys_llm_conn_id!r} was not ready: {state.describe()}"

    def _check(self, context: Context) -> bool | PokeReturnValue:
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
        if self.check.probe:
            try:
                prompt = self.raw_field("probe_prompt")
                result = self.hook.complete(probe_messages(prompt), max_tokens=self.check.probe_max_tokens)
            except Exception as exc:
                if not readiness.observe_error(exc, probe=True):
                    raise
                self.log.warning("Probe completion failed (%s); not ready yet.", readiness.last_error)
                return False
            latencies = probe_latencies(result)
        summary = readiness.summary(self._waited(), latencies)
        self.log.info("Gateway ready: %s", summary)
        return PokeReturnValue(is_done=True, xcom_value=summary)

    def _trigger(self, **polling: Unpack[PollingSettings]) -> GenesysLLMGatewayTrigger:
        return GenesysLLMGatewayTrigger(
            **polling,
            **self.check.kwargs(),
            # Masked: the trigger's arguments are stored in Airflow's database, and the gateway
            # would receive the masked prompt anyway.
            probe_prompt=self.probe_prompt,
        )
