"""Parsing what the gateway sends, with bounded nesting and errors that quote nothing.

The standard ``json`` module recurses once per nesting level and raises ``RecursionError`` on a
deeply nested body, which no caller expects. Every body and frame is parsed by jiter instead
(pydantic's parser, also behind ``model_validate_json``): it stops at a fixed nesting limit with
a ``ValueError``, and it is faster. Failures become ``GatewayProtocolError`` raised outside the
``except`` block, so the parser's error (which quotes the input) is not chained onto it.
"""

from __future__ import annotations

from typing import Any, TypeVar

import pydantic_core
from pydantic import BaseModel, ValidationError

from .errors import GatewayProtocolError

_M = TypeVar("_M", bound=BaseModel)


def _problem(exc: ValueError) -> str:
    """The kind of JSON failure, without the position's surrounding text."""
    text = str(exc)
    if "recursion limit" in text:
        return "is nested too deeply"
    return "is not valid JSON"


def loads(raw: str | bytes, what: str) -> Any:
    """``raw`` as Python data; ``GatewayProtocolError`` naming ``what`` and the size when it is not JSON."""
    problem: str | None = None
    try:
        return pydantic_core.from_json(raw)
    except ValueError as exc:
        problem = _problem(exc)
    raise GatewayProtocolError(f"{what} ({len(raw)} bytes) {problem}")


def loads_or_none(raw: str | bytes) -> Any:
    """``raw`` as Python data, or None when it is not (bounded) JSON: for error bodies, whose
    status already says what happened."""
    try:
        return pydantic_core.from_json(raw) if raw else None
    except ValueError:
        return None


def describe(exc: ValidationError, raw_length: int, what: str) -> str:
    """What is wrong with a frame or body, by field name only (the values may be PII)."""
    first = exc.errors(include_input=False, include_url=False)[0]
    if first["type"] == "json_invalid":
        problem = "is nested too deeply" if "recursion limit" in first["msg"] else "is not valid JSON"
    else:
        field = ".".join(str(part) for part in first["loc"]) or "body"
        problem = f"has a bad '{field}': {first['msg']}"
    return f"{what} ({raw_length} bytes) {problem}"


def parse_model(model: type[_M], raw: str | bytes, what: str) -> _M:
    """``raw`` validated as ``model``; ``GatewayProtocolError`` naming the first bad field otherwise."""
    problem: str | None = None
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        problem = describe(exc, len(raw), what)
    raise GatewayProtocolError(problem)
