"""PII masking: each detector, extra patterns, policies, and streams split anywhere."""

from __future__ import annotations

import random
import time

import pytest

from airflow_provider_genesys_llm.governance.detectors import BUILT_IN, DETECTOR_BACK, MAX_EXTRA_REACH, pattern_reach
from airflow_provider_genesys_llm.governance.masking import (
    STEP_CHARS,
    MaskResult,
    PiiDetectedError,
    PiiMasker,
    StreamRedactor,
    apply_policy,
)
from airflow_provider_genesys_llm.governance.normalize import NORMALIZE_REACH

MASKER = PiiMasker({"employee_id": r"EMP-\d{6}"})


def masked(text: str) -> str:
    return MASKER.mask(text).text


@pytest.mark.parametrize(
    ("text", "value", "kind"),
    [
        ("SSN 123-45-6789 on file", "123-45-6789", "SSN"),
        ("card 4111 1111 1111 1111.", "4111 1111 1111 1111", "CARD"),
        ("card 4111-1111-1111-1111", "4111-1111-1111-1111", "CARD"),
        ("card 4111111111111111", "4111111111111111", "CARD"),
        ("amex 3782 822463 10005", "3782 822463 10005", "CARD"),
        ("mastercard 5555555555554444", "5555555555554444", "CARD"),
        ("call (555) 123-4567 today", "(555) 123-4567", "PHONE"),
        ("call 555-123-4567", "555-123-4567", "PHONE"),
        ("call 555.123.4567.", "555.123.4567", "PHONE"),
        ("call +1 555 123 4567", "+1 555 123 4567", "PHONE"),
        ("call +1 (555) 123-4567", "+1 (555) 123-4567", "PHONE"),
        ("call 1-800-555-0199", "1-800-555-0199", "PHONE"),
        ("call +44 20 7946 0958", "+44 20 7946 0958", "PHONE"),
        ("call +442079460958", "+442079460958", "PHONE"),
        ("mail john.doe+billing@example.co.uk, thanks", "john.doe+billing@example.co.uk", "EMAIL"),
        ("mail <Jane_D@mail.example.com>", "Jane_D@mail.example.com", "EMAIL"),
        ("badge EMP-123456 scanned", "EMP-123456", "EMPLOYEE_ID"),
    ],
)
def test_detector_finds_and_replaces(text: str, value: str, kind: str) -> None:
    assert MASKER.mask(text) == MaskResult(text.replace(value, f"[REDACTED:{kind}]"), {kind: 1})


@pytest.mark.parametrize(
    "text",
    [
        "SSN-like 000-12-3456 666-12-3456 912-12-3456 123-00-4567 123-45-0000",
        "order 1234567890123456 and 1234 5678 9012 3456",  # 16 digits, Luhn-invalid
        "a 20-digit reference 41111111111111111111",
        "pi is 3.4111111111111111 and the total 4111111111111111.50",
        "ticket 12345, zip 90210-1234, extension 555-1234",
        "meet at 12:30 or 10:30-11:45 on 2024-01-15, 01/15/2024 or 15.01.2024",
        "it costs $1,234.56 or 1 234 567 EUR, up +12.5 percent",
        "serial ABC4111111111111111 and build 192.168.100.1000",
        "not mail: user@localhost, @handle, a@b",
        "badge EMP-12345 is too short",
        "a table of 100 200 300 400 500 600 700",
    ],
)
def test_lookalikes_are_left_alone(text: str) -> None:
    assert MASKER.mask(text) == MaskResult(text, {})


def test_card_is_cut_out_of_a_run_of_numbers() -> None:
    assert masked("Qty 2 4111 1111 1111 1111 12/25") == "Qty 2 [REDACTED:CARD] 12/25"
    assert masked("4111 1111 1111 1111 123") == "[REDACTED:CARD] 123"
    assert masked("555 123 4567 4111 1111 1111 1111") == "[REDACTED:PHONE] [REDACTED:CARD]"


def test_counts_every_finding() -> None:
    result = MASKER.mask("a@example.com b@example.com 123-45-6789\n4111111111111111")

    assert result.text == "[REDACTED:EMAIL] [REDACTED:EMAIL] [REDACTED:SSN]\n[REDACTED:CARD]"
    assert result.counts == {"CARD": 1, "EMAIL": 2, "SSN": 1}


@pytest.mark.parametrize(
    ("patterns", "message"),
    [
        ({"EMAIL": r"x\d"}, "already used"),
        ({"card": r"x\d"}, "already used"),
        ({"bad name": r"x\d"}, "letters, digits and underscores"),
        ({"BROKEN": r"x(\d"}, "not a valid regular expression"),
        ({"ANYTHING": r"\d{0,9}"}, "matches the empty string"),
        ({"UNBOUNDED": r"EMP-\d+"}, "no bound.*instead of \\+ or \\*"),
        ({"LONG": r"x{300}"}, f"300 characters; the limit is {MAX_EXTRA_REACH}"),
        ({"PEEK": r"x(?=.*y)"}, "no bound"),
        ({"BEHIND": r"(?<=a{40})x"}, "looks behind 40 characters"),
    ],
)
def test_bad_extra_patterns_are_refused(patterns: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PiiMasker(patterns)


def test_fail_policy_names_types_and_counts_never_values() -> None:
    redactor = StreamRedactor(MASKER, "fail")

    prose = "all fine so far " * 40
    emitted = redactor.feed(prose)
    assert emitted and prose.startswith(emitted)
    assert redactor.feed("ssn 123-45-6789 on file") == ""  # held back: not judged yet
    with pytest.raises(PiiDetectedError) as raised:
        redactor.finish()

    assert "SSN=1" in str(raised.value)
    assert "6789" not in str(raised.value)
    assert raised.value.counts == {"SSN": 1}


def test_flag_policy_keeps_text_and_reports() -> None:
    text = "reach me at jane@example.com or 555-123-4567"

    result = apply_policy(MASKER, text, "flag")

    assert result.text == text
    assert result.counts == {"EMAIL": 1, "PHONE": 1}


def test_unknown_policy_is_refused() -> None:
    with pytest.raises(ValueError, match="redact, fail, flag"):
        StreamRedactor(MASKER, "warn")  # type: ignore[arg-type]


def test_card_split_over_five_frames_is_caught() -> None:
    redactor = StreamRedactor(MASKER)
    frames = ["Card: ", "4111", " 1111", " 11", "11 1", "111", " thanks"]

    emitted = [redactor.feed(frame) for frame in frames] + [redactor.finish()]

    assert "".join(emitted) == "Card: [REDACTED:CARD] thanks"
    assert not any("1111" in chunk or "4111" in chunk for chunk in emitted)
    assert redactor.counts == {"CARD": 1}


def test_extra_patterns_with_flags_and_whitespace_work() -> None:
    masker = PiiMasker({"flags": r"(?i)emp-\d{6}", "project": r"Project [A-Z][a-z]{1,20}"})

    assert masker.mask("emp-123456 on Project Falcon").text == "[REDACTED:FLAGS] on [REDACTED:PROJECT]"


@pytest.mark.parametrize("text", ["x" * 5000, "word " * 1000, "7" * 5000, "4111" * 1250])
def test_hold_back_is_bounded(text: str) -> None:
    redactor = StreamRedactor(MASKER)
    bound = STEP_CHARS + MASKER.overlap + NORMALIZE_REACH

    emitted = 0
    for fed in range(0, len(text), 7):
        emitted += len(redactor.feed(text[fed : fed + 7]))
        assert fed + 7 - emitted <= bound
    assert emitted + len(redactor.finish()) == len(MASKER.mask(text).text)


#: Prose, PII, lookalikes and a blob longer than a segment, glued in every way that matters.
FRAGMENTS = "the customer asked for a refund . , 1 22 2024-01-15 12:30 $1,234.56 a@b.co EMP-123456".split() + [
    "4111 1111 1111 1111",
    "4111-1111-1111-1111",
    "1234 5678 9012 3456",
    "555-123-4567",
    "(555) 123-4567",
    "+1 (555) 123-4567",
    "+44 20 7946 0958",
    "123-45-6789",
    "john.doe@example.com",
    "9 9 9 9",
    "x" * 300,
    "7" * 300,
    # spellings that only normalisation reveals, and pieces of them
    "４１１１ １１１１ １１１１ １１１１",
    "4111\u200b1111\u200b1111\u200b1111",
    "\\u0034111111111111111",
    "\\\\u0034",
    "4111 1111\n1111 1111",
    "123-45-\n6789",
    "ssn: 123456789",
    "SSN 401 22 7315",
    "DE89 3704 0044 0532 0130 00",
    "4155550132",
    "order 5123456789",
    "x@\nexample.com",
    "555\u00a0123\u00a04567",
    "\u2013",
    "é’",
    "\\n",
    "        ",
]
GLUE = [" ", " ", "", "\n", "  ", ". ", "\t", "\\n", " \n ", "\u00a0", "\u200b"]


def random_text(rng: random.Random) -> str:
    return "".join(rng.choice(FRAGMENTS) + rng.choice(GLUE) for _ in range(rng.randint(0, 40)))


def random_split(rng: random.Random, text: str) -> list[str]:
    cuts = sorted(rng.sample(range(1, len(text)), min(len(text) - 1, rng.randint(0, len(text))))) if text else []
    return [text[start:end] for start, end in zip([0, *cuts], [*cuts, len(text)], strict=True)]


def test_stream_equals_whole_text_masking_for_any_split() -> None:
    rng = random.Random(20240115)
    for _ in range(1500):
        text = random_text(rng)
        redactor = StreamRedactor(MASKER)

        streamed = "".join(redactor.feed(token) for token in random_split(rng, text)) + redactor.finish()

        expected = MASKER.mask(text)
        assert streamed == expected.text, text
        assert redactor.counts == expected.counts


def test_one_character_tokens_equal_whole_text_masking() -> None:
    text = "Call +1 (555) 123-4567 or pay with 4111 1111 1111 1111 12/25; SSN 123-45-6789 "
    redactor = StreamRedactor(MASKER)

    streamed = "".join(redactor.feed(char) for char in text) + redactor.finish()

    assert streamed == masked(text)


def test_long_digit_runs_cost_linear_time() -> None:
    started = time.process_time()

    MASKER.mask("1 " * 10_000 + "a")

    assert time.process_time() - started < 1.0  # was about 3 s when runs backtracked group by group


@pytest.mark.parametrize("detector", BUILT_IN, ids=[f"{d.kind}-{i}" for i, d in enumerate(BUILT_IN)])
def test_built_in_detectors_declare_a_reach_their_pattern_keeps(detector) -> None:
    """A pattern edited to read further than its declared reach would break stream equality."""
    reach, behind = pattern_reach(detector.pattern.pattern)

    assert reach + 2 <= detector.reach
    assert behind <= DETECTOR_BACK


def test_long_extra_pattern_is_found_across_every_split() -> None:
    masker = PiiMasker({"claim": r"CLAIM-[A-Z0-9]{200,240}"})
    value = "CLAIM-" + "AB12" * 55
    text = "x" * 300 + value + "y" * 10 + " " + value + "." + "z" * 50

    expected = masker.mask(text)

    assert expected.counts == {"CLAIM": 2} and value not in expected.text
    for size in (1, 7, 255, 256, 257):
        redactor = StreamRedactor(masker)
        out = "".join(redactor.feed(text[at : at + size]) for at in range(0, len(text), size)) + redactor.finish()
        assert out == expected.text, size
