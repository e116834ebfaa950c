"""Batch items: validation, deterministic result ids, and lazy sources.

An item becomes one ``PlannedCompletion`` per temperature, each with an id that depends only on
what is asked (source id, prompt, model, parameters): rerunning the same batch yields the same
ids, which is what makes skip-existing and upserts idempotent across retries and workers.

Validation isolates each item: anything a later step would choke on (a NUL character Postgres
cannot store, a lone surrogate UTF-8 cannot encode, a value JSON cannot hold, an empty prompt)
makes that one item an ``InvalidItem`` with a reason, instead of failing its chunk after the
chunk's completions were paid for, or the whole task.
"""

from __future__ import annotations

import json
import math
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
from ..client.validation_errors import validation_problems
from ..governance.keys import IdKey
from .prompt_version import prompt_version

#: Namespace for request ids derived from result ids, so a retried item keeps its request id.
REQUEST_ID_NAMESPACE = uuid.UUID("5f0b8a64-4a55-4c1e-9b1a-6b7e0c0a3d21")

#: Fields an item may override per item; anything else is rejected as a typo.
OVERRIDES = (
    "model",
    "temperature",
    "max_tokens",
    "system",
    "prompt_id",
    "transport",
    "response_format",
    "stop_sequences",
)

#: Longest JSONL line read; a longer one becomes an invalid item without ever being held whole.
MAX_LINE_BYTES = 4 * 1024 * 1024
#: Nesting depth allowed inside an item (metadata is stored as jsonb with every row).
MAX_NESTING = 32
#: Size of an item's metadata as JSON: an annotation stored with every row, not a payload.
MAX_METADATA_CHARS = 65_536


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
    #: ``prompt_version.prompt_version`` of ``request``: which prompt the stored row comes from.
    prompt_version: str = ""


@dataclass(frozen=True, slots=True)
class InvalidItem:
    """An item that will never be sent, and why.

    ``code`` is a short category from a small vocabulary (``nul_character``, ``empty_prompt``,
    ``schema:temperature`` ...) for per-reason counts; ``reason`` names the field and the fix but
    never quotes the item's text.
    """

    result_id: str
    source_id: str
    reason: str
    code: str = "invalid"
    error_class: str = "RequestValidationError"


def result_id_for(
    source_id: str, request: CompletionRequest, key: IdKey, version_parameters: Mapping[str, Any] | None = None
) -> str:
    """A stable, keyed id of (source id, prompt, model, parameters); never depends on request ids or time.

    Keyed (``IdKey``), so the id reveals nothing about the prompt to whoever lacks the key.
    ``version_parameters`` (an output schema, say) are part of it only when given, so the ids of
    batches without any stay what they were.
    """
    identity: dict[str, Any] = {
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
    if version_parameters:
        identity["version_parameters"] = dict(version_parameters)
    return key.digest("result", identity)[:32]


@dataclass(frozen=True, slots=True)
class UnreadableItem:
    """A source record that could not even be read as an item (e.g. a JSONL line that is not JSON)."""

    source_id: str
    reason: str
    code: str = "unreadable"


def _storable_id(raw: Any) -> str | None:
    """The item's id if it can be stored and logged as it is (a short, clean string), else None."""
    value = raw.get("id") if isinstance(raw, Mapping) else None
    if not isinstance(value, str) or not 0 < len(value) <= 512 or _text_problem(value):
        return None
    return value


def _invalid_id(raw: Any, position: int, key: IdKey) -> tuple[str, str]:
    source_id = _storable_id(raw) or f"#{position}"
    return key.digest("invalid", source_id)[:32], source_id


def _describe(exc: ValidationError) -> tuple[str, str]:
    """(code, reason) of a schema error; the code names a known field or ``unknown_field``."""
    first = exc.errors(include_input=False, include_url=False)[0]
    field = str(first["loc"][0]) if first["loc"] else "item"
    field = field if field in BatchItem.model_fields or field == "item" else "unknown_field"
    return f"schema:{field}:{first['type']}", validation_problems(exc, whole="item")


def _text_problem(text: str) -> tuple[str, str] | None:
    """(code, what) if Postgres text or UTF-8 cannot hold ``text``."""
    if "\x00" in text:
        return "nul_character", "contains a NUL character, which Postgres text cannot store"
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            return "lone_surrogate", "contains a lone surrogate, which is not valid Unicode text"
    return None


def scan_item(raw: Mapping[str, Any]) -> tuple[str, str] | None:
    """(code, reason) of the first value of ``raw`` that cannot be sent, stored or logged, else None.

    Walks the item without recursion (a deeply nested value cannot exhaust the stack); names the
    top-level field only, since nested keys are the item's own data.
    """
    stack: list[tuple[Any, str, int]] = [(value, _field_name(key), 1) for key, value in raw.items()]
    stack.extend((key, "a field name", 1) for key in raw if isinstance(key, str))
    while stack:
        value, where, depth = stack.pop()
        if isinstance(value, str):
            problem = _text_problem(value)
            if problem:
                return problem[0], f"{where}: {problem[1]}; clean the source value"
        elif isinstance(value, float):
            if not math.isfinite(value):
                return "bad_number", f"{where}: {value} is not a finite number"
        elif isinstance(value, (Mapping, list, tuple)):
            if depth >= MAX_NESTING:
                return "too_deep", f"{where}: nested deeper than {MAX_NESTING} levels"
            if isinstance(value, Mapping):
                if not all(isinstance(key, str) for key in value):
                    return "bad_type", f"{where}: object keys must be strings"
                stack.extend((key, where, depth + 1) for key in value)
                stack.extend((inner, where, depth + 1) for inner in value.values())
            else:
                stack.extend((inner, where, depth + 1) for inner in value)
        elif value is not None and not isinstance(value, (bool, int)):
            return "bad_type", f"{where}: a {type(value).__name__} is not a JSON value"
    metadata = raw.get("metadata")
    if metadata is not None and len(json.dumps(metadata, ensure_ascii=False)) > MAX_METADATA_CHARS:
        reason = f"metadata: larger than {MAX_METADATA_CHARS} characters as JSON; store less per item"
        return "oversize_metadata", reason
    return None


def _field_name(key: Any) -> str:
    return key if isinstance(key, str) and key in BatchItem.model_fields else "an unknown field"


def _is_empty_prompt(messages: list[Message] | None, prompt_id: str | None) -> bool:
    """No template and no message with any visible text: sending it would bill for nothing."""
    return prompt_id is None and messages is not None and not any(m.content.strip() for m in messages)


def plan_item(
    raw: Any,
    position: int,
    config: GatewayConfig,
    defaults: Mapping[str, Any],
    key: IdKey,
    version_parameters: Mapping[str, Any] | None = None,
) -> list[PlannedCompletion] | InvalidItem:
    """Validate one raw item against the item schema and protocol section 8.

    ``version_parameters``: what else defines the prompt version (see ``batch/prompt_version.py``).
    """
    if isinstance(raw, UnreadableItem):
        invalid_id, _ = _invalid_id({"id": raw.source_id}, position, key)
        return InvalidItem(invalid_id, raw.source_id, raw.reason, raw.code)
    if not isinstance(raw, Mapping):
        invalid_id, source_id = _invalid_id(raw, position, key)
        reason = f"item is a {type(raw).__name__}, expected a mapping with an 'id'"
        return InvalidItem(invalid_id, source_id, reason, "not_mapping")
    problem = scan_item(raw)
    if problem is not None:
        invalid_id, source_id = _invalid_id(raw, position, key)
        return InvalidItem(invalid_id, source_id, problem[1], problem[0])
    try:
        item = BatchItem.model_validate(raw)
    except ValidationError as exc:
        invalid_id, source_id = _invalid_id(raw, position, key)
        code, reason = _describe(exc)
        return InvalidItem(invalid_id, source_id, reason, code)
    fields: dict[str, Any] = {**defaults}
    fields.update({name: getattr(item, name) for name in OVERRIDES if getattr(item, name) is not None})
    messages = item.messages
    if messages is None and item.text is not None:
        messages = [Message(role="user", content=item.text)]
    if _is_empty_prompt(messages, fields.get("prompt_id")):
        invalid_id, _ = _invalid_id(raw, position, key)
        reason = "the prompt is empty or whitespace only: nothing to complete (not sent, not billed)"
        return InvalidItem(invalid_id, item.id, reason, "empty_prompt")
    temperatures = fields.pop("temperature", None)
    temperatures = temperatures if isinstance(temperatures, list) else [temperatures]
    if not temperatures:
        invalid_id, _ = _invalid_id(raw, position, key)
        return InvalidItem(invalid_id, item.id, "temperature: an empty list asks for no completion", "empty_matrix")
    source_text = (
        item.text if item.text is not None else " ".join(m.content for m in messages or () if m.role == "user")
    )
    planned = []
    try:
        for temperature in temperatures:
            request = build_request(
                config, messages=messages, variables=item.variables, temperature=temperature, **fields
            )
            result_id = result_id_for(item.id, request, key, version_parameters)
            request = request.model_copy(update={"request_id": str(uuid.uuid5(REQUEST_ID_NAMESPACE, result_id))})
            version = prompt_version(request, key, version_parameters)
            planned.append(PlannedCompletion(result_id, item.id, request, source_text, item.metadata, version))
    except RequestValidationError as exc:
        invalid_id, _ = _invalid_id(raw, position, key)
        return InvalidItem(invalid_id, item.id, exc.message, "request_limit")
    return planned


def iter_jsonl(path: str | Path) -> Iterator[Any]:
    """Items from a JSON-lines file, read lazily and in bounded memory.

    Read as bytes and decoded line by line, so a line that is not UTF-8, not JSON, nested too
    deeply for the parser or longer than ``MAX_LINE_BYTES`` becomes one invalid item and the
    lines around it are still read. A UTF-8 byte order mark on the first line is allowed.
    """
    name = Path(path).name
    with open(path, "rb") as handle:
        number = 0
        while line := handle.readline(MAX_LINE_BYTES + 1):
            number += 1
            where = f"{name}:{number}"
            if len(line) > MAX_LINE_BYTES and not line.endswith(b"\n"):
                while (rest := handle.readline(MAX_LINE_BYTES)) and not rest.endswith(b"\n"):
                    pass
                yield UnreadableItem(where, f"line {number} is longer than {MAX_LINE_BYTES} bytes", "line_too_long")
                continue
            if not line.strip():
                continue
            try:
                text = line.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError as exc:
                yield UnreadableItem(where, f"line {number} is not valid UTF-8 (byte {exc.start})", "not_utf8")
                continue
            try:
                yield json.loads(text)
            except (ValueError, RecursionError):
                yield UnreadableItem(where, f"line {number} is not valid JSON", "not_json")


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
