"""Client-side limits: request validation (protocol section 8) and traffic shaping.

Checking limits here, before any network call, is what keeps a bad item from costing money or
burning the shared rate limit; the shaping objects are per client so every stream of a task
shares one budget.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Iterable, Sequence
from typing import Any

from pydantic import ValidationError

from .config import GatewayConfig
from .errors import AnswerTooLargeError, RequestValidationError
from .models import CompletionRequest

#: Characters per token used to estimate prompt size when no tokenizer is at hand (tutorial 003).
CHARS_PER_TOKEN = 4.0


def estimate_tokens(text_parts: Iterable[str]) -> int:
    return math.ceil(sum(len(part) for part in text_parts) / CHARS_PER_TOKEN)


def _prompt_parts(request: CompletionRequest) -> list[str]:
    parts = [m.content for m in request.messages]
    if request.system:
        parts.append(request.system)
    if request.variables:
        parts.extend(request.variables.values())
    return parts


def validate_request(request: CompletionRequest, config: GatewayConfig) -> CompletionRequest:
    """Raise ``RequestValidationError`` naming field, value and limit; return the request unchanged."""
    limits = config.limits_for(request.model)
    if not request.messages and not request.prompt_id:
        raise RequestValidationError("request has neither messages nor prompt_id: nothing to complete")
    if request.transport == "sse" and not request.messages:
        raise RequestValidationError(
            "transport 'sse' needs messages; prompt_id templates are served over 'websocket' only"
        )
    max_temperature = limits.max_temperature_sse if request.transport == "sse" else limits.max_temperature_websocket
    if not 0.0 <= request.temperature <= max_temperature:
        raise RequestValidationError(
            f"temperature {request.temperature} is outside 0.0..{max_temperature} "
            f"for transport {request.transport!r} and model {request.model!r}"
        )
    if not 1 <= request.max_tokens <= limits.max_tokens:
        raise RequestValidationError(
            f"max_tokens {request.max_tokens} is outside 1..{limits.max_tokens} (capacity of model {request.model!r})"
        )
    prompt_tokens = estimate_tokens(_prompt_parts(request))
    if prompt_tokens > limits.context_tokens:
        raise RequestValidationError(
            f"prompt is about {prompt_tokens} tokens, over the {limits.context_tokens}-token "
            f"context window of model {request.model!r}"
        )
    return request


def build_request(config: GatewayConfig, **fields: Any) -> CompletionRequest:
    """Make and validate a request, turning pydantic's errors into one that names the field."""
    fields = {key: value for key, value in fields.items() if value is not None}
    fields.setdefault("model", config.model)
    fields.setdefault("transport", config.transport)
    messages = fields.get("messages")
    if isinstance(messages, str):
        raise RequestValidationError("messages must be a list of {role, content} dicts, not a string")
    if isinstance(fields.get("stop_sequences"), str):
        fields["stop_sequences"] = (fields["stop_sequences"],)
    try:
        request = CompletionRequest(**fields)
    except ValidationError as exc:
        raise RequestValidationError(_describe(exc)) from None
    return validate_request(request, config)


def _describe(exc: ValidationError) -> str:
    problems = []
    for error in exc.errors(include_input=False, include_url=False):
        where = ".".join(str(part) for part in error["loc"]) or "request"
        problems.append(f"{where}: {error['msg']}")
    return "invalid request: " + "; ".join(problems)


def expand_temperatures(config: GatewayConfig, temperatures: Sequence[float], **fields: Any) -> list[CompletionRequest]:
    """Tutorial 000's ``temperature_matrix``: one request (and one request id) per value."""
    if isinstance(temperatures, (str, bytes)) or not temperatures:
        raise RequestValidationError("temperature matrix must be a non-empty list of numbers")
    return [build_request(config, **fields, temperature=value) for value in temperatures]


class RequestRateLimiter:
    """Token bucket over requests per minute, shared by every request of one client.

    Waiting callers queue on one lock so a burst drains in order instead of stampeding.
    """

    def __init__(self, requests_per_minute: float, burst: int | None = None) -> None:
        self._rate = requests_per_minute / 60.0
        self._capacity = float(burst if burst is not None else max(1, int(requests_per_minute // 6)))
        self._tokens = self._capacity
        self._updated = time.monotonic()
        self._lock = asyncio.Lock()

    async def acquire(self) -> float:
        """Take one request slot; return the seconds spent waiting for it."""
        waited = 0.0
        async with self._lock:
            while True:
                now = time.monotonic()
                self._tokens = min(self._capacity, self._tokens + (now - self._updated) * self._rate)
                self._updated = now
                if self._tokens >= 1.0:
                    self._tokens -= 1.0
                    return waited
                delay = (1.0 - self._tokens) / self._rate
                waited += delay
                await asyncio.sleep(delay)


class AnswerBound:
    """How much one attempt's answer may grow: frames and UTF-8 bytes, checked per frame.

    An endless or oversized answer must end with a typed error while the client's memory stays
    flat, and a gateway that ignores ``max_tokens`` must not get paid for it twice: the bound is
    ``max_tokens + answer_token_margin`` frames (each frame carries at most one token; the margin
    also covers frames without text) and that times ``answer_bytes_per_token`` bytes.
    """

    __slots__ = ("bytes_left", "frames_left", "max_bytes", "max_frames")

    def __init__(self, config: GatewayConfig, request: CompletionRequest) -> None:
        self.max_frames = request.max_tokens + config.answer_token_margin
        self.max_bytes = self.max_frames * config.answer_bytes_per_token
        self.frames_left = self.max_frames
        self.bytes_left = self.max_bytes

    def take(self, text: str) -> None:
        """Count one frame; ``AnswerTooLargeError`` once the answer is over its bound."""
        self.frames_left -= 1
        self.bytes_left -= len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))
        if self.frames_left < 0 or self.bytes_left < 0:
            what = f"{self.max_frames} frames" if self.frames_left < 0 else f"{self.max_bytes} bytes"
            raise AnswerTooLargeError(
                f"answer exceeded {what} (max_tokens plus answer_token_margin; answer_bytes_per_token per token); "
                "the stream was closed"
            )
