"""Prompt versions: which prompt, model and parameters produced a stored row.

A version is a keyed hash (``IdKey``) of what the DAG author wrote, never of what an item
brought: the system prompt, the template (the kind of input, the server-side ``prompt_id`` and
the names of its variables, the text of ``system``-role messages), the model and the
parameters (temperature, max_tokens, response_format, stop sequences, plus the operator's
``version_parameters`` such as an output schema). An item's own content (the transcript, the
variables' values, user and assistant turns) is not part of it: changing the prompt changes the
version of every item at once, and a re-run can tell the rows of an old prompt from current ones.

Keyed because the system prompt and templates are the deployment's own text: a plain hash of
a short, guessable prompt could be confirmed by whoever reads the table. The human
``prompt_label`` ("v2-refund-intent") is stored next to the version but is not part of it, so
relabelling a prompt re-enriches nothing.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Set
from typing import Any, Literal, TypeAlias

from ..client.models import CompletionRequest
from ..governance.keys import IdKey

#: ``IdKey.digest`` purpose of prompt versions (never equal to a result id of the same request).
VERSION_PURPOSE = "prompt_version"
#: Hex characters kept: 64 bits, ample to tell a deployment's prompts apart, short enough to read.
VERSION_CHARS = 16
#: Longest ``prompt_label`` accepted: a name, not a description.
MAX_LABEL_CHARS = 200

#: What a re-run does with an item whose stored rows are of another prompt version.
Reenrich: TypeAlias = Literal["outdated", "never"]
#: What happens to an item's rows of other versions once its current row is stored.
PreviousVersions: TypeAlias = Literal["keep", "replace"]
#: What a run does with an item: ``stored`` (every completion stored already), ``new`` (nothing
#: stored of it, or a row of the current version but another content), ``reenrich`` (stored
#: only at other versions, sent again) or ``kept`` (stored at other versions, ``reenrich="never"``).
ItemOutcome: TypeAlias = Literal["stored", "new", "reenrich", "kept"]


def template_of(request: CompletionRequest) -> dict[str, Any]:
    """The authored shape of ``request`` without the item's content.

    ``system``-role messages are instructions the author wrote; user and assistant turns are the
    conversation an item brings and are left out.
    """
    return {
        "input": "variables" if request.prompt_id is not None else "messages",
        "prompt_id": request.prompt_id,
        "variables": sorted(request.variables or ()),
        "instructions": [m.content for m in request.messages if m.role == "system"],
    }


def prompt_version(request: CompletionRequest, key: IdKey, version_parameters: Mapping[str, Any] | None = None) -> str:
    """The version of ``request``'s prompt: equal for every item planned with the same prompt,
    model and parameters, different as soon as one of them changes."""
    identity = {
        "system": request.system,
        "template": template_of(request),
        "model": request.model,
        "temperature": request.temperature,
        "max_tokens": request.max_tokens,
        "response_format": request.response_format,
        "stop": list(request.stop_sequences),
        "extra": dict(version_parameters or {}),
    }
    return key.digest(VERSION_PURPOSE, identity)[:VERSION_CHARS]


def judge_item(
    current: Collection[str], pending: bool, stored: Set[str | None] | None, reenrich: Reenrich
) -> ItemOutcome:
    """What a run does with one item (run and plan share this).

    ``current``: the versions of the item's planned completions; ``pending``: whether any of them
    has no stored row with its result id; ``stored``: the versions of the item's stored rows (by
    source key; ``None`` is a row from before versions existed), ``None`` when it has none.
    """
    if not pending:
        return "stored"
    if not stored:
        return "new"
    if reenrich == "never":
        return "kept"
    return "reenrich" if stored.isdisjoint(current) else "new"


def check_version_options(reenrich: str, previous_versions: str, prompt_label: str | None) -> None:
    """Refuse values the runner would otherwise treat as a default silently."""
    if reenrich not in ("outdated", "never"):
        raise ValueError(f"reenrich must be 'outdated' or 'never', got {reenrich!r}")
    if previous_versions not in ("keep", "replace"):
        raise ValueError(f"previous_versions must be 'keep' or 'replace', got {previous_versions!r}")
    if prompt_label is not None and not 0 < len(prompt_label) <= MAX_LABEL_CHARS:
        raise ValueError(f"prompt_label must be 1 to {MAX_LABEL_CHARS} characters, got {len(prompt_label)}")


__all__ = [
    "MAX_LABEL_CHARS",
    "ItemOutcome",
    "PreviousVersions",
    "Reenrich",
    "check_version_options",
    "judge_item",
    "prompt_version",
    "template_of",
]
