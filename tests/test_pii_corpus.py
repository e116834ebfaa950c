"""The PII corpus through every masking path: zero raw values out, and a measured false-positive rate.

Paths: ``PiiMasker.mask``, ``StreamRedactor`` with tokens split at every position and at random,
``Governance.govern_output`` with ``<think>`` blocks inside and around values, and one answer of
compact JSON records; under ``redact`` (nothing raw comes out) and ``fail`` (every case fails,
and the error names no value). ``pytest -s`` prints the false-positive rate on PII-free lines.
"""

from __future__ import annotations

import json
import random
import time

import pytest
from pii_corpus import PII_CASES, PiiCase, clean_corpus, raw_leaks

from airflow_provider_genesys_llm.governance.masking import (
    PiiDetectedError,
    PiiMasker,
    StreamRedactor,
    apply_policy,
)
from airflow_provider_genesys_llm.governance.policy import Governance

MASKER = PiiMasker()
PROSE = "The agent confirmed the refund and apologised for the delay in processing the request. " * 4
CASE_IDS = [f"{case.kind}-{case.form}-{index}" for index, case in enumerate(PII_CASES)]


def streamed(text: str, tokens: list[str], policy: str = "redact") -> tuple[str, dict[str, int]]:
    redactor = StreamRedactor(MASKER, policy)  # type: ignore[arg-type]
    out = "".join(redactor.feed(token) for token in tokens) + redactor.finish()
    return out, redactor.counts


def random_tokens(rng: random.Random, text: str) -> list[str]:
    tokens, position = [], 0
    while position < len(text):
        size = rng.choice((1, 1, 2, 3, 4, 5, 8, 17, 300))
        tokens.append(text[position : position + size])
        position += size
    return tokens


@pytest.mark.parametrize("case", PII_CASES, ids=CASE_IDS)
def test_case_is_masked_whole_and_the_rest_is_kept(case: PiiCase) -> None:
    assert raw_leaks(case.text) == [case.value]  # the case really holds its value

    result = MASKER.mask(case.text)

    assert raw_leaks(result.text) == []
    assert result.counts == {case.kind: 1}
    assert MASKER.mask(result.text).counts == {}  # nothing detectable is left over
    if case.value in case.text:
        assert result.text == case.text.replace(case.value, f"[REDACTED:{case.kind}]")


@pytest.mark.parametrize("case", PII_CASES, ids=CASE_IDS)
def test_fail_policy_stops_every_case_and_names_no_value(case: PiiCase) -> None:
    whole = lambda: apply_policy(MASKER, case.text, "fail")  # noqa: E731
    stream = lambda: streamed(PROSE + case.text, [PROSE, case.text], "fail")  # noqa: E731
    for run in (whole, stream):
        with pytest.raises(PiiDetectedError) as raised:
            run()
        assert raised.value.counts == {case.kind: 1}
        assert raw_leaks(str(raised.value)) == []


@pytest.mark.parametrize("case", PII_CASES, ids=CASE_IDS)
def test_stream_split_at_every_position_equals_whole_masking(case: PiiCase) -> None:
    """The value sits after a prose prefix, so splits fall on both sides of a scan step."""
    text = PROSE[: 200 + len(case.text) % 50] + " " + case.text + " " + PROSE[:80]
    expected = MASKER.mask(text)
    assert raw_leaks(expected.text) == []
    for cut in range(len(text) + 1):
        assert streamed(text, [text[:cut], text[cut:]]) == (expected.text, expected.counts), cut
    assert streamed(text, list(text)) == (expected.text, expected.counts)


def test_stream_random_splits_of_the_whole_corpus_equal_whole_masking() -> None:
    rng = random.Random(8)
    for _ in range(40):
        cases = rng.sample(PII_CASES, 12)
        glue = (" ", "\n", "; ", PROSE[: rng.randint(0, 300)] + " ")
        text = "".join(rng.choice(glue) + case.text + " " for case in cases)
        expected = MASKER.mask(text)

        assert streamed(text, random_tokens(rng, text)) == (expected.text, expected.counts)
        assert raw_leaks(expected.text) == []
        assert sum(expected.counts.values()) == len(cases)


def json_answer(cases: tuple[PiiCase, ...] | list[PiiCase]) -> str:
    """Whitespace-free JSON records, one per case, joined into one answer (as a model writes them)."""
    records = [{"id": index, "intent": "billing", "note": case.text, "ok": True} for index, case in enumerate(cases)]
    return json.dumps({"records": records}, separators=(",", ":"), ensure_ascii=False)


@pytest.mark.parametrize("ascii_only", [False, True], ids=["utf8", "ensure_ascii"])
def test_compact_json_answer_loses_no_value_whole_or_streamed(ascii_only: bool) -> None:
    cases = list(PII_CASES)
    answer = json_answer(cases)
    if ascii_only:
        answer = json.dumps(json.loads(answer), separators=(",", ":"))  # every non-ASCII character as \\uXXXX
    assert len(cases) >= 40 and " " not in answer.replace(" ", "") and raw_leaks(answer)

    expected = MASKER.mask(answer)

    assert raw_leaks(expected.text) == []
    assert sum(expected.counts.values()) == len(cases)
    json.loads(expected.text)  # redaction keeps the JSON valid
    rng = random.Random(40)
    for _ in range(5):
        assert streamed(answer, random_tokens(rng, answer)) == (expected.text, expected.counts)
    assert streamed(answer, list(answer)) == (expected.text, expected.counts)


def test_forty_plain_records_crossing_every_old_cut() -> None:
    """The reported case: 40 compact records, values landing on every offset of the old 256-character cut."""
    plain = [case for case in PII_CASES if case.value in case.text and " " not in case.value]
    cases = [plain[index % len(plain)] for index in range(40)]
    answer = json_answer(cases)

    for tokens in ([answer], [answer[index : index + 3] for index in range(0, len(answer), 3)]):
        out, counts = streamed(answer, tokens)
        assert raw_leaks(out) == [] and sum(counts.values()) == 40


def think_variants(case: PiiCase) -> list[str]:
    """The value inside a reasoning block, around one, and cut in two by one."""
    variants = [f"<think>{case.text}</think>Done.", f"<think>hm</think>{case.text}", f"{case.text}<think>unclosed"]
    if case.value in case.text:
        middle = case.text.index(case.value) + len(case.value) // 2
        variants.append(f"{case.text[:middle]}<think>x</think>{case.text[middle:]}")
        variants.append(f"{case.text[:middle]}<think>\n[GENERATION_ERROR]\n</think>  {case.text[middle:]}")
    return variants


@pytest.mark.parametrize("case", PII_CASES, ids=CASE_IDS)
def test_think_blocks_cannot_hide_or_reassemble_a_value(case: PiiCase) -> None:
    for text in think_variants(case):
        governed = Governance(output_policy="redact").govern_output(text)
        assert raw_leaks(governed.text) == [], text
        visible = Governance(output_policy="flag").govern_output(text)
        if raw_leaks(visible.text):  # the reader would see the value: fail must stop it
            with pytest.raises(PiiDetectedError):
                Governance(output_policy="fail").govern_output(text)
            assert governed.masking_counts == {case.kind: 1}


def test_reported_think_block_split_is_masked_and_fails_under_fail() -> None:
    text = "SSN 123-45-<think>x</think>6789"

    governed = Governance().govern_output(text)

    assert governed.text == "SSN [REDACTED:SSN]"
    assert governed.masking_counts == {"SSN": 1} and governed.filters_applied == ("think_block",)
    with pytest.raises(PiiDetectedError):
        Governance(output_policy="fail").govern_output(text)


def test_false_positive_rate_on_pii_free_lines_is_printed_and_below_one_percent() -> None:
    lines = clean_corpus()
    flagged = [line for line in lines if MASKER.mask(line).counts]
    rate = len(flagged) / len(lines)

    print(f"\nPII false-positive rate: {len(flagged)}/{len(lines)} PII-free lines = {rate:.2%}")
    for line in flagged:
        print(f"  flagged: {MASKER.mask(line).text}")
    assert len(lines) >= 300
    assert rate < 0.01
    joined = "\n".join(lines)
    kept = MASKER.mask(joined)
    assert streamed(joined, random_tokens(random.Random(3), joined)) == (kept.text, kept.counts)


def test_raw_leaks_sees_every_spelling_and_not_masked_values() -> None:
    value = "4539 1488 0343 6467"
    spellings = [
        "4539148803436467",
        "4539-1488-0343-6467",
        "４５３９ １４８８ ０３４３ ６４６７",
        "4539\u200b1488 0343 6467",
        "\\\\u0034539 1488 0343 6467",
        "4539 1488\n0343 6467",
        '"4539","1488","0343","6467"',
    ]
    for spelling in spellings:
        assert value in raw_leaks(f"log: {spelling} end"), spelling
    assert value in raw_leaks(json.dumps({"log": "4539 1488\n0343 6467"}))  # a JSON-escaped line break
    assert raw_leaks("JANE.DOE@EXAMPLE.COM") == ["jane.doe@example.com"]
    assert raw_leaks("/search?q=jane.doe%40example.com") == ["jane.doe@example.com"]
    assert raw_leaks("card [REDACTED:CARD], ssn [REDACTED:SSN], 4539 1488 0343") == []


def test_raw_leaks_scans_a_megabyte_quickly() -> None:
    text = (PROSE + "order 48213 at 2024-01-15 12:30 $129.99 ") * (1_000_000 // 400)
    started = time.process_time()

    assert raw_leaks(text) == []
    assert time.process_time() - started < 2.0
