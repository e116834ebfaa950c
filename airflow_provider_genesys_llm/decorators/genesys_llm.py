"""``@task.genesys_llm``: a function that builds the prompt, run as a governed completion.

The function returns the prompt (a string, sent as one user message) or the chat messages (a
list of ``{"role", "content"}`` dicts); everything else is ``GenesysLLMCompletionOperator``: the
prompt is masked before it is sent, the answer is filtered and masked before it reaches XCom, one
completion audit record and the completion metrics are written, and the task's XCom is the same
masked result dict. Keyword arguments of the decorator are the operator's (``system``,
``response_format``, ``audit_conn_id``, ...)::

    @task.genesys_llm(system="Answer in JSON with sentiment, intent and summary.", response_format="json")
    def classify(transcript: str) -> str:
        return f"Classify this call:\\n{transcript}"

The function's arguments often carry customer text (a transcript from XCom): like the prompt
fields, ``op_args`` and ``op_kwargs`` reach Airflow's rendered-template store only as masked
previews, and the function itself gets the real values.

With ``output_schema`` (a pydantic model class or a JSON-schema dict, templated) and
``output_retries``, the answer is validated and re-asked as on the operator, and the task's XCom
is the validated object.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any, ClassVar

from airflow.sdk.bases.decorator import DecoratedOperator, TaskDecorator, determine_kwargs, task_decorator_factory
from airflow.sdk.definitions._internal.types import SET_DURING_EXECUTION
from airflow.sdk.definitions.context import Context, context_merge

from ..operators.completion import GenesysLLMCompletionOperator
from ..rendered_fields import PREVIEW_CHARS, masked_preview


class PromptTypeError(TypeError):
    """The decorated function returned something that is not a prompt; a retry would fail the same way."""


def as_messages(prompt: Any) -> list[dict[str, str]]:
    """The function's return value as chat messages: a string becomes one user message."""
    if isinstance(prompt, str):
        if not prompt.strip():
            raise PromptTypeError("the @task.genesys_llm function returned an empty prompt; return the text to send")
        return [{"role": "user", "content": prompt}]
    if isinstance(prompt, Sequence) and prompt and all(_is_message(message) for message in prompt):
        return [{"role": message["role"], "content": message["content"]} for message in prompt]
    raise PromptTypeError(
        f"the @task.genesys_llm function returned a {type(prompt).__name__}; return the prompt as a non-empty "
        'str or the messages as a non-empty list of {"role": str, "content": str} dicts'
    )


def _is_message(message: Any) -> bool:
    return (
        isinstance(message, Mapping)
        and isinstance(message.get("role"), str)
        and isinstance(message.get("content"), str)
    )


class GenesysLLMDecoratedOperator(DecoratedOperator, GenesysLLMCompletionOperator):
    """The operator behind ``@task.genesys_llm``: the callable's return value becomes ``messages``.

    :param python_callable: the decorated function; it returns the prompt (a non-empty string, sent
        as one user message) or the chat messages (a non-empty list of ``{"role", "content"}``
        dicts). Anything else fails the task with ``PromptTypeError`` before any request.
    :param op_args: positional arguments of the function (often an upstream task's XCom),
        templated; the rendered-template store keeps a masked preview, the function gets the
        real values. Default ``None``.
    :param op_kwargs: keyword arguments of the function, templated and masked like ``op_args``;
        context keys it names (``ds``, ``ti``, ...) are filled in too. Default ``None``.

    Every other keyword argument is ``GenesysLLMCompletionOperator``'s (``system``, ``model``,
    ``temperature``, ``max_tokens``, ``prompt_id``, ``response_format``, ``audit_conn_id``, ...,
    the request options templated as there) or ``BaseOperator``'s; ``messages`` is refused.
    """

    custom_operator_name: str = "@task.genesys_llm"
    template_fields: Sequence[str] = (*DecoratedOperator.template_fields, *GenesysLLMCompletionOperator.template_fields)
    template_fields_renderers: ClassVar[dict[str, str]] = {
        **DecoratedOperator.template_fields_renderers,
        **GenesysLLMCompletionOperator.template_fields_renderers,
    }
    masked_template_fields: ClassVar[tuple[str, ...]] = (
        *GenesysLLMCompletionOperator.masked_template_fields,
        "op_args",
        "op_kwargs",
    )
    #: Store the rendered fields again after ``execute``, so the UI shows the (masked) prompt built.
    overwrite_rtif_after_execution: bool = True

    def __init__(
        self,
        *,
        python_callable: Callable[..., Any],
        op_args: Collection[Any] | None = None,
        op_kwargs: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        if "messages" in kwargs:
            raise TypeError("@task.genesys_llm builds messages from the function's return value; do not pass messages")
        super().__init__(
            python_callable=python_callable,
            op_args=op_args,
            op_kwargs=op_kwargs,
            messages=SET_DURING_EXECUTION,
            **kwargs,
        )

    def execute(self, context: Context) -> Any:
        op_args, op_kwargs = self.raw_field("op_args"), self.raw_field("op_kwargs")
        context_merge(context, op_kwargs)
        kwargs = determine_kwargs(self.python_callable, op_args, context)
        messages = as_messages(self.python_callable(*op_args, **kwargs))
        # The completion operator reads the raw value; Airflow stores the attribute: a masked preview.
        self.__dict__.setdefault("_raw_rendered", {})["messages"] = messages
        self.messages = masked_preview(messages, self.preview_masker, PREVIEW_CHARS)
        return super().execute(context)


def genesys_llm_task(python_callable: Callable[..., Any] | None = None, **kwargs: Any) -> TaskDecorator:
    """Wrap a function that returns a prompt (or messages) into a governed Genesys LLM completion task.

    :param python_callable: the function; ``None`` when the decorator is called with arguments
        (``@task.genesys_llm(system=...)``).
    :param kwargs: ``GenesysLLMCompletionOperator``'s (see ``GenesysLLMDecoratedOperator``) and
        ``BaseOperator``'s. ``multiple_outputs`` defaults to ``False`` whatever the function's return
        annotation says: the annotation describes the prompt, while the task's return value is the
        completion operator's result dict; set it to ``True`` to push each key of that dict as its
        own XCom.
    """
    kwargs.setdefault("multiple_outputs", False)
    return task_decorator_factory(
        python_callable=python_callable, decorated_operator_class=GenesysLLMDecoratedOperator, **kwargs
    )
