"""Safety filters for a completed answer: drop what the model should not have shown.

Filters run on the complete text after the stream has ended, not per token: a ``<think>``
block spans many tokens and only the end of the stream says whether it was closed. A filter is
anything with a ``name`` and an ``apply(text) -> text`` method, so deployments can add their
own (a content policy, a house style) next to the built-ins.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol


class OutputFilter(Protocol):
    """One step of the pipeline; ``name`` is what audit records list when the step changed text."""

    @property
    def name(self) -> str: ...

    def apply(self, text: str) -> str: ...


#: A reasoning block, across lines, and the whitespace after it; an unclosed one runs to the end
#: (the stream stopped mid-thought, and none of it is meant for the reader).
THINK_BLOCK = re.compile(r"<think>.*?(?:</think>(?P<after>\s*)|\Z)", re.DOTALL | re.IGNORECASE)
#: A whole line, with its line break, that carries the gateway's generation error marker.
GENERATION_ERROR_LINE = re.compile(r"^[^\n]*\[GENERATION_ERROR\][^\n]*(?:\n|\Z)", re.MULTILINE)


@dataclass(frozen=True)
class RegexRemovalFilter:
    """Removes every match of a regular expression: the shape of both built-ins."""

    name: str
    pattern: re.Pattern[str]

    def apply(self, text: str) -> str:
        return self.pattern.sub("", text)


@dataclass(frozen=True)
class ThinkBlockFilter(RegexRemovalFilter):
    """Removes ``<think>...</think>`` blocks, and an unterminated ``<think>`` to the end.

    The whitespace after a block goes with it, except between two digits: a block cut into a
    number keeps the number's grouping (``4111 1111<think>x</think> 1111 1111`` reads as four
    groups, not ``4111 11111111 1111``), and one cut into a word or an address joins its two
    halves again. Either way the masker, which runs after the filters, sees the value whole.
    """

    name: str = "think_block"
    pattern: re.Pattern[str] = THINK_BLOCK

    def apply(self, text: str) -> str:
        return self.pattern.sub(_keep_digit_grouping, text)


def _keep_digit_grouping(match: re.Match[str]) -> str:
    after = match.group("after") or ""
    text, start, end = match.string, match.start(), match.end()
    between_digits = start > 0 and end < len(text) and text[start - 1].isdigit() and text[end].isdigit()
    return after if between_digits else ""


@dataclass(frozen=True)
class GenerationErrorFilter(RegexRemovalFilter):
    """Removes every line that contains ``[GENERATION_ERROR]``."""

    name: str = "generation_error"
    pattern: re.Pattern[str] = GENERATION_ERROR_LINE


def default_filters() -> tuple[OutputFilter, ...]:
    """The built-ins, reasoning first so an error marker inside a think block goes with it."""
    return (ThinkBlockFilter(), GenerationErrorFilter())


@dataclass(frozen=True)
class FilterOutcome:
    """Filtered text and the names of the filters that changed something, in pipeline order."""

    text: str
    applied: tuple[str, ...]


class FilterPipeline:
    """Runs filters in order, each on the output of the one before."""

    def __init__(self, filters: Iterable[OutputFilter]) -> None:
        self._filters = tuple(filters)

    def apply(self, text: str) -> FilterOutcome:
        applied: list[str] = []
        for output_filter in self._filters:
            filtered = output_filter.apply(text)
            if filtered != text:
                applied.append(output_filter.name)
            text = filtered
        return FilterOutcome(text, tuple(applied))
