"""Batch items: validation, deterministic result ids, and lazy sources.

An item becomes one ``PlannedCompletion`` per temperature, each with an id that depends only on
what is asked (source id, prompt, model, parameters): rerunning the same batch yields the same
ids, which is what makes skip-existing and upserts idempotent across retries and workers.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..client.config import GatewayConfig
from ..client.errors import RequestValidationError
from ..client.limits import build_request
from ..client.models import CompletionRequest, Message
from ..governance.keys import IdKey

#: Namespace for request ids derived from result ids, so a retried item keeps its request id.
REQUEST_ID_NAMESPACE = uuid.UUID("5f0b8a64-4a55-4c1e-9b1a-6b7e0c0a3d21")

#: Fields an item may override per item; anything else is rejected as a typo.
OVERRIDES = ("model", "temperature", "max_tokens", "system", "prompt_id", "transport", "response_format", "stop_sequences")


class BatchItem(BaseModel):
    """One unit of work as DAG authors write it."""

    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    id: str = Field(min_length=1, max_length=512)
    messages: list[Message] | None = None
    variables: dict[str, str] | None = None
    text: str | None = None
    model: str | None = None
    temperature: float | list[float] | None = None
    max_tokens: int | None = None
    system: str | None = None
    prompt_id: str | None = None
    transport: str | None = None
    response_format: str | None = None
    stop_sequences: list[str] | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PlannedCompletion:
    """A validated request and the id its result will be stored under."""

    result_id: str
    source_id: str
    request: CompletionRequest
    source_text: str
    metadata: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class InvalidItem:
    """An item that will never be sent, and why."""

    result_id: str
    source_id: str
    reason: str
    error_class: str = "RequestValidationError"


def result_id_for(source_id: str, request: CompletionRequest, key: IdKey) -> str:
    """A stable, keyed id of (source id, prompt, model, parameters); never depends on request ids or time.

    Keyed (``IdKey``), so the id reveals nothing about the prompt to whoever lacks the key.
    """
    identity = {
        "source_id": source_id,
        "model": request.model,
        "prompt_id": request.prompt_id,
        "messages": [[m.role, m.content] for m in request.messages],
        "system": request.system,
        "variables": request.variables,
        "format": request.response_format,
        "temperature": request.temperature,
        "max_tokens": request.max_tokens,
        "stop": list(request.stop_sequences),
    }
    return key.digest("result", identity)[:32]


@dataclass(frozen=True, slots=True)
class UnreadableItem:
    """A source record that could not even be read as an item (e.g. a JSONL line that is not JSON)."""

    source_id: str
    reason: str


def _invalid_id(raw: Any, position: int, key: IdKey) -> tuple[str, str]:
    source_id = str(raw.get("id")) if isinstance(raw, Mapping) and raw.get("id") not in (None, "") else f"#{position}"
    return key.digest("invalid", source_id)[:32], source_id


def _describe(exc: ValidationError) -> str:
    return "; ".join(
        f"{'.'.join(str(p) for p in e['loc']) or 'item'}: {e['msg']}"
        for e in exc.errors(include_input=False, include_url=False)
    )


def plan_item(
    raw: Any, position: int, config: GatewayConfig, defaults: Mapping[str, Any], key: IdKey
) -> list[PlannedCompletion] | InvalidItem:
    """Validate one raw item against the item schema and protocol section 8."""
    if isinstance(raw, UnreadableItem):
        invalid_id, _ = _invalid_id({"id": raw.source_id}, position, key)
        return InvalidItem(invalid_id, raw.source_id, raw.reason)
    if not isinstance(raw, Mapping):
        invalid_id, source_id = _invalid_id(raw, position, key)
        return InvalidItem(invalid_id, source_id, f"item is a {type(raw).__name__}, expected a mapping with an 'id'")
    try:
        item = BatchItem.model_validate(raw)
    except ValidationError as exc:
        invalid_id, source_id = _invalid_id(raw, position, key)
        return InvalidItem(invalid_id, source_id, _describe(exc))
    fields: dict[str, Any] = {**defaults}
    fields.update({name: getattr(item, name) for name in OVERRIDES if getattr(item, name) is not None})
    messages = item.messages
    if messages is None and item.text is not None:
        messages = [Message(role="user", content=item.text)]
    temperatures = fields.pop("temperature", None)
    temperatures = temperatures if isinstance(temperatures, list) else [temperatures]
    source_text = item.text if item.text is not None else " ".join(m.content for m in messages or () if m.role == "user")
    planned = []
    try:
        for temperature in temperatures:
            request = build_request(
                config, messages=messages, variables=item.variables, temperature=temperature, **fields
            )
            result_id = result_id_for(item.id, request, key)
            request = request.model_copy(update={"request_id": str(uuid.uuid5(REQUEST_ID_NAMESPACE, result_id))})
            planned.append(PlannedCompletion(result_id, item.id, request, source_text, item.metadata))
    except RequestValidationError as exc:
        invalid_id, _ = _invalid_id(raw, position, key)
        return InvalidItem(invalid_id, item.id, exc.message)
    return planned


def iter_jsonl(path: str | Path) -> Iterator[Any]:
    """Items from a JSON-lines file, read lazily; a line that is not JSON becomes an invalid item."""
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if line.strip():
                try:
                    yield json.loads(line)
                except ValueError:
                    yield UnreadableItem(f"{Path(path).name}:{number}", f"line {number} is not valid JSON")


def iter_query(
    connect: Callable[[], Any], query: str, parameters: Mapping[str, Any] | None = None, *, fetch_size: int = 2000
) -> Iterator[dict[str, Any]]:
    """Rows of ``query`` (with bound ``parameters``) as dicts, through a server-side cursor so a huge
    source streams in bounded memory."""
    from psycopg.rows import dict_row

    with connect() as conn, conn.cursor(name="genesys_llm_items", row_factory=dict_row) as cursor:
        cursor.itersize = fetch_size
        cursor.execute(query, parameters)
        yield from cursor


def check_items_source(items: Any) -> Iterable[Any]:
    """Refuse sources that would silently do the wrong thing (a string iterates per character)."""
    if isinstance(items, (str, bytes)):
        raise TypeError(
            "items is a string; pass a list of dicts, an XComArg, an iterable, jsonl_path or sql "
            "(a string would bill one request per character)"
        )
    if isinstance(items, Mapping):
        raise TypeError("items is a single mapping; wrap it in a list")
    if not isinstance(items, Iterable):
        raise TypeError(f"items must be iterable, got {type(items).__name__}")
    return items
