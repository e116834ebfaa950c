"""Keep raw prompts out of Airflow's rendered-template store.

Airflow stores the rendered value of every template field (``rendered_task_instance_fields``,
the UI's "Rendered Template" tab) right after rendering and before ``execute``. A prompt or a
list of items is rendered there in full, card numbers and all. The operator still needs the raw
value (the keyed ids cover it, and ``mask_prompts=False`` sends it), so after rendering it keeps
the raw value privately and leaves a masked preview on the attribute that Airflow serialises.

The hook point is ``_do_render_template_fields``: it is what both a plain task and an unmapped
mapped task call (``MappedOperator.render_template_fields`` goes straight to it), so overriding
``render_template_fields`` alone would miss mapped tasks.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, ClassVar

from .governance.masking import PiiMasker

#: Characters of masked text kept per field in the rendered-template store; Airflow truncates
#: long values anyway, and masking a 100,000-item list only to truncate it would cost seconds.
PREVIEW_CHARS = 4096


class MaskedRenderedFieldsMixin:
    """Mix into an operator before ``BaseOperator``; list the payload fields in ``masked_template_fields``."""

    masked_template_fields: ClassVar[tuple[str, ...]] = ()
    #: The masker for previews; operators with extra PII patterns set their own.
    preview_masker: PiiMasker

    def _do_render_template_fields(
        self, parent: Any, template_fields: Iterable[str], context: Any, jinja_env: Any, seen_oids: set[int]
    ) -> None:
        super()._do_render_template_fields(parent, template_fields, context, jinja_env, seen_oids)  # type: ignore[misc]
        if parent is not self:
            return
        raw: dict[str, Any] = self.__dict__.setdefault("_raw_rendered", {})
        for name in self.masked_template_fields:
            value = getattr(self, name)
            if value is None or name in raw:  # rendered once already: the attribute is the preview
                continue
            raw[name] = value
            setattr(self, name, masked_preview(value, self.preview_masker, PREVIEW_CHARS))

    def raw_field(self, name: str) -> Any:
        """The rendered value of a masked template field, as the DAG produced it."""
        raw = self.__dict__.get("_raw_rendered", {})
        return raw[name] if name in raw else getattr(self, name)


def masked_preview(value: Any, masker: PiiMasker, budget: int) -> Any:
    """``value`` with every string masked, cut once ``budget`` characters of text are shown.

    Lists keep their shape up to the budget and then end with a note of how many items were left
    out, so the UI still shows what the task was given without the cost of masking all of it.
    """
    remaining = [budget]

    def walk(item: Any) -> Any:
        if isinstance(item, str):
            text = masker.mask(item).text
            remaining[0] -= len(text)
            return text
        if isinstance(item, Mapping):
            return {walk(key) if isinstance(key, str) else key: walk(val) for key, val in item.items()}
        if isinstance(item, (list, tuple)):
            shown: list[Any] = []
            for index, element in enumerate(item):
                if remaining[0] <= 0:
                    shown.append(f"... {len(item) - index} more item(s) not shown")
                    break
                shown.append(walk(element))
            return shown
        if isinstance(item, (int, float, bool)) or item is None:
            return item
        return f"<{type(item).__name__}>"

    return walk(value)
