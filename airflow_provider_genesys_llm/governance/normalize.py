"""Text normalisation for PII detection, incremental and with a map back to the original text.

A model or a transcript can write a value so that a plain pattern does not see it: full-width or
other Unicode digits (``４１１１``), zero-width characters or no-break and thin spaces between
digits, a value broken over two lines (``123-45-\\n6789``), or JSON escapes (``\\u0034111``).
Detectors run on a normalised copy in which these are undone; redactions are mapped back to the
original text, so everything outside a redacted span is emitted exactly as it came in.

What is rewritten (each a *spot*: a short piece of original text and its replacement):

- every non-ASCII character: zero-width characters and the soft hyphen vanish, Unicode dashes
  and minus signs become ``-``, decimal digits of any script become ASCII digits, everything
  else goes through NFKC (full-width forms, no-break and thin spaces become ASCII);
- JSON escapes ``\\uXXXX``, ``\\n``, ``\\t``, ``\\"``, ``\\\\`` ...: decoded (then normalised as above).
  They are decoded wherever they occur, not only inside JSON strings: telling strings apart in a
  stream needs the whole answer, and decoding an escape in prose only changes what detectors see.
  ``\\uXXXX`` is decoded after any number of backslashes (up to 8), so JSON inside a JSON string
  (``\\\\u0034``) is read too;
- spaces next to a dash or dot between digits (``4012 - 8888``): removed;
- a line break (real, or the JSON escapes ``\\n``/``\\r\\n``) with up to 8 spaces or tabs around
  it, between digits or dashes, or next to ``@``: removed, except that between two digits it
  becomes one ``\\n``. So do two or more spaces, or a tab, between digits: what a filter leaves
  when it cuts a block out of the middle of a number. The card, phone and SSN detectors read
  ``\\n`` as a group separator (cards also as nothing: a number wrapped inside a group).

Spots are found left to right with one regular expression whose matches are at most
``NORMALIZE_REACH`` characters long (lookarounds included), so a spot that starts at least that
far before the end of the text received so far is final: the stream normaliser never rescans more.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

#: Most characters a spot match can read from its start, lookahead included: 8 + 8 + 8 + 1, rounded up.
NORMALIZE_REACH = 32
#: Characters a spot match reads before its start (lookbehinds: a digit and a dash).
NORMALIZE_BACK = 2

_ZERO_WIDTH = frozenset("\u200b\u200c\u200d\u2060\ufeff\u00ad\u180e")
_DASHES = frozenset("\u2010\u2011\u2012\u2013\u2014\u2015\u2212\ufe58\ufe63\uff0d")
_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "b": "\b", "f": "\f", "/": "/", "\\": "\\", '"': '"'}
_LINE_BREAK = r"[ \t]{0,8}(?:\r\n|\r|\n|\\{1,3}r\\{1,3}n|\\{1,3}[nr])[ \t]{0,8}"
_SPOT = re.compile(
    rf"(?P<brk>(?<=[\d\-\u2010-\u2015\u2212]){_LINE_BREAK}(?=[\d\-\u2010-\u2015\u2212])"
    rf"|(?<=@){_LINE_BREAK}(?=\w)|(?<=\w){_LINE_BREAK}(?=@))"
    r"|(?P<gap>(?<=\d)(?:[ \t]{2,8}|\t)(?=\d)|(?<=\d)[ \t]{1,8}(?=[-.]\d)|(?<=\d[-.])[ \t]{1,8}(?=\d))"
    r"|(?P<esc>\\{1,8}u[0-9A-Fa-f]{4}|\\[\\\"/bfnrt])"
    r"|(?P<uni>[^\x00-\x7f])"
)

Spot = tuple[int, int, str]
"""Absolute start and end of a piece of original text, and what it reads as."""


@lru_cache(maxsize=4096)
def normalize_char(char: str) -> str:
    """What one character reads as for detection (the rules in the module docstring)."""
    if char in _ZERO_WIDTH:
        return ""
    if char in _DASHES:
        return "-"
    if char.isdecimal():
        return str(unicodedata.decimal(char))
    return unicodedata.normalize("NFKC", char)


def _replacement(match: re.Match[str]) -> str:
    text = match.group()
    if match.lastgroup == "uni":
        return normalize_char(text)
    if match.lastgroup == "esc":
        decoded = chr(int(text[-4:], 16)) if len(text) > 5 else _ESCAPES[text[1]]
        return "".join(map(normalize_char, decoded)) if not decoded.isascii() else decoded
    between_digits = match.string[match.start() - 1].isdecimal() and match.string[match.end()].isdecimal()
    return "\n" if between_digits else ""


class StreamNormalizer:
    """Finds the spots of a growing text, each exactly once, in order.

    The caller owns the text; ``step`` is given the buffer, the absolute index of its first
    character and how far normalisation is already decided, and returns the spots that became
    final. The buffer must keep ``NORMALIZE_BACK`` characters before ``done``.
    """

    def __init__(self) -> None:
        self._from = 0

    def step(self, text: str, base: int, done: int, final: bool) -> tuple[int, list[Spot]]:
        """Spots starting in ``[done, new_done)`` and the new ``done`` (absolute positions)."""
        avail = base + len(text)
        limit = avail if final else avail - NORMALIZE_REACH + 1
        spots: list[Spot] = []
        position = max(done, self._from)
        for match in _SPOT.finditer(text, position - base):
            start = base + match.start()
            if start >= limit:
                break
            replacement = _replacement(match)
            if replacement != match.group():
                spots.append((start, base + match.end(), replacement))
            position = base + match.end()
        new_done = max(position, limit)
        self._from = new_done
        return new_done, spots
