"""Safety filters: reasoning blocks, generation error lines, and what the pipeline reports."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from airflow_provider_genesys_llm.governance.filters import (
    FilterOutcome,
    FilterPipeline,
    GenerationErrorFilter,
    ThinkBlockFilter,
    default_filters,
)
from airflow_provider_genesys_llm.governance.masking import PiiDetectedError
from airflow_provider_genesys_llm.governance.policy import Governance


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


def test_think_block_inside_a_number_keeps_its_grouping_and_inside_a_word_joins_it() -> None:
    think = ThinkBlockFilter()

    assert think.apply("card 4111 1111<think>x</think> 1111 1111") == "card 4111 1111 1111 1111"
    assert think.apply("mail jane.doe@exa<think>x</think>\n mple.com") == "mail jane.doe@example.com"
    assert think.apply("Done.<think>x</think>\n\nBye") == "Done.Bye"


@dataclass(frozen=True)
class DropMarkers:
    """A deployment's own filter that removes inline markers, and so can join what they split."""

    name: str = "drop_markers"

    def apply(self, text: str) -> str:
        return text.replace("[cite]", "")


@pytest.mark.parametrize("policy", ["redact", "fail"])
def test_masking_runs_after_every_filter_so_no_filter_can_reassemble_a_value(policy: str) -> None:
    governance = Governance(output_policy=policy, filters=[*default_filters(), DropMarkers()])  # type: ignore[arg-type]
    text = "card 4111 1111[cite] 1111 1111 and SSN 123-45-<think>x</think>6789"

    if policy == "fail":
        with pytest.raises(PiiDetectedError):
            governance.govern_output(text)
        return
    governed = governance.govern_output(text)
    assert governed.text == "card [REDACTED:CARD] and SSN [REDACTED:SSN]"
    assert governed.masking_counts == {"CARD": 1, "SSN": 1}
    assert governed.filters_applied == ("think_block", "drop_markers")
