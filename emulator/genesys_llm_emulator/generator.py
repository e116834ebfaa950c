"""Deterministic stand-ins for a language model and an embedding model.

Tests need answers that are the same on every run and in every process (to compare a retried
request with its first attempt, or a re-run DAG with its first run), so everything here derives
from the input (the transcript's reading by `standin_model`, and BLAKE2b digests where a choice
stands in for sampling), never from `random` or Python's salted `hash()`. Completion text comes
as word-sized tokens with a leading space, like a real tokenizer's; embeddings are hashed
bag-of-words vectors, so texts that share words are closer than texts that do not: together,
a query finds the stored summaries that talk about the same thing.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

from . import standin_model

if TYPE_CHECKING:
    from .validation import CompletionRequest


class _Stream:
    """An endless, stable stream of small random numbers derived from a seed (BLAKE2b counter mode)."""

    def __init__(self, seed: bytes) -> None:
        self._seed = seed
        self._block = 0
        self._pool = b""

    def below(self, bound: int) -> int:
        if len(self._pool) < 4:
            self._pool += hashlib.blake2b(self._seed + self._block.to_bytes(8, "big")).digest()
            self._block += 1
        value, self._pool = int.from_bytes(self._pool[:4], "big"), self._pool[4:]
        return value % bound

    def pick(self, choices: tuple[str, ...]) -> str:
        return choices[self.below(len(choices))]


@dataclass(frozen=True)
class Insertion:
    """Text to plant in the output (e.g. PII, to test redaction), spread over `pieces` tokens."""

    text: str
    pieces: int


def estimate_tokens(text: str) -> int:
    """The emulator's tokenizer estimate: a token per four characters, at least one."""
    return max(1, math.ceil(len(text) / 4))


def completion_tokens(request: CompletionRequest, count: int, insertion: Insertion | None = None) -> list[str]:
    """`count` tokens answering `request` (see `standin_model`): a JSON object with sentiment, intent
    and summary when the request wants JSON (never fewer than its frame and one summary token), else
    the summary as prose; a planted `insertion` comes on top."""
    reading = standin_model.read(_transcript(request))
    lead = _Stream(_seed(request)).pick(standin_model.LEADS[reading.intent])
    if request.json_output:
        return _json_tokens(reading, lead, count, insertion)
    sentences = reading.summary([lead, f"Sentiment is {reading.sentiment}."], count)
    tokens = _fitted(_tokens(sentences), count)
    return _inserted(tokens, len(tokens) // 2, insertion, escape=False)


def _transcript(request: CompletionRequest) -> str:
    """What the model reads: the user messages, else the template variables' values."""
    user = [message.content for message in request.messages if message.role == "user"]
    return "\n".join(user) if user else "\n".join(str(value) for value in request.variables.values())


def _seed(request: CompletionRequest) -> bytes:
    material = [
        request.model,
        request.prompt_id,
        request.system,
        [[message.role, message.content] for message in request.messages],
        request.variables,
        request.temperature,
    ]
    encoded = json.dumps(material, sort_keys=True, ensure_ascii=False, default=str).encode()
    return hashlib.blake2b(encoded, digest_size=32).digest()


def _tokens(sentences: list[str], *, escape: bool = False) -> list[str]:
    """Word tokens, the first bare and later ones with a leading space, and a "." ending each sentence
    (JSON-escaped with `escape`, for text inside a JSON string)."""
    tokens: list[str] = []
    for sentence in sentences:
        for word in sentence.rstrip(".").split():
            word = json.dumps(word)[1:-1] if escape else word
            tokens.append(word if not tokens else f" {word}")
        tokens.append(".")
    return tokens


def _fitted(tokens: list[str], count: int) -> list[str]:
    """`tokens` cut, or padded with `standin_model.FILLER`, to exactly `count`: the emulator's
    answers have a configured length (`completion_tokens`), whatever the transcript says."""
    filler = _tokens([standin_model.FILLER])
    while len(tokens) < count:
        tokens = tokens + ([f" {filler[0]}"] if tokens else filler[:1]) + filler[1:]
    return tokens[:count]


def _json_tokens(reading: standin_model.Reading, lead: str, count: int, insertion: Insertion | None) -> list[str]:
    """`{"sentiment": ..., "intent": ..., "summary": "..."}`, the summary sized to fill `count`."""
    head = [
        '{"',
        "sentiment",
        '":',
        ' "',
        reading.sentiment,
        '",',
        ' "',
        "intent",
        '":',
        ' "',
        reading.intent,
        '",',
        ' "',
        "summary",
        '":',
        ' "',
    ]
    tail = ['"}']
    budget = max(1, count - len(head) - len(tail))
    summary = _fitted(_tokens(reading.summary([lead], budget), escape=True), budget)
    summary = _inserted(summary, len(summary) // 2, insertion, escape=True)
    return head + summary + tail


def invalid_tokens(tokens: list[str], answer: str, text: str | None) -> list[str]:
    """The `invalid_output` fault's answer in place of `tokens`: `text` verbatim when given, else
    "not_json" (a preamble and the object left unterminated) or "bad_enum" (the JSON answer with a
    sentiment outside positive/neutral/negative)."""
    if text is not None:
        return split_evenly(text, 8)
    if answer == "bad_enum" and tokens[0] == '{"':
        return [*tokens[:4], "ecstatic", *tokens[5:]]
    return ["Sure,", " here", " it", " is:", " ", *tokens[:-1]]


def _inserted(tokens: list[str], position: int, insertion: Insertion | None, *, escape: bool) -> list[str]:
    if insertion is None:
        return tokens
    text = " " + (json.dumps(insertion.text)[1:-1] if escape else insertion.text)
    return tokens[:position] + split_evenly(text, insertion.pieces) + tokens[position:]


def split_evenly(text: str, pieces: int) -> list[str]:
    """`text` cut into `pieces` consecutive parts of near-equal length (fewer if it is short)."""
    pieces = max(1, min(pieces, len(text)))
    size, longer = divmod(len(text), pieces)
    parts, start = [], 0
    for index in range(pieces):
        end = start + size + (1 if index < longer else 0)
        parts.append(text[start:end])
        start = end
    return parts


_WORD_PATTERN = re.compile(r"\w+")
_TRIGRAM_WEIGHT = 0.5


def embed(text: str, dim: int) -> list[float]:
    """A unit vector of `dim` floats: signed feature hashing of words and their trigrams."""
    vector = [0.0] * dim
    for word in _WORD_PATTERN.findall(text.lower()):
        for index, weight in _word_features(word, dim):
            vector[index] += weight
    norm = math.sqrt(sum(value * value for value in vector))
    if norm == 0.0:  # no words at all: still a unit vector, the same one every time
        vector[0], norm = 1.0, 1.0
    return [round(value / norm, 7) for value in vector]


@lru_cache(maxsize=65_536)
def _word_features(word: str, dim: int) -> tuple[tuple[int, float], ...]:
    """Where a word lands in the vector: the word itself, plus its trigrams at half weight."""
    padded = f"<{word}>"
    features = [(f"w:{word}", 1.0)] + [(f"t:{padded[i : i + 3]}", _TRIGRAM_WEIGHT) for i in range(len(padded) - 2)]
    placed = []
    for feature, weight in features:
        digest = int.from_bytes(hashlib.blake2b(feature.encode(), digest_size=8).digest(), "big")
        placed.append((digest % dim, weight if digest >> 63 else -weight))
    return tuple(placed)
