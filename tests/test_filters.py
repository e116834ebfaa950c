"""Safety filters: reasoning blocks, generation error lines, and what the pipeline reports."""

from __future__ import annotations

from dataclasses import dataclass

from airflow_provider_genesys_llm.governance.filters import (
    FilterOutcome,
    FilterPipeline,
    GenerationErrorFilter,
    ThinkBlockFilter,
    default_filters,
)


def test_think_block_is_removed_across_lines() -> None:
    text = "<think>The user wants\na refund.\n</think>\n\nYour refund is on its way."

    assert ThinkBlockFilter().apply(text) == "Your refund is on its way."


def test_every_think_block_goes_and_the_text_between_stays() -> None:
    text = "A <think>one</think> B <THINK>two</THINK> C"

    assert ThinkBlockFilter().apply(text) == "A B C"


def test_unterminated_think_block_runs_to_the_end() -> None:
    text = "Summary: refund approved.\n<think>but wait, should I\nmention the fee"

    assert ThinkBlockFilter().apply(text) == "Summary: refund approved.\n"


def test_generation_error_lines_are_removed_whole() -> None:
    text = "line one\nsomething [GENERATION_ERROR] upstream timeout\nline three\n[GENERATION_ERROR]"

    assert GenerationErrorFilter().apply(text) == "line one\nline three\n"


def test_pipeline_reports_only_filters_that_changed_something() -> None:
    pipeline = FilterPipeline(default_filters())

    assert pipeline.apply("<think>x</think>Answer") == FilterOutcome("Answer", ("think_block",))
    assert pipeline.apply("Answer\n[GENERATION_ERROR] x") == FilterOutcome("Answer\n", ("generation_error",))
    assert pipeline.apply("Answer") == FilterOutcome("Answer", ())


def test_error_marker_inside_a_think_block_goes_with_the_block() -> None:
    outcome = FilterPipeline(default_filters()).apply("<think>\n[GENERATION_ERROR] retry\n</think>Answer")

    assert outcome == FilterOutcome("Answer", ("think_block",))


@dataclass(frozen=True)
class Shout:
    name: str = "shout"

    def apply(self, text: str) -> str:
        return text.upper()


def test_custom_filters_plug_in_and_run_in_order() -> None:
    pipeline = FilterPipeline([*default_filters(), Shout()])

    assert pipeline.apply("<think>x</think>ok") == FilterOutcome("OK", ("think_block", "shout"))
