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

#: Most characters a spot match can read from its start, lookahead included: 8 + 8 + 8 + 1, rounded
#: up, plus how far before its key a spot can start.
NORMALIZE_REACH = 41
#: Characters a spot match reads before its start (a lookbehind of one character).
NORMALIZE_BACK = 1

_ZERO_WIDTH = frozenset("\u200b\u200c\u200d\u2060\ufeff\u00ad\u180e")
_DASHES = frozenset("\u2010\u2011\u2012\u2013\u2014\u2015\u2212\ufe58\ufe63\uff0d")
_ESCAPES = {"n": "\n", "r": "\r", "t": "\t", "b": "\b", "f": "\f", "/": "/", "\\": "\\", '"': '"'}
_LINE_BREAK = r"[ \t]{0,8}(?:\r\n|\r|\n|\\{1,3}r\\{1,3}n|\\{1,3}[nr])[ \t]{0,8}"
_SPOT = re.compile(
    rf"(?P<brk>(?<=[\d\-\u2010-\u2015\u2212]){_LINE_BREAK}(?=[\d\-\u2010-\u2015\u2212])"
    rf"|(?<=@){_LINE_BREAK}(?=\w)|(?<=\w){_LINE_BREAK}(?=@))"
    r"|(?P<gap>(?<=\d)(?:[ \t]{2,8}|\t)(?=\d))"
    r"|(?P<esc>\\{1,8}u[0-9A-Fa-f]{4}|\\[\\\"/bfnrt])"
)
#: Where a spot may be: every ASCII spot holds one of these within ``_KEY_LAG`` characters of its
#: start, and every non-ASCII character is a spot of its own. Searching for keys first is what
#: keeps normalisation cheap: ``_SPOT`` costs about 160 ns a character, ``_KEY`` about 2.
_KEY = re.compile(r"[\t\n\r\\\x80-\U0010ffff]|  ")
_KEY_LAG = 9
#: A window that holds any spot starting up to ``_KEY_LAG`` characters before a key, lookahead included.
_KEY_WINDOW = 40

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
        position = max(done, self._from) - base
        while (key := _KEY.search(text, position)) and base + key.start() - _KEY_LAG < limit:
            at = key.start()
            if not key.group().isascii():
                if base + at >= limit:
                    break
                replacement, end = normalize_char(key.group()), at + 1
            else:
                match = _SPOT.search(text, max(position, at - _KEY_LAG), at + _KEY_WINDOW)
                if match is None or match.start() > at:
                    position = at + 1
                    continue
                if base + match.start() >= limit:
                    break
                at, end, replacement = match.start(), match.end(), _replacement(match)
            if replacement != text[at:end]:
                spots.append((base + at, base + end, replacement))
            position = end
        new_done = max(base + position, limit)
        self._from = new_done
        return new_done, spots
