"""``GenesysLLMCompletionOperator``: one governed, audited completion as a task."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from airflow.sdk import BaseOperator, Context

from ..callbacks.audit import record_context, write_audit_records
from ..client import GatewayError
from ..governance.audit import AuditRecord
from ..governance.completion import completion_audit_record
from ..governance.filters import OutputFilter
from ..governance.masking import MaskingPolicy, PiiDetectedError
from ..governance.policy import Governance
from ..hooks.genesys_llm import GenesysLLMHook
from ..hooks.id_key import ID_KEY_VARIABLE, get_id_key
from ..metrics import StatsObserver
from ..rendered_fields import MaskedRenderedFieldsMixin

#: Request options the operator passes through to the hook.
REQUEST_OPTIONS = (
    "model",
    "temperature",
    "max_tokens",
    "prompt_id",
    "variables",
    "system",
    "stop_sequences",
    "transport",
    "response_format",
)


class GenesysLLMCompletionOperator(MaskedRenderedFieldsMixin, BaseOperator):
    """Run one completion under governance and push its (masked) text and a usage summary to XCom.

    The prompt is masked before it is sent, the answer is filtered and masked before it reaches
    XCom or the log, one ``kind="completion"`` audit record is written to the task log (and to the
    audit chain when ``audit_conn_id`` is set), and the completion metrics are emitted. The
    rendered-template store keeps only masked previews of ``messages``, ``variables`` and ``system``.

    :param messages: chat messages (``[{"role": "user", "content": "..."}]``), templated.
    :param prompt_id: server-side prompt template (with ``variables``), instead of or with messages.
    :param variables: values for the server-side template, templated.
    :param system: system prompt, templated.
    :param model: model name; default: the connection's ``model``.
    :param temperature: sampling temperature; default: the protocol's default.
    :param max_tokens: most tokens to generate; default: the protocol's default.
    :param stop_sequences: sequences that end the answer.
    :param transport: ``websocket`` or ``sse``; default: the connection's ``transport``.
    :param response_format: ``json`` or ``text``.
    :param genesys_llm_conn_id: the ``genesys_llm`` connection.
    :param mask_prompts: redact PII in the prompt before it is sent (default ``True``).
    :param output_masking: ``redact`` (default), ``fail`` or ``flag`` for PII in the answer.
    :param extra_pii_patterns: more detectors by name, ``{"EMPLOYEE_ID": r"EMP-\\d{6}"}``.
    :param output_filters: safety filters; default: reasoning blocks and generation-error lines.
    :param audit_conn_id: a Postgres connection holding the audit chain; ``None``: task log only.
    :param audit_table: the audit chain's table.
    :param id_key_variable: the Airflow Variable holding the HMAC key for prompt fingerprints.
    """

    template_fields: Sequence[str] = ("messages", "prompt_id", "variables", "system")
    template_fields_renderers = {"messages": "json", "variables": "json"}
    masked_template_fields: ClassVar[tuple[str, ...]] = ("messages", "variables", "system")

    def __init__(
        self,
        *,
        messages: list[dict[str, str]] | None = None,
        prompt_id: str | None = None,
        variables: dict[str, str] | None = None,
        system: str | None = None,
        model: str | None = None,
        temperature: float | None = None,
        max_tokens: int | None = None,
        stop_sequences: list[str] | None = None,
        transport: str | None = None,
        response_format: str | None = None,
        genesys_llm_conn_id: str = GenesysLLMHook.default_conn_name,
        mask_prompts: bool = True,
        output_masking: MaskingPolicy = "redact",
        extra_pii_patterns: dict[str, str] | None = None,
        output_filters: Sequence[OutputFilter] | None = None,
        audit_conn_id: str | None = None,
        audit_table: str = "genesys_llm_audit",
        id_key_variable: str = ID_KEY_VARIABLE,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if isinstance(messages, str):
            raise TypeError("messages must be a list of {role, content} dicts, not a string")
        if messages is None and prompt_id is None:
            raise ValueError("give messages, prompt_id, or both")
        self.messages = messages
        self.prompt_id = prompt_id
        self.variables = variables
        self.system = system
        self.model = model
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.stop_sequences = stop_sequences
        self.transport = transport
        self.response_format = response_format
        self.genesys_llm_conn_id = genesys_llm_conn_id
        self.governance = Governance(
            extra_patterns=extra_pii_patterns,
            mask_prompts=mask_prompts,
            output_policy=output_masking,
            filters=output_filters,
        )
        self.preview_masker = self.governance.masker
        self.audit_conn_id = audit_conn_id
        self.audit_table = audit_table
        self.id_key_variable = id_key_variable

    def execute(self, context: Context) -> dict[str, Any]:
        key = get_id_key(self.id_key_variable)  # before any spend
        hook = GenesysLLMHook(self.genesys_llm_conn_id, governance=self.governance)
        observer = StatsObserver()
        run_ids = record_context(context, owner=self.owner, conn_id=self.genesys_llm_conn_id)
        try:
            client = hook.get_conn()
            options = {name: self.raw_field(name) for name in REQUEST_OPTIONS if self.raw_field(name) is not None}
            request = client.request(messages=self.raw_field("messages"), **options)
            try:
                done = hook.complete_governed(request)
            except (GatewayError, PiiDetectedError) as exc:
                sent, prompt_counts = self.governance.mask_request(request)
                counts = {**prompt_counts, **getattr(exc, "counts", {})}
                attempts = getattr(exc, "attempts", None) or 1
                self._write_audit(
                    completion_audit_record(
                        sent,
                        key=key,
                        context=run_ids,
                        status="failed",
                        error_class=type(exc).__name__,
                        attempts=attempts,
                        masking=counts,
                    )
                )
                observer.failed(sent.model, sent.transport, type(exc).__name__, attempts)
                raise
        finally:
            hook.close()
        result = done.result
        observer.succeeded(result)
        head = self._write_audit(
            completion_audit_record(
                done.sent,
                key=key,
                context=run_ids,
                status="success",
                result=result,
                masking=done.masking_counts,
                filters=done.output.filters_applied,
            )
        )
        self.log.info(
            "completion %s: %d prompt + %d completion tokens, ttft %.1f ms, total %.1f ms, %d attempt(s), masked %s",
            result.request_id,
            result.usage.prompt_tokens,
            result.usage.completion_tokens,
            result.ttft_ms or 0.0,
            result.total_ms,
            result.attempts,
            done.masking_counts or "nothing",
        )
        return {
            **result.model_dump(mode="json"),
            "masking_counts": done.masking_counts,
            "filters_applied": list(done.output.filters_applied),
            "audit_head": head,
        }

    def _write_audit(self, record: AuditRecord) -> dict[str, str | int] | None:
        head = write_audit_records([record], self.audit_conn_id, self.audit_table)
        return head.to_dict() if head else None
