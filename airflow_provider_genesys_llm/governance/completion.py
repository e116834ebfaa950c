"""One governed completion: the only way this provider turns a request into text it keeps.

Every caller (the batch runner, the hook's ``complete``/``acomplete``/``astream``, the completion
operator, the gateway sensor's probe) goes through here, so there is one place where a prompt is
masked before it leaves, one place where an answer is filtered and masked before anyone sees it,
and one builder for the audit record that says what happened. The result handed back carries
the governed text; the raw answer is dropped here.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from ..client import CompletionRequest, CompletionResult, GatewayClient, RestartEvent, StreamEvent, TokenEvent
from .audit import AuditRecord, Timings, TokenUsage
from .keys import IdKey
from .masking import StreamRedactor
from .policy import Governance, GovernedOutput

#: Purpose of the keyed fingerprint of a prompt in audit records (see ``IdKey.digest``).
PROMPT_PURPOSE = "prompt"


@dataclass(frozen=True)
class GovernedCompletion:
    """A completion after governance: ``result.text`` is what the user may see and store."""

    result: CompletionResult
    sent: CompletionRequest
    prompt_masking: dict[str, int]
    output: GovernedOutput

    @property
    def masking_counts(self) -> dict[str, int]:
        """Findings in the prompt and in the answer together, by type."""
        return dict(Counter(self.prompt_masking) + Counter(self.output.masking_counts))


async def complete_governed(
    client: GatewayClient,
    request: CompletionRequest,
    governance: Governance,
    send: Callable[[CompletionRequest], Awaitable[CompletionResult]] | None = None,
) -> GovernedCompletion:
    """Mask the prompt, complete, then filter and mask the answer (``fail`` raises ``PiiDetectedError``).

    ``send`` completes the masked request instead of ``client.complete`` (the batch runner's goes
    through its fleet controls: claims, budgets, prices).
    """
    sent, prompt_counts = governance.mask_request(request)
    result = await (send or client.complete)(sent)
    governed = governance.govern_output(result.text)
    return GovernedCompletion(result.model_copy(update={"text": governed.text}), sent, prompt_counts, governed)


async def stream_governed(
    client: GatewayClient, request: CompletionRequest, governance: Governance, *, chunk_tokens: int = 1
) -> AsyncIterator[StreamEvent]:
    """Stream a completion with the prompt masked and every emitted chunk masked.

    Safety filters need the whole answer, so a live stream is masked but not filtered; a value
    split across chunks is still caught because the redactor holds back an unfinished segment.
    A restart discards the redactor with the text of the failed attempt.
    """
    sent, _ = governance.mask_request(request)
    redactor = StreamRedactor(governance.masker, governance.output_policy)
    attempt = 1
    async for event in client.stream(sent).chunks(chunk_tokens):
        if isinstance(event, RestartEvent):
            redactor = StreamRedactor(governance.masker, governance.output_policy)
            attempt = event.attempt
            yield event
            continue
        if text := redactor.feed(event.text):
            yield TokenEvent(text, event.attempt)
    if tail := redactor.finish():
        yield TokenEvent(tail, attempt)


def completion_audit_record(
    request: CompletionRequest,
    *,
    key: IdKey,
    context: Mapping[str, Any],
    status: Literal["success", "failed"],
    result: CompletionResult | None = None,
    error_class: str | None = None,
    attempts: int | None = None,
    masking: Mapping[str, int] | None = None,
    filters: tuple[str, ...] = (),
    output_check: str | None = None,
    reask: int = 0,
) -> AuditRecord:
    """The ``kind="completion"`` record of ``request`` (as sent) and how it ended.

    ``context`` holds the run's ids (dag, task, run, map index, try, owner, connection). The
    prompt is represented only by its keyed fingerprint. With an output schema, ``output_check``
    (``"valid"`` or ``"invalid"``, the answer's validation) and ``reask`` (0 for the first ask,
    n for the n-th re-ask) go into ``parameters``: scalars the chain already hashes and stores.
    """
    checked = {"output_check": output_check, "output_reask": reask} if output_check else {}
    return AuditRecord(
        kind="completion",
        status=status,
        request_id=request.request_id,
        correlation_id=result.correlation_id if result else None,
        model=request.model,
        prompt_id=request.prompt_id,
        prompt_hmac=prompt_fingerprint(key, request),
        parameters={
            "temperature": request.temperature,
            "max_tokens": request.max_tokens,
            "transport": request.transport,
            **checked,
        },
        usage=TokenUsage(**result.usage.model_dump()) if result else None,
        timings=Timings(
            connect_ms=result.connect_ms,
            ttft_ms=result.ttft_ms,
            total_ms=result.total_ms,
            tokens_per_second=result.tokens_per_second,
        )
        if result
        else None,
        attempts=result.attempts if result else attempts,
        error_class=error_class,
        masking_counts=dict(masking or {}),
        filters_applied=filters,
        **context,
    )


def prompt_fingerprint(key: IdKey, request: CompletionRequest) -> str:
    """Keyed fingerprint of everything that makes up the prompt of ``request``."""
    return key.digest(
        PROMPT_PURPOSE,
        {
            "messages": [[message.role, message.content] for message in request.messages],
            "system": request.system,
            "prompt_id": request.prompt_id,
            "variables": dict(request.variables or {}),
        },
    )
