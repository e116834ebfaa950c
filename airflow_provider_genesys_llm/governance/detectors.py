"""PII detectors: a bounded pattern that finds candidates and a check that keeps only real values.

Each detector reads normalised text (see ``normalize``). Its pattern finds where a value may
start; its check (Luhn, mod-97, SSN area rules, a keyword nearby, ...) says whether one does and
where it ends. Every detector declares its *reach*: the most characters the pattern and the check
read from a candidate's start, lookaheads included. The stream redactor uses the longest reach
as its overlap, so a value is judged on the same characters however the text arrives.

Built-in detectors, in priority order (at one position the first wins):

- ``CARD``: 13-19 digits, Luhn-valid, with an issuer prefix (2221-2720, 3, 4, 5, 6), written as one
  group or in groups of 4-6 digits (the last 3-6: 4-4-4-4, Amex 4-6-5, 4-4-4-4-3), separated by
  spaces, dashes, dots or line breaks (one kind per number); not part of a word or a decimal.
- ``SSN``: ``AAA-GG-SSSS`` anywhere; ``AAAGGSSSS``, ``AAA GG SSSS`` and ``AAA.GG.SSSS`` only right
  after a keyword (``SSN``, ``SS#``, ``social security (number)``, ...) or right before one. Area
  000, 666 and 900-999, group 00 and serial 0000 are never issued, so never matched.
- ``IBAN``: a country code with its registered length, check digits, mod-97 valid, with or
  without single spaces.
- ``PHONE``: North American forms with separators or parentheses, ``+`` and 8-15 digits, and bare
  10 digits (or 1 + 10) with area code and exchange starting 2-9, unless an id word comes first
  (``order``, ``ticket``, ``invoice``, ``#``, ...).
- ``EMAIL``: local part up to 64 characters, a domain of dotted labels with an alphabetic TLD.

Extra patterns (``{"EMPLOYEE_ID": r"EMP-\\d{6}"}``) are regular expressions whose matches are
replaced whole. Their reach must be bounded and at most ``MAX_EXTRA_REACH`` characters (use
``{1,64}`` rather than ``+`` or ``*``), and lookbehinds at most ``DETECTOR_BACK`` characters:
a pattern that could match without limit would force the stream redactor to hold back without limit.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, cast

# The standard library has no public way to ask how far a pattern can read, and an extra pattern's
# reach must be bounded (see above). So its own parser, ``re._parser``, measures it: the one that
# compiles the pattern, so the bound cannot disagree with the matcher. ``sre_parse`` and
# ``sre_constants`` are that parser's old names, kept as aliases that warn on import since Python
# 3.11; typeshed describes the parser only under them, so the type checker reads those.
# tests/test_masking.py pins the measured reach, so a change in a new Python release shows there.
if TYPE_CHECKING:
    import sre_constants
    import sre_parse as sre_parser
else:
    from re import _constants as sre_constants
    from re import _parser as sre_parser

#: Longest reach allowed for an extra pattern, lookaheads included.
MAX_EXTRA_REACH = 256
#: Characters a detector may read before a candidate's start (lookbehinds, the id-word check).
DETECTOR_BACK = 32

Span = tuple[int, int]
Check = Callable[[re.Match[str]], Span | None]


@dataclass(frozen=True)
class Detector:
    """One kind of value: where candidates start, how far they can reach, and the check."""

    kind: str
    pattern: re.Pattern[str]
    reach: int
    check: Check


def _whole(match: re.Match[str]) -> Span:
    return match.span()


def _value_group(match: re.Match[str]) -> Span:
    return match.span("value")


def pattern_reach(pattern: str) -> tuple[int, int]:
    """(characters a match can read from its start, characters its lookbehinds read before it).

    The longest match plus every lookahead's longest match: an upper bound, since a lookahead
    inside the match reads no further than its own width past the match's end.
    """
    tree = sre_parser.parse(pattern)
    reach = tree.getwidth()[1] + sum(width for ahead, width in _lookarounds(tree) if ahead)
    return reach, max((width for ahead, width in _lookarounds(tree) if not ahead), default=0)


def _lookarounds(tree: object) -> Iterator[tuple[bool, int]]:
    """(is a lookahead, max width) of every lookaround anywhere in a parsed pattern."""
    if isinstance(tree, sre_parser.SubPattern):
        for op, argument in tree.data:
            if op in (sre_constants.ASSERT, sre_constants.ASSERT_NOT):
                # A lookaround's argument is (direction, subpattern); typeshed's union of argument
                # shapes leaves this one out.
                direction, subpattern = cast("tuple[int, sre_parser.SubPattern]", argument)
                yield direction > 0, subpattern.getwidth()[1]
            yield from _lookarounds(argument)
    elif isinstance(tree, (tuple, list)):
        for item in tree:
            yield from _lookarounds(item)


# --- cards -------------------------------------------------------------------------------------

_CARD_START = re.compile(r"(?a)(?<![\w+])(?=(?:\d[ .\n-]?){13})\d")
_CARD_SEPARATORS = " .-\n"
_CARD_MAX_DIGITS = 19


def _card(match: re.Match[str]) -> Span | None:
    """The longest card starting at the candidate, if any (the rules in the module docstring)."""
    text, start = match.string, match.start()
    if start >= 2 and text[start - 1] in ".," and text[start - 2].isdigit():
        return None  # the decimals of 3.4111...
    groups, separators = _digit_groups(text, start)
    best = None
    digits = ""
    for last, (group_start, group_end) in enumerate(groups):
        digits += text[group_start:group_end]
        if len(digits) > _CARD_MAX_DIGITS or len(set(separators[:last]) - {"\n"}) > 1:
            break
        if (
            len(digits) >= 13
            and _card_shaped(groups[: last + 1], separators[:last])
            and _card_ends(text, group_end, separators[:last])
            and _card_number(digits)
        ):
            best = (start, group_end)
    return best


def _digit_groups(text: str, position: int) -> tuple[list[Span], list[str]]:
    """Digit groups from ``position`` joined by single separators, up to 20 digits in all."""
    groups: list[Span] = []
    separators: list[str] = []
    budget = _CARD_MAX_DIGITS + 1
    while budget > 0:
        end = position
        while end < len(text) and end - position < budget and "0" <= text[end] <= "9":
            end += 1
        groups.append((position, end))
        budget -= end - position
        if end + 1 < len(text) and text[end] in _CARD_SEPARATORS and "0" <= text[end + 1] <= "9":
            separators.append(text[end])
            position = end + 1
        else:
            break
    return groups, separators


def _card_shaped(groups: list[Span], separators: list[str]) -> bool:
    """One group, or printed groups; a line break may also sit inside a group."""
    sizes = [end - start for start, end in groups]
    joined: list[int] = sizes[:1]
    for separator, size in zip(separators, sizes[1:], strict=False):  # a trailing separator has no group
        if separator == "\n":
            joined[-1] += size
        else:
            joined.append(size)
    return any(
        len(shape) == 1 or (all(4 <= size <= 6 for size in shape[:-1]) and 3 <= shape[-1] <= 6)
        for shape in (sizes, joined)
    )


def _card_ends(text: str, end: int, separators: list[str]) -> bool:
    """The number ends here: no letter follows, and no decimal part (``4111...1111.50``) unless
    the number is itself printed with dots."""
    if end >= len(text):
        return True
    after = text[end]
    if after.isalpha() or after == "_":
        return False
    return not (after in ".," and end + 1 < len(text) and text[end + 1].isdigit() and after not in separators)


def _card_number(digits: str) -> bool:
    issuer = digits[0] in "3456" or 2221 <= int(digits[:4]) <= 2720
    return issuer and luhn_ok(digits)


def luhn_ok(digits: str) -> bool:
    total = 0
    for position, digit in enumerate(map(int, reversed(digits))):
        if position % 2:
            digit = digit * 2 - 9 if digit > 4 else digit * 2
        total += digit
    return total % 10 == 0


# --- SSN -----------------------------------------------------------------------------------------


def _digits(count: int) -> str:
    """``count`` digits, maybe cut by the ``\\n`` that normalisation leaves where a number was broken."""
    return rf"(?:\d\n?){{{count - 1}}}\d"


_SSN_AREA = rf"(?!000|666|9\d\d){_digits(3)}"
_SSN_GROUP = rf"(?!00){_digits(2)}"
_SSN_SERIAL = rf"(?!0000){_digits(4)}"
_SSN_DASHED = re.compile(rf"(?a)(?<![\w-])(?<!\d[.,])(?P<value>{_SSN_AREA}-{_SSN_GROUP}-{_SSN_SERIAL})(?![\w-]|[.,]\d)")
_SSN_KEYWORD = (
    r"(?i:ssn|(?<![A-Za-z])ss(?:\#|[ _-]?no\b\.?)|social[\s_-]{0,3}security(?:[\s_-]{0,3}(?:number|num|no\b\.?|\#))?"
    r"|soc\.?[\s_-]{0,3}sec\.?(?:[\s_-]{0,3}(?:number|num|no\b\.?|\#))?)"
)
_SSN_FILLER = r"(?:[\s:#=.,'\"()\[\]{}_-]|(?i:is|was|number|num|no|of)\b){0,10}"
_SSN_LOOSE = rf"(?P<value>{_SSN_AREA}(?P<sep>[ .\n]?){_SSN_GROUP}(?P=sep){_SSN_SERIAL})"
_SSN_AFTER_KEYWORD = re.compile(rf"(?a){_SSN_KEYWORD}{_SSN_FILLER}{_SSN_LOOSE}(?![\w-]|[.,]\d)")
_SSN_BEFORE_KEYWORD = re.compile(
    rf"(?a)(?<![\w-])(?<!\d[.,]){_SSN_LOOSE}"
    rf"(?:[\s:#=.,'\"()\[\]{{}}_-]|(?i:is|was|as|my|his|her|the|their|your)\b){{0,6}}{_SSN_KEYWORD}"
)

# --- IBAN ----------------------------------------------------------------------------------------

#: Registered IBAN lengths by country (SWIFT IBAN registry).
IBAN_LENGTHS: Mapping[str, int] = {
    "AD": 24,
    "AE": 23,
    "AL": 28,
    "AT": 20,
    "AZ": 28,
    "BA": 20,
    "BE": 16,
    "BG": 22,
    "BH": 22,
    "BI": 27,
    "BR": 29,
    "BY": 28,
    "CH": 21,
    "CR": 22,
    "CY": 28,
    "CZ": 24,
    "DE": 22,
    "DJ": 27,
    "DK": 18,
    "DO": 28,
    "EE": 20,
    "EG": 29,
    "ES": 24,
    "FI": 18,
    "FK": 18,
    "FO": 18,
    "FR": 27,
    "GB": 22,
    "GE": 22,
    "GI": 23,
    "GL": 18,
    "GR": 27,
    "GT": 28,
    "HR": 21,
    "HU": 28,
    "IE": 22,
    "IL": 23,
    "IQ": 23,
    "IS": 26,
    "IT": 27,
    "JO": 30,
    "KW": 30,
    "KZ": 20,
    "LB": 28,
    "LC": 32,
    "LI": 21,
    "LT": 20,
    "LU": 20,
    "LV": 21,
    "LY": 25,
    "MC": 27,
    "MD": 24,
    "ME": 22,
    "MK": 19,
    "MN": 20,
    "MR": 27,
    "MT": 31,
    "MU": 30,
    "NI": 28,
    "NL": 18,
    "NO": 15,
    "OM": 23,
    "PK": 24,
    "PL": 28,
    "PS": 29,
    "PT": 25,
    "QA": 29,
    "RO": 24,
    "RS": 22,
    "RU": 33,
    "SA": 24,
    "SC": 31,
    "SD": 18,
    "SE": 24,
    "SI": 19,
    "SK": 24,
    "SM": 27,
    "SO": 23,
    "ST": 25,
    "SV": 28,
    "TL": 23,
    "TN": 24,
    "TR": 26,
    "UA": 29,
    "VA": 22,
    "VG": 24,
    "XK": 20,
}
_IBAN_START = re.compile(r"(?a)(?<![A-Za-z0-9])[A-Z]{2}\d{2}(?= ?[A-Za-z0-9])")


def _iban(match: re.Match[str]) -> Span | None:
    """Exactly the country's length of letters and digits, single spaces allowed, mod-97 valid."""
    text, start = match.string, match.start()
    length = IBAN_LENGTHS.get(text[start : start + 2])
    if length is None:
        return None
    chars: list[str] = []
    position = start
    while len(chars) < length and position < len(text):
        char = text[position]
        if char.isascii() and char.isalnum():
            chars.append(char.upper())
        elif not (char in " \n" and chars and position + 1 < len(text) and text[position + 1] not in " \n"):
            break
        position += 1
    if len(chars) < length or (position < len(text) and text[position].isascii() and text[position].isalnum()):
        return None
    rearranged = "".join(chars[4:] + chars[:4])
    return (start, position) if int("".join(str(int(char, 36)) for char in rearranged)) % 97 == 1 else None


# --- phone and email -------------------------------------------------------------------------

_PHONE = re.compile(
    r"(?a)(?<![\w+])(?<!\d[ .-])"
    rf"(?:(?:\+?1[ .-]?)?(?:\({_digits(3)}\) ?|{_digits(3)}[ .\n-]){_digits(3)}[ .\n-]{_digits(4)}"
    r"|\+[1-9](?:[ .\n-]?\d){7,14})"
    r"(?![.-]?\d|[ \n]\d{1,3}(?!\d))(?!\w)"
)
_BARE_PHONE = re.compile(r"(?a)(?<![\w+.,-])(?<!\d[ .])(?:1\n?)?[2-9]\n?\d\n?\d\n?[2-9](?:\n?\d){6}(?![.,]?\d)(?!\w)")
#: A word before a bare number that makes it an id, not a phone number (``order 5123456789``).
_ID_WORD = re.compile(
    r"(?i)(?:order|ticket|case|ref(?:erence)?|invoice|tracking|confirmation|transaction|account|acct|id|sku|"
    r"po|serial|shipment|booking|receipt|#)[\s:#=\"'_-]{0,4}(?:no\.?|num(?:ber)?|id)?[\s:#=\"'_-]{0,4}\Z"
)


def _bare_phone(match: re.Match[str]) -> Span | None:
    before = match.string[max(0, match.start() - DETECTOR_BACK) : match.start()]
    return None if _ID_WORD.search(before) else match.span()


_EMAIL = re.compile(r"(?a)(?<![\w.%+-])[\w.%+-]{1,64}@[A-Za-z0-9.-]{1,190}")
_EMAIL_LABEL = re.compile(r"(?a)[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")


def _email(match: re.Match[str]) -> Span | None:
    """Trim trailing dots (end of sentence) and check the domain's labels and TLD."""
    local, _, domain = match.group().partition("@")
    domain = domain.rstrip(".-")
    end = match.start() + len(local) + 1 + len(domain)
    labels = domain.split(".")
    if end < len(match.string) and match.string[end] == "_":
        return None
    if len(labels) < 2 or not labels[-1].isalpha() or len(labels[-1]) < 2:
        return None
    return (match.start(), end) if all(_EMAIL_LABEL.fullmatch(label) for label in labels) else None


def _built_in(kind: str, pattern: re.Pattern[str], check: Check, check_reach: int = 0) -> Detector:
    """A detector whose reach covers its pattern (computed) and its check (``check_reach``, by reading it)."""
    return Detector(kind, pattern, max(pattern_reach(pattern.pattern)[0] + 2, check_reach), check)


BUILT_IN: tuple[Detector, ...] = (
    _built_in("CARD", _CARD_START, _card, check_reach=_CARD_MAX_DIGITS * 2 + 6),  # 20 digits, separators, 2 after
    _built_in("SSN", _SSN_DASHED, _value_group),
    _built_in("SSN", _SSN_AFTER_KEYWORD, _value_group),
    _built_in("SSN", _SSN_BEFORE_KEYWORD, _value_group),
    _built_in("IBAN", _IBAN_START, _iban, check_reach=max(IBAN_LENGTHS.values()) * 2 + 4),  # spaced, 2 after
    _built_in("PHONE", _PHONE, _whole),
    _built_in("PHONE", _BARE_PHONE, _bare_phone),
    _built_in("EMAIL", _EMAIL, _email),  # the check reads one character past the match
)
_BUILT_IN_KINDS = frozenset(detector.kind for detector in BUILT_IN)
_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")


def extra_detectors(patterns: Mapping[str, str]) -> tuple[Detector, ...]:
    """Detectors for named extra patterns, refused (``ValueError``) if a stream could not bound them."""
    detectors: list[Detector] = []
    for name, pattern in patterns.items():
        kind = name.upper()
        if not _NAME.fullmatch(name):
            raise ValueError(f"masking pattern name {name!r} must be letters, digits and underscores")
        if kind in _BUILT_IN_KINDS or any(detector.kind == kind for detector in detectors):
            raise ValueError(f"masking pattern name {kind} is already used")
        try:
            compiled = re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"masking pattern {kind} is not a valid regular expression: {exc}") from exc
        if compiled.search("") is not None:
            raise ValueError(f"masking pattern {kind} matches the empty string")
        detectors.append(Detector(kind, compiled, _checked_reach(kind, pattern), _whole))
    return tuple(detectors)


def _checked_reach(kind: str, pattern: str) -> int:
    """How far a match can read from its start; refused if unbounded or over the limits."""
    reach, behind = pattern_reach(pattern)
    if reach > MAX_EXTRA_REACH:
        bound = "no bound" if reach >= sre_constants.MAXREPEAT else f"{reach} characters"
        raise ValueError(
            f"masking pattern {kind} can match or look ahead {bound}; the limit is {MAX_EXTRA_REACH} so that"
            " streams are masked with a bounded overlap: use bounded repeats such as {1,64} instead of + or *"
        )
    if behind > DETECTOR_BACK:
        raise ValueError(f"masking pattern {kind} looks behind {behind} characters; the limit is {DETECTOR_BACK}")
    return reach + 2  # ``$``, ``\b`` and ``\Z`` read one more character
