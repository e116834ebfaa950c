"""Templated request options (``model``, ``temperature``, ``max_tokens``, ``prompt_id``) as the values they stand for.

Jinja renders ``"{{ params.temperature }}"`` to the *string* ``"0.2"`` unless the DAG sets
``render_template_as_native_obj=True``. The request models would quietly accept some strings and
refuse others item by item (a batch of invalid items, each counted as a failure), so the options
are coerced once, right after rendering: before ``execute``, any connection, or any spend. A value
that is not what the field takes fails the task there, naming the field and the value, and is not
retried (another try renders the same value). The rendered-template store then shows the numbers.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from typing import Any, ClassVar

from ..exceptions import TemplatedFieldError
from ..governance.masking import PiiMasker

#: Longest rendered value quoted in an error (masked first): enough to recognise a wrong template.
QUOTED_CHARS = 40


class RequestFieldsMixin:
    """Mix into an operator before ``MaskedRenderedFieldsMixin`` and ``BaseOperator``; coerces the
    request options after rendering. Placed first, it runs after the payloads were swapped for
    masked previews, so a task that fails here never holds raw prompts on its attributes (where a
    failure callback could read them).

    ``temperature_sweep`` says whether ``temperature`` may be a list (the batch operator completes
    each item once per temperature); a rendered string that is a JSON list (what Jinja makes of a
    list param, ``"[0.2, 0.7]"``) is read as one.
    """

    temperature_sweep: ClassVar[bool] = False

    def _do_render_template_fields(
        self, parent: Any, template_fields: Iterable[str], context: Any, jinja_env: Any, seen_oids: set[int]
    ) -> None:
        super()._do_render_template_fields(parent, template_fields, context, jinja_env, seen_oids)  # type: ignore[misc]
        if parent is self:
            coerce_request_fields(self, sweep=self.temperature_sweep)


def coerce_request_fields(operator: Any, *, sweep: bool) -> None:
    """Set ``temperature`` (float, or a list of floats with ``sweep``), ``max_tokens`` (int),
    ``model`` and ``prompt_id`` (non-blank str) on ``operator`` from their rendered values."""
    for name in ("model", "prompt_id"):
        value = getattr(operator, name)
        if value is not None:
            setattr(operator, name, _text(name, value))
    if operator.max_tokens is not None:
        operator.max_tokens = _whole_number("max_tokens", operator.max_tokens)
    temperature = operator.temperature
    if temperature is None:
        return
    if sweep and isinstance(temperature, str) and temperature.lstrip().startswith("["):
        temperature = _json_list(temperature)
    if isinstance(temperature, (list, tuple)):
        if not sweep:
            raise _wrong("temperature", temperature, "one number (a sweep of temperatures is the batch operator's)")
        operator.temperature = [_number("temperature", value) for value in temperature]
    else:
        operator.temperature = _number("temperature", temperature)


def _text(name: str, value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise _wrong(name, value, "a string")
    text = str(value)
    if not text.strip():
        raise _wrong(name, value, "a non-blank string (leave it unset for the connection's default)")
    return text


def _number(name: str, value: Any) -> float:
    if isinstance(value, bool):
        raise _wrong(name, value, "a number")
    try:
        number = float(value.strip() if isinstance(value, str) else value)
    except (TypeError, ValueError):
        raise _wrong(name, value, "a number") from None
    if not math.isfinite(number):
        raise _wrong(name, value, "a finite number")
    return number


def _whole_number(name: str, value: Any) -> int:
    number = value if isinstance(value, int) and not isinstance(value, bool) else None
    if isinstance(value, str) and value.strip().lstrip("+-").isdigit():
        number = int(value.strip())
    if number is None or number < 1:
        raise _wrong(name, value, "a whole number of at least 1")
    return number


def _json_list(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        raise _wrong("temperature", text, "a number or a list of numbers") from None


def _wrong(name: str, value: Any, expected: str) -> TemplatedFieldError:
    """The error for ``name``, quoting the rendered value masked and cut (it may come from XCom or a param)."""
    shown = PiiMasker().mask(repr(value)).text
    if len(shown) > QUOTED_CHARS:
        shown = shown[:QUOTED_CHARS] + "..."
    return TemplatedFieldError(
        f"{name} rendered to {shown} ({type(value).__name__}), which is not {expected}; fix the template or the "
        f"param it reads (Jinja renders every value as a string unless the DAG sets "
        "render_template_as_native_obj=True; numeric strings such as '0.2' are accepted). Not retried: another "
        "try renders the same value"
    )
