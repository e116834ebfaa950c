"""The governance step of a completion: mask what leaves, then filter and mask what comes back.

Prompts are redacted before they are sent (always ``redact``: a prompt cannot "fail"). Output
goes through the safety filters first and the masking policy last, so what is masked is exactly
the text the reader will see: a filter that removes a ``<think>`` block from the middle of a
value (``123-45-<think>x</think>6789``) can no longer put a masked value back together, and
under ``fail`` a value that only appears once filtered fails the item too. Nothing runs after
masking. The counts it returns are what audits record.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from ..client.models import CompletionRequest
from .filters import FilterPipeline, OutputFilter, default_filters
from .masking import MaskingPolicy, PiiMasker, apply_policy


@dataclass(frozen=True)
class GovernedOutput:
    text: str
    masking_counts: dict[str, int] = field(default_factory=dict)
    filters_applied: tuple[str, ...] = ()


class Governance:
    """PII masking and safety filters for one task's completions."""

    def __init__(
        self,
        *,
        extra_patterns: Mapping[str, str] | None = None,
        mask_prompts: bool = True,
        output_policy: MaskingPolicy = "redact",
        filters: Iterable[OutputFilter] | None = None,
    ) -> None:
        if output_policy not in ("redact", "fail", "flag"):
            raise ValueError(f"output_policy must be 'redact', 'fail' or 'flag', got {output_policy!r}")
        self.masker = PiiMasker(extra_patterns)
        self.mask_prompts = mask_prompts
        self.output_policy: MaskingPolicy = output_policy
        self.filters = FilterPipeline(default_filters() if filters is None else filters)

    def mask_text(self, text: str) -> tuple[str, Counter[str]]:
        result = self.masker.mask(text)
        return result.text, Counter(result.counts)

    def mask_request(self, request: CompletionRequest) -> tuple[CompletionRequest, dict[str, int]]:
        """The request as it may leave: every message, the system prompt, variables and stop sequences redacted."""
        if not self.mask_prompts:
            return request, {}
        counts: Counter[str] = Counter()
        messages = []
        for message in request.messages:
            content, found = self.mask_text(message.content)
            counts += found
            messages.append(message.model_copy(update={"content": content}) if found else message)
        update: dict[str, object] = {"messages": tuple(messages)}
        if request.system:
            update["system"], found = self.mask_text(request.system)
            counts += found
        if request.variables:
            variables = {}
            for name, value in request.variables.items():
                variables[name], found = self.mask_text(value)
                counts += found
            update["variables"] = variables
        if request.stop_sequences:
            stops = []
            for stop in request.stop_sequences:
                masked, found = self.mask_text(stop)
                counts += found
                stops.append(masked)
            update["stop_sequences"] = tuple(stops)
        return (request.model_copy(update=update) if counts else request), dict(counts)

    def govern_output(self, text: str) -> GovernedOutput:
        """Filter, then mask the result under the output policy (``fail`` raises ``PiiDetectedError``)."""
        filtered = self.filters.apply(text)
        masked = apply_policy(self.masker, filtered.text, self.output_policy)
        return GovernedOutput(masked.text, dict(masked.counts), filtered.applied)
