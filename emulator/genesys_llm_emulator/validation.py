"""Reading and checking completion requests in the three wire shapes the emulator accepts.

WebSocket requests (tutorial 000), Genesys chat completions over SSE (tutorial 003) and
OpenAI-style chat completions all become one `CompletionRequest`, so the generator and the
stream scripting never care where a request came from. The checks mirror section 8 of the
protocol (model, max_tokens, temperature range per transport, roles, context window): a client
that skips its own validation gets the gateway's `invalid_request` answer here.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .config import EmulatorConfig, ModelSpec
from .generator import estimate_tokens

GENESYS_ROLES = frozenset({"system", "user", "assistant"})
OPENAI_ROLES = frozenset({"system", "developer", "user", "assistant", "tool"})
WS_MAX_TEMPERATURE = 2.0
SSE_MAX_TEMPERATURE = 1.0
OPENAI_MAX_TEMPERATURE = 2.0
DEFAULT_TEMPERATURE = 0.7


class InvalidRequest(ValueError):
    """A request the gateway refuses as `invalid_request`; the message names field and limit."""


@dataclass(frozen=True)
class ChatMessage:
    role: str
    content: str


@dataclass(frozen=True)
class CompletionRequest:
    """A validated completion request, whatever transport it came over."""

    request_id: str
    model: str
    max_tokens: int
    temperature: float
    messages: tuple[ChatMessage, ...] = ()
    system: str | None = None
    prompt_id: str | None = None
    variables: Mapping[str, Any] = field(default_factory=dict)
    json_output: bool = False
    stream: bool = True

    @property
    def prompt_tokens(self) -> int:
        """Estimated size of everything the model would read."""
        parts = [self.prompt_id or "", self.system or "", *(m.content for m in self.messages)]
        if self.variables:
            parts.append(json.dumps(self.variables, ensure_ascii=False, default=str))
        return estimate_tokens("".join(parts))


def decode_json(raw: str | bytes) -> Any:
    """A request body or WebSocket message as JSON, or `invalid_request` when it is not JSON."""
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise InvalidRequest(f"not valid JSON: {exc}") from None


def request_id_of(body: Any) -> str:
    """The `request_id` a WebSocket request carries, or a new one (tutorial 000 sends none)."""
    given = body.get("request_id") if isinstance(body, dict) else None
    return given if isinstance(given, str) and given else str(uuid.uuid4())


def parse_ws_request(body: Any, request_id: str, config: EmulatorConfig) -> CompletionRequest:
    """Section 4, step 3: the request object sent on an open stream session."""
    body = _object(body, "request")
    model_id = _string(body.get("model"), "model")
    model = _completion_model(model_id, config, "model")
    parameters = _object(body.get("parameters", {}), "parameters")
    context = _object(body.get("context", {}), "context")
    output_format = context.get("format")
    if output_format not in (None, "json", "text"):
        raise InvalidRequest(f"context.format must be 'json' or 'text', got {output_format!r}")
    stop_sequences = parameters.get("stop_sequences", [])
    if not isinstance(stop_sequences, list) or not all(isinstance(s, str) for s in stop_sequences):
        raise InvalidRequest(f"parameters.stop_sequences must be a list of strings, got {stop_sequences!r}")
    variables = _object(body.get("variables", {}), "variables")
    prompt_id = body.get("prompt_id")
    if prompt_id is not None and not isinstance(prompt_id, str):
        raise InvalidRequest(f"prompt_id must be a string, got {prompt_id!r}")
    system = context.get("system")
    if system is not None and not isinstance(system, str):
        raise InvalidRequest(f"context.system must be a string, got {system!r}")
    request = CompletionRequest(
        request_id=request_id,
        model=model_id,
        max_tokens=_max_tokens(parameters.get("max_tokens", model.max_tokens), model, "parameters.max_tokens"),
        temperature=_temperature(
            parameters.get("temperature", DEFAULT_TEMPERATURE), WS_MAX_TEMPERATURE, "parameters.temperature"
        ),
        messages=_messages(body.get("messages", []), GENESYS_ROLES, "messages"),
        system=system,
        prompt_id=prompt_id,
        variables=variables,
        json_output=output_format == "json",
    )
    return _within_context(request, model)


def parse_chat_request(body: Any, request_id: str, config: EmulatorConfig) -> CompletionRequest:
    """Section 5: `{"messages": [...], "params": {"model_id", "temperature", "max_tokens", "stream"}}`."""
    body = _object(body, "request body")
    params = _object(body.get("params"), "params")
    model_id = _string(params.get("model_id"), "params.model_id")
    model = _completion_model(model_id, config, "params.model_id")
    messages = _messages(body.get("messages"), GENESYS_ROLES, "messages", required=True)
    request = CompletionRequest(
        request_id=request_id,
        model=model_id,
        max_tokens=_max_tokens(params.get("max_tokens", model.max_tokens), model, "params.max_tokens"),
        temperature=_temperature(
            params.get("temperature", DEFAULT_TEMPERATURE), SSE_MAX_TEMPERATURE, "params.temperature"
        ),
        messages=messages,
        json_output=_system_asks_for_json(messages),
        stream=_boolean(params.get("stream", True), "params.stream"),
    )
    return _within_context(request, model)


def parse_openai_request(body: Any, request_id: str, config: EmulatorConfig) -> CompletionRequest:
    """OpenAI chat completions: `model`, `messages`, `temperature`, `max_tokens`, `stream`."""
    body = _object(body, "request body")
    model_id = _string(body.get("model"), "model")
    model = _completion_model(model_id, config, "model")
    messages = _messages(body.get("messages"), OPENAI_ROLES, "messages", required=True)
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    response_format = body.get("response_format") or {}
    wants_json = isinstance(response_format, dict) and response_format.get("type") in ("json_object", "json_schema")
    request = CompletionRequest(
        request_id=request_id,
        model=model_id,
        max_tokens=model.max_tokens if max_tokens is None else _max_tokens(max_tokens, model, "max_tokens"),
        temperature=_temperature(body.get("temperature", 1.0), OPENAI_MAX_TEMPERATURE, "temperature"),
        messages=messages,
        json_output=wants_json or _system_asks_for_json(messages),
        stream=_boolean(body.get("stream", False), "stream"),
    )
    return _within_context(request, model)


def _object(value: Any, name: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InvalidRequest(f"{name} must be a JSON object, got {_shown(value)}")
    return value


def _string(value: Any, name: str) -> str:
    if not isinstance(value, str) or not value:
        raise InvalidRequest(f"{name} must be a non-empty string, got {_shown(value)}")
    return value


def _boolean(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise InvalidRequest(f"{name} must be true or false, got {_shown(value)}")
    return value


def _completion_model(model_id: str, config: EmulatorConfig, name: str) -> ModelSpec:
    model = config.completion_model(model_id)
    if model is None:
        known = sorted(m for m in config.models if config.completion_model(m))
        raise InvalidRequest(f"{name} {model_id!r} is not a completion model of this gateway; known: {known}")
    return model


def _max_tokens(value: Any, model: ModelSpec, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= model.max_tokens:
        raise InvalidRequest(f"{name} must be an integer from 1 to {model.max_tokens}, got {_shown(value)}")
    return value


def _temperature(value: Any, maximum: float, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= maximum:
        raise InvalidRequest(f"{name} must be a number from 0.0 to {maximum}, got {_shown(value)}")
    return float(value)


def _messages(value: Any, roles: frozenset[str], name: str, *, required: bool = False) -> tuple[ChatMessage, ...]:
    if not isinstance(value, list) or (required and not value):
        expected = "a non-empty list of messages" if required else "a list of messages"
        raise InvalidRequest(f"{name} must be {expected}, got {_shown(value)}")
    messages = []
    for index, message in enumerate(value):
        if not isinstance(message, dict):
            raise InvalidRequest(f"{name}[{index}] must be an object, got {_shown(message)}")
        role = message.get("role")
        if role not in roles:
            raise InvalidRequest(f"{name}[{index}].role must be one of {sorted(roles)}, got {_shown(role)}")
        messages.append(ChatMessage(role, _content_text(message.get("content"), f"{name}[{index}].content")))
    return tuple(messages)


def _content_text(content: Any, name: str) -> str:
    """Message text; OpenAI clients may send a list of parts or null (tool calls)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    raise InvalidRequest(f"{name} must be a string, got {_shown(content)}")


def _system_asks_for_json(messages: tuple[ChatMessage, ...]) -> bool:
    return any(m.role in ("system", "developer") and "JSON" in m.content for m in messages)


def _within_context(request: CompletionRequest, model: ModelSpec) -> CompletionRequest:
    if request.prompt_tokens > model.context_tokens:
        raise InvalidRequest(
            f"prompt is about {request.prompt_tokens} tokens, over the context window of "
            f"{request.model} ({model.context_tokens} tokens)"
        )
    return request


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
