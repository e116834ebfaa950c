"""Options the completion and batch operators share: governance and the output schema.

One home so both operators build their governance the same way (and set the masker of their
rendered-field previews from it), and read ``output_schema`` the same way: checked when the task
is defined when it can be, and again after templating, always before any spend.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel

from ..batch.output_schema import OutputSchema
from ..governance.filters import OutputFilter
from ..governance.masking import MaskingPolicy
from ..governance.policy import Governance

#: What a DAG author may give as ``output_schema``: a JSON-schema dict (templatable; a rendered
#: string is parsed as JSON) or a pydantic v2 model class.
OutputSchemaOption = Mapping[str, Any] | type[BaseModel] | str | None


def task_governance(
    extra_pii_patterns: dict[str, str] | None,
    mask_prompts: bool,
    output_masking: MaskingPolicy,
    output_filters: Sequence[OutputFilter] | None,
) -> Governance:
    """The governance of a task's completions from the operator's parameters."""
    return Governance(
        extra_patterns=extra_pii_patterns,
        mask_prompts=mask_prompts,
        output_policy=output_masking,
        filters=output_filters,
    )


def output_schema_of(
    value: OutputSchemaOption, *, embed: str | None = None, columns: Sequence[str] = ()
) -> OutputSchema | None:
    """``value`` checked as an output schema (with the ``embed`` field and typed ``columns`` it names).

    A string holding a Jinja template cannot be checked until it is rendered: None then, and the
    operator checks it at the start of ``execute``. Raises ``OutputSchemaError`` otherwise.
    """
    if value is None:
        if columns:
            raise ValueError("output_columns names fields of output_schema: give output_schema too")
        return None
    if isinstance(value, str) and ("{{" in value or "{%" in value):
        return None
    schema = OutputSchema.of(value)
    if embed is not None and embed.startswith("json:"):
        schema.require_field(embed[5:], f"embed={embed!r}")
    schema.sql_columns(columns)
    return schema


__all__ = ["OutputSchemaOption", "output_schema_of", "task_governance"]
