"""``GenesysLLMCompletionOperator``: one governed, audited completion as a task."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from airflow.sdk import BaseOperator, Context

from ..batch.reask import DEFAULT_OUTPUT_RETRIES, OutputConversation, check_output_retries
from ..callbacks.audit import record_context, write_audit_records
from ..client import CompletionRequest, GatewayError
from ..exceptions import OutputValidationFailedError
from ..governance.audit import AuditRecord
from ..governance.completion import GovernedCompletion, completion_audit_record
from ..governance.filters import OutputFilter
from ..governance.keys import IdKey
from ..governance.masking import MaskingPolicy, PiiDetectedError
from ..hooks.genesys_llm import GenesysLLMHook
from ..hooks.id_key import ID_KEY_VARIABLE, get_id_key
from ..metrics import StatsObserver
from ..rendered_fields import MaskedRenderedFieldsMixin
from .request_fields import RequestFieldsMixin
from .task_options import OutputSchemaOption, output_schema_of, task_governance

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


class GenesysLLMCompletionOperator(RequestFieldsMixin, MaskedRenderedFieldsMixin, BaseOperator):
    """Run one completion under governance and push its (masked) text and a usage summary to XCom.

    The prompt is masked before it is sent, the answer is filtered and masked before it reaches
    XCom or the log, one ``kind="completion"`` audit record is written to the task log (and to the
    audit chain when ``audit_conn_id`` is set), and the completion metrics are emitted. The
    rendered-template store keeps only masked previews of ``messages``, ``variables`` and ``system``.

    :param messages: chat messages (``[{"role": "user", "content": "..."}]``), templated and masked
        in the rendered-template store. A string is refused (pass a list). Default ``None``; give
        ``messages``, ``prompt_id`` or both.
    :param prompt_id: a server-side prompt template, filled from ``variables``, templated
        (WebSocket transport only). Default ``None``.
    :param variables: values for ``prompt_id``'s placeholders, templated and masked before they are
        sent and in the rendered-template store. Default ``None``.
    :param system: system prompt, templated; masked before it is sent and in the rendered-template
        store. Default ``None``: none.
    :param model: model to ask, templated (a rendered string is used as is). Default ``None``: the
        connection's ``model``.
    :param temperature: sampling temperature, templated: a rendered ``"0.2"`` is read as 0.2, a
        value that is not a number fails the task before any request. Checked against the model's
        range (``0..2`` over WebSocket, ``0..1`` over SSE by default). Default ``None``: 0.7.
    :param max_tokens: most tokens the answer may have, templated (a rendered ``"256"`` is read as
        256). Default ``None``: 1024; at most the model's capacity.
    :param stop_sequences: sequences that end the answer (masked before they are sent).
        Default ``None``: none.
    :param transport: ``"websocket"`` or ``"sse"``. Default ``None``: the connection's
        ``transport`` (``"websocket"``); SSE needs ``messages`` and allows temperatures up to 1.
    :param response_format: ``"json"`` asks the model for a JSON answer, ``"text"`` for prose.
        Default ``None``: the gateway's default.
    :param genesys_llm_conn_id: the ``genesys_llm`` connection (credentials, region, defaults).
        Default ``"genesys_llm_default"``.
    :param mask_prompts: redact PII in messages, system prompt, variables and stop sequences before
        they are sent. Default ``True``; ``False`` sends them as written (the audit record and log
        still hold only masked text), for gateways inside the data's trust boundary.
    :param output_masking: what PII in the answer does: ``"redact"`` (default) masks it before XCom
        and the log; ``"fail"`` fails the task (audited, without the value); ``"flag"`` passes the
        text on unmasked and counts the findings.
    :param extra_pii_patterns: more detectors by name, masked like the built-in ones,
        ``{"EMPLOYEE_ID": r"EMP-\\d{6}"}``. Default ``None``.
    :param output_filters: safety filters applied to the answer before masking. Default ``None``:
        the built-in filters (reasoning blocks and generation-error lines removed); ``[]`` turns
        them off.
    :param audit_conn_id: Postgres connection of the hash-chained audit table the completion record
        is appended to. Default ``None``: the record goes to the task log only.
    :param audit_table: the audit chain's table (created if missing), used with ``audit_conn_id``.
        Default ``"genesys_llm_audit"``.
    :param id_key_variable: Airflow Variable holding the deployment's HMAC key for request ids and
        prompt fingerprints; the task fails before any request when it is unset.
        Default ``"genesys_llm_id_key"``.
    :param output_schema: a pydantic v2 model class or a JSON-schema dict (templated; a rendered
        string is parsed as JSON) the answer must be a valid object of; ``response_format`` then
        defaults to ``json``, and the task's XCom is the validated object. Checked before any spend.
        Default ``None``: the XCom is the result dict with the (masked) answer as text.
    :param output_retries: re-asks of an invalid answer (default 2), each a paid, audited
        completion carrying the validation reason; an answer still invalid fails the task with
        ``OutputValidationFailedError`` (not retried: a retry would pay again).
    """

    template_fields: Sequence[str] = (
        "messages",
        "prompt_id",
        "variables",
        "system",
        "model",
        "temperature",
        "max_tokens",
        "output_schema",
    )
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
        temperature: float | str | None = None,
        max_tokens: int | str | None = None,
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
        output_schema: OutputSchemaOption = None,
        output_retries: int = DEFAULT_OUTPUT_RETRIES,
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
        # An output schema asks for JSON unless the DAG says otherwise.
        self.response_format = response_format or ("json" if output_schema is not None else None)
        self.genesys_llm_conn_id = genesys_llm_conn_id
        self.governance = task_governance(extra_pii_patterns, mask_prompts, output_masking, output_filters)
        self.preview_masker = self.governance.masker
        self.audit_conn_id = audit_conn_id
        self.audit_table = audit_table
        self.id_key_variable = id_key_variable
        output_schema_of(output_schema)  # a mistake fails the DAG's parse, not a paid run
        self.output_schema = output_schema
        self.output_retries = check_output_retries(output_retries)

    def execute(self, context: Context) -> dict[str, Any]:
        key = get_id_key(self.id_key_variable)  # before any spend
        schema = output_schema_of(self.output_schema)  # rendered now; also before any spend
        hook = GenesysLLMHook(self.genesys_llm_conn_id, governance=self.governance)
        observer = StatsObserver()
        run_ids = record_context(context, owner=self.owner, conn_id=self.genesys_llm_conn_id)
        try:
            client = hook.get_conn()
            options = {name: self.raw_field(name) for name in REQUEST_OPTIONS if self.raw_field(name) is not None}
            request = client.request(messages=self.raw_field("messages"), **options)
            conversation = OutputConversation(schema, self.output_retries, request) if schema else None
            while True:
                done = self._attempt(hook, request, key, run_ids, observer)
                reask = conversation.reasks if conversation else 0
                verdict = conversation.judge(done.result.text) if conversation else None
                valid = verdict is None or verdict.output is not None
                head = self._write_audit(
                    completion_audit_record(
                        done.sent,
                        key=key,
                        context=run_ids,
                        status="success" if valid else "failed",
                        result=done.result,
                        error_class=None if valid else OutputValidationFailedError.__name__,
                        masking=done.masking_counts,
                        filters=done.output.filters_applied,
                        output_check=None if verdict is None else ("valid" if valid else "invalid"),
                        reask=reask,
                    )
                )
                self._log_completion(done)
                if verdict is None:
                    return self._result(done, head)
                if verdict.output is not None:
                    return verdict.output
                if verdict.reask is None:
                    raise OutputValidationFailedError(
                        f"the answer is still invalid under output_schema after {self.output_retries} re-ask(s): "
                        f"{self.governance.mask_text(verdict.reason or '')[0]}; not retried: a retry would pay for "
                        f"{self.output_retries + 1} completions again (change the prompt, the schema or "
                        "output_retries)",
                        transient=False,
                    )
                request = verdict.reask
        finally:
            hook.close()

    def _attempt(
        self,
        hook: GenesysLLMHook,
        request: CompletionRequest,
        key: IdKey,
        run_ids: dict[str, Any],
        observer: StatsObserver,
    ) -> GovernedCompletion:
        """One governed, paid completion; a failure is audited and counted, then raised."""
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
        observer.succeeded(done.result)
        return done

    def _log_completion(self, done: GovernedCompletion) -> None:
        result = done.result
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

    @staticmethod
    def _result(done: GovernedCompletion, head: dict[str, str | int] | None) -> dict[str, Any]:
        return {
            **done.result.model_dump(mode="json"),
            "masking_counts": done.masking_counts,
            "filters_applied": list(done.output.filters_applied),
            "audit_head": head,
        }

    def _write_audit(self, record: AuditRecord) -> dict[str, str | int] | None:
        head = write_audit_records([record], self.audit_conn_id, self.audit_table)
        return head.to_dict() if head else None
