"""Structured output: an answer parsed and validated against a schema, with reasons that quote nothing.

A DAG author gives ``output_schema`` as a pydantic v2 model class or a JSON-schema dict. Every
mistake that can be found without the gateway (not an object schema, an ``embed="json:<field>"``
or a typed column naming a field the schema lacks, a field type with no SQL column type) is
refused when the schema is built, before any spend. An answer is parsed with the client's bounded
parser (a deeply nested answer is an invalid answer, not a ``RecursionError``) and validated; a
failure is described by field path and rule only. Answers are model output about customers: a
reason must never repeat a value, since it goes to the failures table, the log and the re-ask.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import jsonschema
from pydantic import BaseModel, ValidationError

from ..client.errors import GatewayProtocolError
from ..client.parsing import loads

#: SQL column type of each JSON-schema scalar type (an enum of strings is ``text``).
SQL_TYPES: dict[str, str] = {
    "string": "text",
    "integer": "bigint",
    "number": "double precision",
    "boolean": "boolean",
}
#: A fenced block (```json ... ```), which models often wrap JSON in although asked not to.
_FENCE = re.compile(r"```(?:json|JSON)?[ \t]*\r?\n(.*?)\r?\n?[ \t]*```", re.DOTALL)
#: Allowed values of an enum listed in a reason, at most (they come from the schema, not the answer).
_ENUM_SHOWN = 10


class OutputSchemaError(ValueError):
    """The output schema, or a setting that names its fields, is wrong; nothing was sent.

    Not transient: a retry would refuse it the same way; fix the schema or the setting.
    """

    transient = False


@dataclass(frozen=True)
class CheckedAnswer:
    """``output`` (the validated object) when the answer is valid, else ``reason`` (quotes no value)."""

    output: dict[str, Any] | None
    reason: str | None = None

    @property
    def valid(self) -> bool:
        return self.output is not None


class OutputSchema:
    """A schema answers are validated against; build with ``OutputSchema.of(model_class_or_dict)``."""

    def __init__(self, schema: Mapping[str, Any] | type[BaseModel]) -> None:
        self.model: type[BaseModel] | None = None
        if isinstance(schema, type) and issubclass(schema, BaseModel):
            self.model = schema
            self.json_schema: dict[str, Any] = schema.model_json_schema()
        elif isinstance(schema, Mapping):
            self.json_schema = dict(schema)
            try:
                jsonschema.validators.validator_for(self.json_schema).check_schema(self.json_schema)
            except jsonschema.SchemaError as exc:
                path = "/".join(str(part) for part in exc.absolute_path) or "(root)"
                raise OutputSchemaError(f"output_schema is not a valid JSON schema at {path}: {exc.message}") from None
            self._validator = jsonschema.validators.validator_for(self.json_schema)(self.json_schema)
        else:
            raise OutputSchemaError(
                f"output_schema must be a pydantic model class or a JSON-schema dict, got {type(schema).__name__}"
            )
        properties = self.json_schema.get("properties")
        if self.json_schema.get("type") != "object" or not isinstance(properties, Mapping) or not properties:
            raise OutputSchemaError(
                'output_schema must describe a JSON object: {"type": "object", "properties": {...}} '
                "(answers are stored as one jsonb object per row)"
            )
        self.properties: dict[str, Any] = dict(properties)
        #: Every property name the schema declares: the only keys a reason may name (an answer's own
        #: keys, under ``additionalProperties`` or a ``dict`` field, may be customer data).
        self._names = frozenset(_declared_names(self.json_schema))

    @classmethod
    def of(cls, schema: OutputSchema | Mapping[str, Any] | type[BaseModel] | str) -> OutputSchema:
        """``schema`` as an ``OutputSchema``; a string (a rendered template) is parsed as a JSON schema."""
        if isinstance(schema, OutputSchema):
            return schema
        if isinstance(schema, str):
            try:
                schema = json.loads(schema)
            except ValueError as exc:
                raise OutputSchemaError(f"output_schema was given as a string that is not JSON ({exc})") from None
        return cls(schema)  # type: ignore[arg-type]

    def require_field(self, field: str, setting: str) -> None:
        """Refuse a setting (``embed``, ``output_columns``) that names a field the schema does not have."""
        if field not in self.properties:
            raise OutputSchemaError(
                f"{setting} names field {field!r}, which output_schema does not have; its fields are "
                f"{sorted(self.properties)}"
            )

    def sql_columns(self, fields: Sequence[str]) -> dict[str, str]:
        """Field name -> SQL type of each typed column asked for; refuses unknown or unmappable fields."""
        columns: dict[str, str] = {}
        for field in fields:
            self.require_field(field, "output_columns")
            sql_type = self._sql_type(self._resolved(self.properties[field]))
            if sql_type is None:
                raise OutputSchemaError(
                    f"output_columns names field {field!r}, whose schema type has no SQL column type; typed "
                    f"columns take string, enum, integer, number or boolean fields (it stays in the output jsonb)"
                )
            columns[field] = sql_type
        return columns

    def check(self, answer: str) -> CheckedAnswer:
        """The answer parsed (a fenced JSON block tolerated) and validated; a reason when it is not valid."""
        fenced = _FENCE.search(answer)
        text = fenced.group(1) if fenced and not answer.lstrip().startswith("{") else answer
        try:
            document = loads(text, "the answer")
        except GatewayProtocolError as exc:
            return CheckedAnswer(None, exc.message)
        if not isinstance(document, dict):
            return CheckedAnswer(None, f"the answer is a JSON {_json_type(document)}, not an object")
        if self.model is not None:
            try:
                return CheckedAnswer(self.model.model_validate(document).model_dump(mode="json"))
            except ValidationError as exc:
                return CheckedAnswer(None, _pydantic_reason(exc, self._names))
        error = jsonschema.exceptions.best_match(self._validator.iter_errors(document))
        if error is None:
            return CheckedAnswer(document)
        return CheckedAnswer(None, _jsonschema_reason(error, self._names))

    def reask_message(self, reason: str) -> str:
        """The user message of a re-ask: what was wrong (no values) and the schema to follow."""
        return (
            f"Your previous answer was not valid: {reason}. Answer again with only a JSON object that "
            f"matches this JSON schema: {json.dumps(self.json_schema, separators=(',', ':'))}"
        )

    def _resolved(self, node: Any) -> Any:
        """A property's schema with a local ``$ref`` followed and ``anyOf [X, null]`` reduced to X."""
        for _ in range(8):  # bounded: a self-referencing $ref is not a column type
            if isinstance(node, Mapping) and isinstance(node.get("$ref"), str) and node["$ref"].startswith("#/"):
                target: Any = self.json_schema
                for part in node["$ref"][2:].split("/"):
                    target = target.get(part) if isinstance(target, Mapping) else None
                node = target
            elif isinstance(node, Mapping) and isinstance(node.get("anyOf"), list):
                options = [option for option in node["anyOf"] if option != {"type": "null"}]
                node = options[0] if len(options) == 1 else None
            else:
                break
        return node

    @staticmethod
    def _sql_type(node: Any) -> str | None:
        if not isinstance(node, Mapping):
            return None
        kind = node.get("type")
        if isinstance(kind, list):
            kinds = [k for k in kind if k != "null"]
            kind = kinds[0] if len(kinds) == 1 else None
        if kind is None and isinstance(node.get("enum"), list) and all(isinstance(v, str) for v in node["enum"]):
            kind = "string"
        return SQL_TYPES.get(kind) if isinstance(kind, str) else None


def _json_type(value: Any) -> str:
    if isinstance(value, list):
        return "array"
    if isinstance(value, str):
        return "string"
    if isinstance(value, bool):
        return "boolean"
    return "null" if value is None else "number"


def _declared_names(node: Any) -> set[str]:
    """Property names declared anywhere in a schema (``properties`` keys, ``$defs`` included)."""
    names: set[str] = set()
    if isinstance(node, Mapping):
        properties = node.get("properties")
        if isinstance(properties, Mapping):
            names.update(key for key in properties if isinstance(key, str))
        for value in node.values():
            names |= _declared_names(value)
    elif isinstance(node, list):
        for value in node:
            names |= _declared_names(value)
    return names


def _path(parts: Sequence[Any], names: frozenset[str]) -> str:
    """A dotted path of declared names and array indexes; a key the answer made up is ``<key>``."""
    shown = (str(part) if isinstance(part, int) or part in names else "<key>" for part in parts)
    return ".".join(shown) or "(root)"


def _jsonschema_reason(error: jsonschema.ValidationError, names: frozenset[str]) -> str:
    """Field path and rule, with the schema's side of the rule (allowed values, type); never the value."""
    rule, expected = error.validator, error.validator_value
    field = _path(list(error.absolute_path), names)
    if rule == "required":
        present = error.instance if isinstance(error.instance, Mapping) else {}
        missing = [name for name in expected if name not in present]
        path = _path([*error.absolute_path, missing[0]], names) if missing else field
        return f"field {path!r} is missing (required)"
    if rule == "enum":
        shown = ", ".join(json.dumps(value) for value in list(expected)[:_ENUM_SHOWN])
        return f"field {field!r} is not one of the allowed values ({shown}) (rule enum)"
    if rule == "type":
        return f"field {field!r} must be of type {expected} (rule type)"
    if rule == "additionalProperties":
        return f"field {field!r} has properties the schema does not allow (rule additionalProperties)"
    scalar = isinstance(expected, (int, float, str)) and not isinstance(expected, bool) and rule != "pattern"
    return f"field {field!r} breaks rule {rule}" + (f" ({expected})" if scalar else "")


def _pydantic_reason(exc: ValidationError, names: frozenset[str]) -> str:
    """The first error by location and pydantic's message template (which names no input)."""
    first = exc.errors(include_input=False, include_url=False, include_context=False)[0]
    return f"field {_path(first['loc'], names)!r} is invalid ({first['type']}: {first['msg']})"


__all__ = ["SQL_TYPES", "CheckedAnswer", "OutputSchema", "OutputSchemaError"]
