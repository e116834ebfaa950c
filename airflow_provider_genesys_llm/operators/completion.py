"""``GenesysLLMCompletionOperator``: one completion as a task."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseOperator, Context

from ..hooks.genesys_llm import GenesysLLMHook

#: Request options the operator passes through to ``GenesysLLMHook.complete``.
REQUEST_OPTIONS = (
    "model", "temperature", "max_tokens", "prompt_id", "variables", "system", "stop_sequences", "transport", "response_format",
)


class GenesysLLMCompletionOperator(BaseOperator):
    """Run one completion and push its text and a usage/latency summary to XCom.

    :param messages: chat messages (``[{"role": "user", "content": "..."}]``), templated.
    :param prompt_id: server-side prompt template (with ``variables``), instead of or with messages.
    :param genesys_llm_conn_id: the ``genesys_llm`` connection.
    Other parameters (``model``, ``temperature``, ``max_tokens``, ``system``, ``stop_sequences``,
    ``transport``, ``response_format``) default to the connection's settings.
    """

    template_fields: Sequence[str] = ("messages", "prompt_id", "variables", "system")
    template_fields_renderers = {"messages": "json", "variables": "json"}

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

    def execute(self, context: Context) -> dict[str, Any]:
        hook = GenesysLLMHook(self.genesys_llm_conn_id)
        try:
            options = {name: getattr(self, name) for name in REQUEST_OPTIONS}
            result = hook.complete(self.messages, **options)
        finally:
            hook.close()
        self.log.info(
            "completion %s: %d prompt + %d completion tokens, ttft %.1f ms, total %.1f ms, %d attempt(s)",
            result.request_id, result.usage.prompt_tokens, result.usage.completion_tokens,
            result.ttft_ms or 0.0, result.total_ms, result.attempts,
        )
        return result.model_dump(mode="json")
