"""Settings of the gateway emulator, changeable while it runs.

Tests steer the emulator through these fields (slower tokens, shorter token lifetimes, a
degraded status, ...), so every field can be patched at runtime from JSON through the control
API; `EmulatorConfig.patched` is the one place that turns JSON values into typed settings and
rejects anything malformed, so a typo in a test fails loudly instead of being ignored.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any, Literal

SCOPE_USE = "ai:llm:gateway:use"
SCOPE_STREAM = "ai:llm:gateway:stream"
SCOPE_PROMPT_READ = "ai:llm:prompt:read"
SCOPE_GENERATION_WRITE = "ai:generation:write"
ALL_SCOPES: tuple[str, ...] = (SCOPE_USE, SCOPE_STREAM, SCOPE_PROMPT_READ, SCOPE_GENERATION_WRITE)

GATEWAY_STATUSES: tuple[str, ...] = ("available", "degraded", "unavailable")

ModelKind = Literal["completion", "embedding"]

# Section 9: the states of an analytics conversation-detail job, and the final ones.
JOB_STATES: tuple[str, ...] = ("QUEUED", "PENDING", "FULFILLED", "FAILED", "CANCELLED", "EXPIRED")
JOB_OUTCOMES: tuple[str, ...] = ("FULFILLED", "FAILED", "CANCELLED", "EXPIRED")


@dataclass(frozen=True)
class ClientCredentials:
    """An OAuth client the emulator knows: its secret and the scopes it may be granted."""

    secret: str
    scopes: frozenset[str] = frozenset(ALL_SCOPES)


@dataclass(frozen=True)
class ModelSpec:
    """A model the gateway serves; `max_tokens`/`context_tokens` only matter for completions."""

    kind: ModelKind = "completion"
    max_tokens: int = 4096
    context_tokens: int = 8192


def default_clients() -> dict[str, ClientCredentials]:
    """The two clients every test and tutorial snippet can use without setup."""
    return {"id": ClientCredentials("secret"), "emulator-client": ClientCredentials("emulator-secret")}


def default_models() -> dict[str, ModelSpec]:
    """The chat model of the tutorials and the embedding model the vector store needs."""
    return {
        "genesys-llm-v2": ModelSpec("completion", max_tokens=4096, context_tokens=8192),
        "genesys-embed-v1": ModelSpec("embedding", max_tokens=0, context_tokens=8192),
    }


@dataclass
class EmulatorConfig:
    """Everything about the emulator's behaviour that is not a fault rule."""

    clients: dict[str, ClientCredentials] = field(default_factory=default_clients)
    token_lifetime: int = 86400
    token_delay: float = 0.0
    completion_tokens: int = 48
    embedding_dim: int = 384
    status: str = "available"
    models: dict[str, ModelSpec] = field(default_factory=default_models)
    rate_limit_per_minute: int = 300
    enforce_rate_limit: bool = False
    idle_timeout: float = 60.0
    max_embedding_inputs: int = 256
    # Organisation-wide quota over every client and token (quota.py); 0 switches a limit off.
    org_max_concurrent_streams: int = 0
    org_requests_per_minute: int = 0
    org_retry_after_seconds: float = 1.0  # Retry-After of a concurrent-stream refusal

    @property
    def max_tokens_limit(self) -> int:
        """The largest completion capacity, announced in `stream_ready`."""
        return max((m.max_tokens for m in self.models.values() if m.kind == "completion"), default=0)

    def completion_model(self, model_id: str) -> ModelSpec | None:
        """The completion model called `model_id`, or None when there is no such model."""
        model = self.models.get(model_id)
        return model if model is not None and model.kind == "completion" else None

    def patched(self, changes: Mapping[str, Any]) -> EmulatorConfig:
        """A copy with `changes` applied; raises ValueError naming the first bad field."""
        converted: dict[str, Any] = {}
        for name, value in changes.items():
            converter = _CONVERTERS.get(name)
            if converter is None:
                raise ValueError(f"unknown config field {name!r}; known: {sorted(_CONVERTERS)}")
            try:
                converted[name] = converter(value)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"config field {name!r}: {exc}") from exc
        return dataclasses.replace(self, **converted)


def _integer(minimum: int) -> Callable[[Any], int]:
    def convert(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"expected an integer, got {value!r}")
        if value < minimum:
            raise ValueError(f"must be at least {minimum}, got {value}")
        return value

    return convert


def _number(*, allow_zero: bool) -> Callable[[Any], float]:
    def convert(value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"expected a number, got {value!r}")
        if value < 0 or (value == 0 and not allow_zero):
            raise ValueError(f"must be {'at least' if allow_zero else 'more than'} 0, got {value}")
        return float(value)

    return convert


def _boolean(value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"expected true or false, got {value!r}")
    return value


def _status(value: Any) -> str:
    if value not in GATEWAY_STATUSES:
        raise ValueError(f"expected one of {GATEWAY_STATUSES}, got {value!r}")
    return str(value)


def _scopes(value: Iterable[str] | None) -> frozenset[str]:
    if value is None:
        return frozenset(ALL_SCOPES)
    if isinstance(value, str) or not all(isinstance(scope, str) for scope in value):
        raise TypeError(f"scopes must be a list of strings, got {value!r}")
    return frozenset(value)


def _client(value: Any) -> ClientCredentials:
    """Accepts `ClientCredentials`, `(secret, scopes)`, `{"secret", "scopes"}` or a bare secret."""
    if isinstance(value, ClientCredentials):
        return value
    if isinstance(value, str):
        return ClientCredentials(value)
    if isinstance(value, Mapping):
        return ClientCredentials(str(value["secret"]), _scopes(value.get("scopes")))
    if isinstance(value, (list, tuple)) and len(value) == 2 and isinstance(value[0], str):
        return ClientCredentials(value[0], _scopes(value[1]))
    raise TypeError(f"a client is a secret, [secret, scopes] or {{'secret', 'scopes'}}, got {value!r}")


def _clients(value: Any) -> dict[str, ClientCredentials]:
    if not isinstance(value, Mapping):
        raise TypeError("clients must map client ids to credentials")
    return {str(client_id): _client(credentials) for client_id, credentials in value.items()}


def _model(value: Any) -> ModelSpec:
    if isinstance(value, ModelSpec):
        return value
    if not isinstance(value, Mapping):
        raise TypeError(f"a model is {{'kind', 'max_tokens', 'context_tokens'}}, got {value!r}")
    unknown = set(value) - {"kind", "max_tokens", "context_tokens"}
    if unknown:
        raise ValueError(f"unknown model fields {sorted(unknown)}")
    kind = value.get("kind", "completion")
    if kind not in ("completion", "embedding"):
        raise ValueError(f"model kind must be 'completion' or 'embedding', got {kind!r}")
    if kind == "embedding":
        return ModelSpec("embedding", max_tokens=0, context_tokens=_integer(1)(value.get("context_tokens", 8192)))
    return ModelSpec(
        "completion",
        max_tokens=_integer(1)(value.get("max_tokens", 4096)),
        context_tokens=_integer(1)(value.get("context_tokens", 8192)),
    )


def _models(value: Any) -> dict[str, ModelSpec]:
    if not isinstance(value, Mapping):
        raise TypeError("models must map model ids to model specs")
    return {str(model_id): _model(spec) for model_id, spec in value.items()}


_CONVERTERS: dict[str, Callable[[Any], Any]] = {
    "clients": _clients,
    "token_lifetime": _integer(1),
    "token_delay": _number(allow_zero=True),
    "completion_tokens": _integer(1),
    "embedding_dim": _integer(1),
    "status": _status,
    "models": _models,
    "rate_limit_per_minute": _integer(1),
    "enforce_rate_limit": _boolean,
    "idle_timeout": _number(allow_zero=False),
    "org_max_concurrent_streams": _integer(0),
    "org_requests_per_minute": _integer(0),
    "org_retry_after_seconds": _number(allow_zero=False),
    "max_embedding_inputs": _integer(1),
}


# -- section 9: the synthetic contact center behind the analytics and transcript endpoints -------

_INSTANT = re.compile(
    r"(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2})(?::(\d{2})(?:[.,](\d{1,9}))?)?"
    r"(?:([Zz])|([+-])(\d{2}):?(\d{2}))?"
)


def parse_utc_instant(text: str) -> datetime:
    """An ISO-8601 date-time (`2026-10-01T00:00:00Z`, `...00.000+02:00`; no zone means UTC) as an
    aware UTC datetime; raises ValueError for anything else (same on every Python >= 3.10)."""
    match = _INSTANT.fullmatch(text.strip()) if isinstance(text, str) else None
    if match is None:
        raise ValueError(f"not an ISO-8601 date-time: {text!r}")
    year, month, day, hour, minute, second, fraction, zulu, sign, offset_h, offset_m = match.groups()
    microseconds = int((fraction or "0")[:6].ljust(6, "0"))
    zone = UTC
    if sign is not None and zulu is None:
        offset = timedelta(hours=int(offset_h), minutes=int(offset_m))
        zone = timezone(-offset if sign == "-" else offset)
    try:
        moment = datetime(
            int(year), int(month), int(day), int(hour), int(minute), int(second or 0), microseconds, tzinfo=zone
        )
    except ValueError as exc:
        raise ValueError(f"not a valid date-time: {text!r} ({exc})") from None
    return moment.astimezone(UTC)


@dataclass
class ContactCenterConfig:
    """Settings of the synthetic contact center (section 9), changeable while the emulator runs.

    Kept apart from `EmulatorConfig` (whose fields are the gateway's), but patched through the
    same control API: `EmulatorState.configure` sends each field to the dataclass that has it.
    """

    conversations_per_day: int = 40  # the mean; each UTC day varies by up to +-25%, deterministically
    pii_ratio: float = 0.15  # share of conversations whose transcript carries PII
    unrecorded_ratio: float = 0.05  # share of calls not recorded: `recording: false`, no transcript
    job_polls_to_fulfil: int = 2  # status polls answering QUEUED/PENDING before the final state
    job_outcome: str = "FULFILLED"  # the final state of new jobs (a `job_outcome` fault overrides it)
    job_page_size: int = 100  # results page size when the request gives no `pageSize`
    data_availability_date: datetime | None = None  # fixed availability; None: now minus the lag
    data_availability_lag_seconds: int = 3600
    transcript_url_ttl_seconds: float = 600.0  # lifetime of a pre-signed transcript URL

    @classmethod
    def field_names(cls) -> frozenset[str]:
        return frozenset(item.name for item in dataclasses.fields(cls))

    def patched(self, changes: Mapping[str, Any]) -> ContactCenterConfig:
        """A copy with `changes` applied; raises ValueError naming the first bad field."""
        return dataclasses.replace(self, **_converted(changes, _CONTACT_CENTER_CONVERTERS))

    def availability(self, now: datetime | None = None) -> datetime:
        """The data availability date: the fixed one, or now minus the lag, truncated to the minute."""
        if self.data_availability_date is not None:
            return self.data_availability_date
        moment = (now or datetime.now(UTC)) - timedelta(seconds=self.data_availability_lag_seconds)
        return moment.replace(second=0, microsecond=0)


def _converted(changes: Mapping[str, Any], converters: Mapping[str, Callable[[Any], Any]]) -> dict[str, Any]:
    converted: dict[str, Any] = {}
    for name, value in changes.items():
        converter = converters.get(name)
        if converter is None:
            raise ValueError(f"unknown config field {name!r}; known: {sorted(converters)}")
        try:
            converted[name] = converter(value)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"config field {name!r}: {exc}") from exc
    return converted


def _ratio(value: Any) -> float:
    number = _number(allow_zero=True)(value)
    if number > 1:
        raise ValueError(f"must be between 0 and 1, got {value}")
    return number


def _job_outcome(value: Any) -> str:
    if value not in JOB_OUTCOMES:
        raise ValueError(f"expected one of {JOB_OUTCOMES}, got {value!r}")
    return str(value)


def _page_size(value: Any) -> int:
    size = _integer(1)(value)
    if size > MAX_JOB_PAGE_SIZE:
        raise ValueError(f"must be at most {MAX_JOB_PAGE_SIZE}, got {size}")
    return size


def _conversations_per_day(value: Any) -> int:
    count = _integer(0)(value)
    if count > MAX_CONVERSATIONS_PER_DAY:
        raise ValueError(f"must be at most {MAX_CONVERSATIONS_PER_DAY}, got {count}")
    return count


def _optional_instant(value: Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
    if not isinstance(value, str):
        raise TypeError(f"expected an ISO-8601 date-time string or null, got {value!r}")
    return parse_utc_instant(value)


MAX_JOB_PAGE_SIZE = 1000
MAX_CONVERSATIONS_PER_DAY = 50_000  # conversation ids hold the index of a day's call in 16 bits

_CONTACT_CENTER_CONVERTERS: dict[str, Callable[[Any], Any]] = {
    "conversations_per_day": _conversations_per_day,
    "pii_ratio": _ratio,
    "unrecorded_ratio": _ratio,
    "job_polls_to_fulfil": _integer(0),
    "job_outcome": _job_outcome,
    "job_page_size": _page_size,
    "data_availability_date": _optional_instant,
    "data_availability_lag_seconds": _integer(0),
    "transcript_url_ttl_seconds": _number(allow_zero=False),
}
