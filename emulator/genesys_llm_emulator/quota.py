"""The organisation-wide quota of the emulated gateway, and what it counts about paid work.

A real gateway limits the organisation, not one client or token: concurrent streams and
completion requests per minute are shared by every worker of a fleet. Tests of fleet-wide
coordination need that limit (so that too many streams really get `429` with `Retry-After`)
and need to see what the fleet paid for: how often each request id and each prompt was
generated, the most streams that ever ran at once, and how many quota refusals were sent.

A "stream" is one completion being generated (a WebSocket request, an SSE or OpenAI call),
from admission to its last event. A completion counts as paid once the gateway starts
generating an answer its script finishes (refusals before generation are free, as are
attempts that fail or drop before the final frame).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import secrets
import time
from collections import Counter, deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .config import EmulatorConfig
from .validation import CompletionRequest

if TYPE_CHECKING:  # plan.py imports state.py, which imports this module
    from .plan import CompletionPlan

RATE_WINDOW_SECONDS = 60.0
#: Entries kept per paid-for map; the oldest are dropped beyond this (memory stays bounded).
PAID_HISTORY = 200_000
QUOTA_MESSAGE = "Organisation quota exceeded: {what}. Retry the request after Retry-After seconds."


#: Key of the prompt fingerprints, per emulator process: stable for counting, useless for guessing
#: prompts from a counters snapshot (a plain hash of a templated prompt is a dictionary attack).
_PROMPT_KEY = secrets.token_bytes(32)


def prompt_hash(request: CompletionRequest) -> str:
    """A keyed digest of everything the model reads: equal prompts from different workers collide."""
    document = {
        "model": request.model,
        "system": request.system,
        "prompt_id": request.prompt_id,
        "messages": [[message.role, message.content] for message in request.messages],
        "variables": dict(request.variables),
    }
    canonical = json.dumps(document, sort_keys=True, ensure_ascii=False, default=str)
    return hmac.new(_PROMPT_KEY, canonical.encode("utf-8"), hashlib.sha256).hexdigest()[:32]


class QuotaCounters:
    """Counters of the quota and of paid work; part of `Counters`, so a reset clears them."""

    def __init__(self) -> None:
        self.paid_by_request_id: Counter[str] = Counter()
        self.paid_by_prompt_hash: Counter[str] = Counter()
        self.max_concurrent_streams = 0
        self.quota_429s = 0

    def note_paid(self, request: CompletionRequest) -> None:
        pairs = ((self.paid_by_request_id, request.request_id), (self.paid_by_prompt_hash, prompt_hash(request)))
        for counter, key in pairs:
            counter[key] += 1
            if len(counter) > PAID_HISTORY:
                del counter[next(iter(counter))]

    def snapshot(self) -> dict[str, Any]:
        return {
            "completions_paid": sum(self.paid_by_request_id.values()),
            "paid_twice_request_ids": sum(1 for n in self.paid_by_request_id.values() if n > 1),
            "paid_twice_prompts": sum(1 for n in self.paid_by_prompt_hash.values() if n > 1),
            "paid_by_request_id": dict(self.paid_by_request_id),
            "paid_by_prompt_hash": dict(self.paid_by_prompt_hash),
            "max_concurrent_streams": self.max_concurrent_streams,
            "quota_429s": self.quota_429s,
        }


@dataclass(frozen=True)
class QuotaRefusal:
    """Why a stream was turned away and when to come back (whole seconds, as Retry-After says)."""

    what: str
    retry_after: int

    @property
    def message(self) -> str:
        return QUOTA_MESSAGE.format(what=self.what)


class StreamTicket:
    """One admitted stream: holds a concurrent-stream place until `release` (idempotent)."""

    def __init__(self, quota: OrgQuota, counters: QuotaCounters, request: CompletionRequest) -> None:
        self._quota = quota
        self._counters = counters
        self._request = request
        self._held = True

    def planned(self, plan: CompletionPlan) -> None:
        """Count the completion as paid when its script generates a whole answer."""
        from .plan import Final  # deferred: see the TYPE_CHECKING import

        if plan.refusal is None and any(isinstance(event, Final) for event in plan.events):
            self._counters.note_paid(self._request)

    def release(self) -> None:
        if self._held:
            self._held = False
            self._quota.in_flight -= 1

    async def held_during(self, events: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
        """Pass a response body through, releasing the place when it ends or is abandoned."""
        try:
            async for chunk in events:
                yield chunk
        finally:
            self.release()


class OrgQuota:
    """Streams in flight and the organisation's sliding one-minute request window.

    Lives on `EmulatorState` (not in `Counters`): a counter reset must not forget streams that
    are still running, or their end would drive the count below zero.
    """

    def __init__(self) -> None:
        self.in_flight = 0
        self._window: deque[float] = deque()

    def reset_window(self) -> None:
        self._window.clear()

    def admit(
        self, config: EmulatorConfig, counters: QuotaCounters, request: CompletionRequest
    ) -> StreamTicket | QuotaRefusal:
        """A ticket for a new stream, or the refusal to answer with `429` + `Retry-After`."""
        now = time.monotonic()
        while self._window and now - self._window[0] >= RATE_WINDOW_SECONDS:
            self._window.popleft()
        refusal = None
        if config.org_max_concurrent_streams and self.in_flight >= config.org_max_concurrent_streams:
            limit = config.org_max_concurrent_streams
            refusal = QuotaRefusal(f"{limit} concurrent streams", math.ceil(config.org_retry_after_seconds))
        elif config.org_requests_per_minute and len(self._window) >= config.org_requests_per_minute:
            wait = RATE_WINDOW_SECONDS - (now - self._window[0])
            refusal = QuotaRefusal(f"{config.org_requests_per_minute} requests per minute", max(1, math.ceil(wait)))
        if refusal is not None:
            counters.quota_429s += 1
            return refusal
        self._window.append(now)
        self.in_flight += 1
        counters.max_concurrent_streams = max(counters.max_concurrent_streams, self.in_flight)
        return StreamTicket(self, counters, request)


def quota_frame_error(refusal: QuotaRefusal) -> dict[str, Any]:
    """The WebSocket error of a refused request (section 4, step 5): retried after `retry_after`."""
    return {"error": {"code": "rate_limited", "message": refusal.message, "retry_after": float(refusal.retry_after)}}
