"""The emulator's mutable state: config, armed faults, issued tokens, counters, rate windows.

All of it is touched only on the server's event loop (control requests run there, and
`EmulatorServer` hands its Python calls over to the loop), so no locks are needed and the
counters stay exact however many streams run at once.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import math
import secrets
import time
from collections import Counter, deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .config import ContactCenterConfig, EmulatorConfig
from .faults import FaultRule, Phase
from .quota import OrgQuota, QuotaCounters

if TYPE_CHECKING:
    from .validation import CompletionRequest

# Requests that make up `total`; the other counters count things inside those requests.
# Section 9 (analytics jobs, transcripts): one request counter per endpoint, named like its faults.
ANALYTICS_REQUEST_COUNTERS: tuple[str, ...] = (
    "analytics_jobs",
    "analytics_job_status",
    "analytics_job_delete",
    "analytics_results",
    "analytics_availability",
    "transcript_url",
    "transcript_download",
)
ANALYTICS_DETAIL_COUNTERS: tuple[str, ...] = (
    "jobs_submitted",
    "job_polls",
    "result_pages",
    "transcript_urls_issued",
    "transcript_downloads",
    "transcript_downloads_expired",
    "transcript_downloads_forbidden",
)
REQUEST_COUNTERS: tuple[str, ...] = (
    "oauth",
    "ws_upgrades",
    "sse",
    "embeddings",
    "status",
    "openai",
    *ANALYTICS_REQUEST_COUNTERS,
)
DETAIL_COUNTERS: tuple[str, ...] = (
    "ws_connections",
    "ws_requests",
    "embedding_inputs",
    "faults_fired",
    "control",
    *ANALYTICS_DETAIL_COUNTERS,
)
MAX_ANALYTICS_JOBS = 1000  # the oldest job is forgotten beyond this
REQUEST_ID_HISTORY = 10_000
PAYLOAD_HISTORY = 10_000
# Enough memory for `fail_first_attempt_ratio` to recognise a retry in any realistic test run.
SIGHTED_REQUEST_IDS = 100_000
RATE_WINDOW_SECONDS = 60.0


@dataclass
class IssuedToken:
    """An access token the OAuth endpoint handed out."""

    client_id: str
    scopes: frozenset[str]
    expires_at: float  # time.monotonic() deadline


@dataclass(frozen=True)
class RateLimitStatus:
    """The caller's position in its rate-limit window, as the inin-ratelimit-* headers say it."""

    count: int
    allowed: int
    reset_seconds: int


@dataclass
class _RateWindow:
    started: float
    count: int = 0


class Counters:
    """What the emulator has seen, for tests that assert on attempts, retries and fan-out."""

    def __init__(self) -> None:
        self.values: Counter[str] = Counter()
        self.request_ids: deque[dict[str, str]] = deque(maxlen=REQUEST_ID_HISTORY)
        self.ws_client_ids: Counter[str] = Counter()
        # Request payloads as they arrived, for tests that check what left the client (masking).
        self.payloads: deque[str] = deque(maxlen=PAYLOAD_HISTORY)
        self.quota = QuotaCounters()  # the organisation quota's refusals and the paid-for counts

    def note_payload(self, payload: bytes | str) -> None:
        """Keep one completion or embeddings request body (or WebSocket request message) as received."""
        self.payloads.append(payload if isinstance(payload, str) else payload.decode("utf-8", "replace"))

    def count_request(self, counter: str) -> None:
        """One request arrived at an endpoint (refused or not)."""
        self.values[counter] += 1
        self.values["total"] += 1

    def add(self, counter: str, amount: int = 1) -> None:
        """Count something that is not a request of its own (a socket message, an input, ...)."""
        self.values[counter] += amount

    def snapshot(self) -> dict[str, Any]:
        """A JSON-ready copy, every counter present even when zero."""
        names = ("total", *REQUEST_COUNTERS, *DETAIL_COUNTERS)
        return {
            **{name: self.values[name] for name in names},
            "ws_client_ids": dict(self.ws_client_ids),
            "request_ids": list(self.request_ids),
            **self.quota.snapshot(),
        }


class EmulatorState:
    """Everything a request handler reads or changes, plus the startup values reset returns to."""

    config: EmulatorConfig  # the live config; replaced (never mutated) so waiters can be told
    contact_center: ContactCenterConfig  # section 9 settings, also replaced, never mutated

    def __init__(
        self,
        config: EmulatorConfig,
        faults: Iterable[Mapping[str, Any]] = (),
        contact_center: ContactCenterConfig | None = None,
    ) -> None:
        self._startup_config = copy.deepcopy(config)
        self._startup_contact_center = copy.deepcopy(contact_center or ContactCenterConfig())
        # Section 9: analytics jobs by id (an `analytics.AnalyticsJob` each, oldest first), and
        # the key that signs transcript URLs (per process, like a real pre-signed URL's key).
        self.analytics_jobs: dict[str, Any] = {}
        self.transcript_url_key = secrets.token_bytes(32)
        self._startup_faults = [FaultRule.from_dict(rule).as_dict() for rule in faults]
        self.tokens: dict[str, IssuedToken] = {}
        self.faults: list[FaultRule] = []
        self.counters = Counters()
        self._sighted_request_ids: dict[str, None] = {}
        self._rate_windows: dict[str, _RateWindow] = {}
        self.quota = OrgQuota()
        self._config_changed = asyncio.Event()
        self.reset()

    def reset(self, *, tokens: bool = False) -> None:
        """Back to startup config and faults, zero counters; issued tokens stay unless `tokens`."""
        self._replace_config(copy.deepcopy(self._startup_config))
        self.contact_center = copy.deepcopy(self._startup_contact_center)
        self.analytics_jobs.clear()
        self.faults = [FaultRule.from_dict(rule) for rule in self._startup_faults]
        self.counters = Counters()
        self._sighted_request_ids.clear()
        self._rate_windows.clear()
        self.quota.reset_window()
        if tokens:
            self.tokens.clear()

    def configure(self, changes: Mapping[str, Any]) -> None:
        """Patch config fields; raises ValueError (and changes nothing) when one is bad.

        Fields of `ContactCenterConfig` (section 9) go there, all others to `EmulatorConfig`."""
        own = ContactCenterConfig.field_names()
        unknown = set(changes) - own - {item.name for item in dataclasses.fields(EmulatorConfig)}
        if unknown:
            known = sorted(own | {item.name for item in dataclasses.fields(EmulatorConfig)})
            raise ValueError(f"unknown config field {sorted(unknown)[0]!r}; known: {known}")
        gateway = {name: value for name, value in changes.items() if name not in own}
        config = self.config.patched(gateway) if gateway or not changes else None
        contact_center = self.contact_center.patched({name: changes[name] for name in changes if name in own})
        if config is not None:
            self._replace_config(config)
        self.contact_center = contact_center

    def config_changed(self) -> asyncio.Event:
        """Set at the next config change, for waits that depend on config (the idle timeout)."""
        return self._config_changed

    def _replace_config(self, config: EmulatorConfig) -> None:
        self.config = config
        self._config_changed.set()
        self._config_changed = asyncio.Event()

    def add_fault(self, rule: Mapping[str, Any]) -> FaultRule:
        """Arm a fault rule given as JSON; raises ValueError when it is malformed."""
        fault = FaultRule.from_dict(rule)
        self.faults.append(fault)
        return fault

    def draw_fault(
        self,
        endpoint: str,
        phase: Phase,
        request_id: str | None = None,
        first_sighting: bool = False,
        request: CompletionRequest | None = None,
    ) -> FaultRule | None:
        """The first armed rule that fires for this request, consuming one of its firings."""
        for rule in self.faults:
            if not rule.applies(endpoint, phase, request_id, first_sighting, request):
                continue
            if rule.skip:
                rule.skip -= 1
                continue
            if rule.count is not None:
                rule.count -= 1
                if rule.count == 0:
                    self.faults.remove(rule)
            self.counters.add("faults_fired")
            return rule
        return None

    def record_completion(self, endpoint: str, request_id: str) -> bool:
        """Log a completion request's id; True when this id was never seen before."""
        self.counters.request_ids.append({"endpoint": endpoint, "request_id": request_id})
        if request_id in self._sighted_request_ids:
            return False
        self._sighted_request_ids[request_id] = None
        if len(self._sighted_request_ids) > SIGHTED_REQUEST_IDS:
            del self._sighted_request_ids[next(iter(self._sighted_request_ids))]
        return True

    def issue_token(self, client_id: str, scopes: frozenset[str]) -> str:
        """A new opaque access token, valid for the configured lifetime."""
        token = secrets.token_urlsafe(32)
        self.tokens[token] = IssuedToken(client_id, scopes, time.monotonic() + self.config.token_lifetime)
        return token

    def authenticate(self, token: str | None) -> IssuedToken | None:
        """The live token behind a bearer value, or None when it is unknown or expired."""
        issued = self.tokens.get(token) if token else None
        if issued is None or issued.expires_at <= time.monotonic():
            return None
        return issued

    def expire_tokens(self) -> int:
        """Make every issued token invalid now; returns how many there were."""
        for issued in self.tokens.values():
            issued.expires_at = 0.0
        return len(self.tokens)

    def note_request(self, caller: str) -> RateLimitStatus:
        """Count a request against the caller's fixed one-minute window."""
        now = time.monotonic()
        window = self._rate_windows.get(caller)
        if window is None or now - window.started >= RATE_WINDOW_SECONDS:
            window = self._rate_windows[caller] = _RateWindow(now)
        window.count += 1
        reset_seconds = max(1, math.ceil(RATE_WINDOW_SECONDS - (now - window.started)))
        return RateLimitStatus(window.count, self.config.rate_limit_per_minute, reset_seconds)
