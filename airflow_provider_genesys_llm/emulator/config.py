"""Settings of the gateway emulator, changeable while it runs.

Tests steer the emulator through these fields (slower tokens, shorter token lifetimes, a
degraded status, ...), so every field can be patched at runtime from JSON through the control
API; `EmulatorConfig.patched` is the one place that turns JSON values into typed settings and
rejects anything malformed, so a typo in a test fails loudly instead of being ignored.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

SCOPE_USE = "ai:llm:gateway:use"
SCOPE_STREAM = "ai:llm:gateway:stream"
SCOPE_PROMPT_READ = "ai:llm:prompt:read"
SCOPE_GENERATION_WRITE = "ai:generation:write"
ALL_SCOPES: tuple[str, ...] = (SCOPE_USE, SCOPE_STREAM, SCOPE_PROMPT_READ, SCOPE_GENERATION_WRITE)

GATEWAY_STATUSES: tuple[str, ...] = ("available", "degraded", "unavailable")

ModelKind = Literal["completion", "embedding"]


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
    "max_embedding_inputs": _integer(1),
}
