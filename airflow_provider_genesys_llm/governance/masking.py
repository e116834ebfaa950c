"""PII masking for model output and prompts, whole or streamed token by token.

Detectors (``detectors``) find payment cards, SSNs, IBANs, phone numbers, email addresses and
named extra patterns, each validated so ordinary numbers pass; findings become
``[REDACTED:<TYPE>]``. They read a normalised copy of the text (``normalize``: Unicode digits,
zero-width and no-break spaces, line breaks inside values, JSON escapes), and each finding is
mapped back to the original characters it came from: the output keeps the original text outside
redacted spans byte for byte, and a redaction covers the whole original spelling of the value
(escapes and invisible characters included). Nothing here logs or keeps a detected value.

One scanner, whole text or stream. ``PiiMasker.mask`` is the stream scanner fed the whole text
at once, so ``StreamRedactor`` output equals ``mask`` output for any split of the text into
tokens. The scanner moves left to right; at each position the detector whose candidate starts
first wins (ties by priority), and scanning resumes after the value it found. A candidate is
judged only once the text extends ``reach`` characters past its start (see ``detectors``), so
the judgement reads the same characters whether the text came whole or in pieces. That reach is
the overlap carried between chunks: ``PiiMasker.overlap`` characters, 260 for the built-ins
(an email address) and at most ``MAX_EXTRA_REACH`` + 2 for extra patterns. No cut depends on
whitespace, so values in compact JSON are found wherever the tokens split.

Memory and cost. The stream redactor works in steps of ``STEP_CHARS`` new characters and holds
back at most ``STEP_CHARS`` + ``overlap`` + ``NORMALIZE_REACH`` characters (about 560). Each step
rescans at most ``reach`` characters per detector, so the cost is linear in the stream.
Measured with ``time.process_time`` on this project's 2-core machine, both versions in the same
run, best of 5, redact policy, 100k tokens of contact-center prose (4.8 characters a token, 1%
carrying PII): ``StreamRedactor.feed`` costs 1.46 us of CPU per token, against 1.31 us for the
previous design (whitespace segments cut at 256 characters, which missed values across the cut).
A compact JSON answer full of PII in every spelling costs 2.5 us per token (1.3 before), and
``PiiMasker.mask`` about 190 ns per character (170 before).
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, NamedTuple, get_args

from .detectors import BUILT_IN, DETECTOR_BACK, Detector, extra_detectors
from .normalize import NORMALIZE_BACK, StreamNormalizer

MaskingPolicy = Literal["redact", "fail", "flag"]
#: Policies for model output: replace findings, stop the task, or pass the text on and report.
MASKING_POLICIES: tuple[MaskingPolicy, ...] = get_args(MaskingPolicy)

#: New characters a stream redactor gathers before it scans: fewer rescans of the overlap per token.
STEP_CHARS = 256


class PiiDetectedError(Exception):
    """Model output contained PII under the ``fail`` policy. Names types and counts, never values."""

    def __init__(self, counts: Mapping[str, int]) -> None:
        self.counts = dict(counts)
        found = ", ".join(f"{kind}={count}" for kind, count in sorted(self.counts.items()))
        super().__init__(f"model output contains PII ({found}); the masking policy is 'fail'")


@dataclass(frozen=True)
class MaskResult:
    """Masked text and how many findings of each type were replaced (types with none are absent)."""

    text: str
    counts: dict[str, int]


class PiiMasker:
    """Finds and replaces PII. Pure: no I/O, no logging, safe to share between threads."""

    def __init__(self, extra_patterns: Mapping[str, str] | None = None) -> None:
        self.detectors: tuple[Detector, ...] = BUILT_IN + extra_detectors(extra_patterns or {})
        #: Characters carried between chunks: the longest reach of any detector.
        self.overlap = max(detector.reach for detector in self.detectors)

    def mask(self, text: str) -> MaskResult:
        """Replace every finding in ``text`` with ``[REDACTED:<TYPE>]``."""
        scanner = _Scanner(self, "redact")
        return MaskResult(scanner.push(text, final=True), dict(scanner.counts))


class StreamRedactor:
    """Applies a masking policy to a token stream, across token boundaries.

    ``feed`` returns the text that can no longer change (often ``""``): it gathers
    ``STEP_CHARS`` new characters, then returns what lies before the overlap, masked.
    Under ``fail`` the first finding raises ``PiiDetectedError`` before any text after the
    previous return is handed out; the stream must then be abandoned.
    """

    def __init__(self, masker: PiiMasker, policy: MaskingPolicy = "redact") -> None:
        if policy not in MASKING_POLICIES:
            raise ValueError(f"masking policy must be one of {', '.join(MASKING_POLICIES)}, got {policy!r}")
        self._scanner = _Scanner(masker, policy)
        self._pending: list[str] = []
        self._pending_chars = 0

    @property
    def counts(self) -> dict[str, int]:
        """Findings so far by type, whatever the policy."""
        return dict(self._scanner.counts)

    def feed(self, token: str) -> str:
        """Take the next token; return the text that is now safe to emit (often ``""``)."""
        self._pending.append(token)
        self._pending_chars += len(token)
        if self._pending_chars < STEP_CHARS:
            return ""
        return self._push(final=False)

    def finish(self) -> str:
        """End of stream: return whatever was held back, masked."""
        return self._push(final=True)

    def _push(self, *, final: bool) -> str:
        chunk = "".join(self._pending)
        self._pending.clear()
        self._pending_chars = 0
        return self._scanner.push(chunk, final=final)


def apply_policy(masker: PiiMasker, text: str, policy: MaskingPolicy = "redact") -> MaskResult:
    """Apply ``policy`` to a complete text (a non-streamed answer): one code path with streams."""
    scanner = _Scanner(masker, policy)
    return MaskResult(scanner.push(text, final=True), dict(scanner.counts))


class _Candidate(NamedTuple):
    """Where a detector's pattern matched (absolute), the match, and the base of the text it ran on."""

    start: int
    match: re.Match[str]
    base: int


class _Scanner:
    """The left-to-right scan shared by whole texts and streams (see the module docstring).

    Positions are absolute: ``_raw`` holds original text from ``_raw_base`` on, ``_norm`` the
    normalised text from ``_norm_base`` on. The map from normalised to original positions is a
    list of segments starting at ``_seg_norm[i]``, each either a run copied as is
    (``_seg_end[i] == -1``) or one spot (original ``[_seg_raw[i], _seg_end[i])``).
    """

    def __init__(self, masker: PiiMasker, policy: MaskingPolicy) -> None:
        self._detectors = masker.detectors
        self._policy = policy
        self.counts: Counter[str] = Counter()
        self._normalizer = StreamNormalizer()
        self._raw, self._raw_base, self._raw_done, self._emitted = "", 0, 0, 0
        self._norm, self._norm_base = "", 0
        self._seg_norm, self._seg_raw, self._seg_end = [0], [0], [-1]
        self._from = [0] * len(self._detectors)  # where each detector searches next
        self._found: list[_Candidate | None] = [None] * len(self._detectors)  # its next candidate, judgeable
        self._spans: list[tuple[int, int, str]] = []  # original-text spans to replace, not yet emitted

    def push(self, chunk: str, *, final: bool) -> str:
        """Add ``chunk``; return the text before the new frontier, masked under the policy."""
        self._raw += chunk
        self._normalize(final)
        frontier = self._scan(final)
        out = self._emit(self._raw_base + len(self._raw) if final else self._to_raw(frontier, start=True))
        self._trim(frontier)
        return out

    def _normalize(self, final: bool) -> None:
        done, spots = self._normalizer.step(self._raw, self._raw_base, self._raw_done, final)
        copied_from = self._raw_done
        pieces = [self._norm]
        length = self._norm_base + len(self._norm)
        for start, end, replacement in spots:
            pieces.append(self._raw[copied_from - self._raw_base : start - self._raw_base])
            length += start - copied_from
            self._seg_norm += (length, length + len(replacement))
            self._seg_raw += (start, end)
            self._seg_end += (end, -1)
            pieces.append(replacement)
            length += len(replacement)
            copied_from = end
        pieces.append(self._raw[copied_from - self._raw_base : done - self._raw_base])
        self._norm = "".join(pieces)
        self._raw_done = done

    def _scan(self, final: bool) -> int:
        """Judge every candidate that can be judged; return the first position still open."""
        text, base = self._norm, self._norm_base
        avail = base + len(text)
        while True:
            best: tuple[int, int] | None = None
            horizon = avail
            for index, detector in enumerate(self._detectors):
                found = self._found[index] or self._search(index, detector, text, base, avail, final)
                if found is None:
                    horizon = min(horizon, self._from[index])
                elif best is None or found.start < best[0]:
                    best = (found.start, index)
            if best is None or best[0] >= horizon:
                return horizon
            self._judge(best[1])

    def _search(
        self, index: int, detector: Detector, text: str, base: int, avail: int, final: bool
    ) -> _Candidate | None:
        """The detector's next candidate if it can be judged now; else move its search to the first open position."""
        limit = avail + 1 if final else avail - detector.reach + 1
        match = detector.pattern.search(text, self._from[index] - base) if self._from[index] < limit else None
        if match is None or base + match.start() >= limit:
            self._from[index] = max(self._from[index], avail if final else limit)
            return None
        found = self._found[index] = _Candidate(base + match.start(), match, base)
        return found

    def _judge(self, index: int) -> None:
        """Check the detector's candidate; a finding moves every detector past it."""
        candidate = self._found[index]
        assert candidate is not None
        start, match, base = candidate
        self._found[index] = None
        span = self._detectors[index].check(match)
        if span is None:
            self._from[index] = start + 1
            return
        kind = self._detectors[index].kind
        self.counts[kind] += 1
        if self._policy == "fail":
            raise PiiDetectedError(self.counts)
        end = base + span[1]
        self._add_span(self._to_raw(base + span[0], start=True), self._to_raw(end, start=False), kind)
        for other, found in enumerate(self._found):
            self._from[other] = max(self._from[other], end)
            if found is not None and found.start < end:
                self._found[other] = None

    def _add_span(self, start: int, end: int, kind: str) -> None:
        if self._spans and start < self._spans[-1][1]:
            first, last, first_kind = self._spans[-1]
            self._spans[-1] = (first, max(last, end), first_kind)
        else:
            self._spans.append((max(start, self._emitted), end, kind))

    def _to_raw(self, position: int, *, start: bool) -> int:
        """Original position of a normalised one: where the character at ``position`` starts, or
        where the character before ``position`` ends."""
        at = position if start else position - 1
        index = bisect_right(self._seg_norm, at) - 1
        if self._seg_end[index] != -1:
            return self._seg_raw[index] if start else self._seg_end[index]
        return self._seg_raw[index] + at - self._seg_norm[index] + (0 if start else 1)

    def _emit(self, until: int) -> str:
        out: list[str] = []
        position = self._emitted
        while self._spans and self._spans[0][0] < until:
            start, end, kind = self._spans.pop(0)
            out.append(self._raw[position - self._raw_base : start - self._raw_base])
            flagged = self._raw[start - self._raw_base : end - self._raw_base]
            out.append(flagged if self._policy == "flag" else f"[REDACTED:{kind}]")
            position = end
        until = max(until, position)
        out.append(self._raw[position - self._raw_base : until - self._raw_base])
        self._emitted = until
        return "".join(out)

    def _trim(self, frontier: int) -> None:
        """Drop what no later step reads: emitted original text, normalised text before the frontier."""
        keep_raw = min(self._emitted, self._raw_done - NORMALIZE_BACK)
        if keep_raw > self._raw_base:
            self._raw = self._raw[keep_raw - self._raw_base :]
            self._raw_base = keep_raw
        keep_norm = min(frontier, *self._from) - DETECTOR_BACK
        if keep_norm > self._norm_base:
            self._norm = self._norm[keep_norm - self._norm_base :]
            self._norm_base = keep_norm
            drop = bisect_right(self._seg_norm, keep_norm) - 1
            if drop > 0:
                del self._seg_norm[:drop], self._seg_raw[:drop], self._seg_end[:drop]
