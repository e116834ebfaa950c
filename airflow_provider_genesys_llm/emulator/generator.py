"""Deterministic stand-ins for a language model and an embedding model.

Tests need answers that are the same on every run and in every process (to compare a retried
request with its first attempt, or a re-run DAG with its first run), so everything here derives
from BLAKE2b digests of the input, never from `random` or Python's salted `hash()`. Completion
text comes as word-sized tokens with a leading space, like a real tokenizer's; embeddings are
hashed bag-of-words vectors, so texts that share words are closer than texts that do not.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .validation import CompletionRequest

_WORDS: tuple[str, ...] = (
    "the", "customer", "agent", "called", "about", "a", "billing", "issue", "with", "their", "account",
    "and", "asked", "for", "refund", "of", "last", "month", "charge", "was", "resolved", "after", "checking",
    "order", "status", "delivery", "delayed", "by", "two", "days", "confirmed", "address", "update",
    "requested", "callback", "tomorrow", "morning", "explained", "policy", "offered", "credit", "accepted",
    "payment", "method", "expired", "card", "replaced", "subscription", "plan", "upgrade", "cancel",
    "service", "outage", "in", "area", "restored", "technician", "visit", "scheduled", "password", "reset",
    "link", "sent", "email", "verified", "identity", "promptly", "frustrated", "satisfied", "overall",
    "wait", "time", "long", "apologized", "escalated", "supervisor", "ticket", "opened", "follow", "up",
    "needed", "within", "week", "invoice", "corrected", "discount", "applied", "next", "cycle", "product",
    "defective", "return", "label", "issued", "warranty", "covers", "repair", "no", "further", "action",
)
_SENTIMENTS: tuple[str, ...] = ("positive", "neutral", "negative", "mixed")
_INTENTS: tuple[str, ...] = (
    "billing_dispute", "technical_support", "cancellation", "account_update", "refund_request", "general_inquiry",
)
_SHORTEST_SENTENCE, _LONGEST_SENTENCE = 6, 14


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
    """About `count` tokens answering `request`, a JSON object when the request wants JSON."""
    stream = _Stream(_seed(request))
    if request.json_output:
        return _json_tokens(stream, count, insertion)
    tokens = _prose_tokens(stream, count)
    return _inserted(tokens, len(tokens) // 2, insertion, escape=False)


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


def _prose_tokens(stream: _Stream, count: int) -> list[str]:
    """Sentences of vocabulary words: the first token bare, later ones with a leading space."""
    tokens: list[str] = []
    while len(tokens) < count:
        length = _SHORTEST_SENTENCE + stream.below(_LONGEST_SENTENCE - _SHORTEST_SENTENCE + 1)
        sentence = [stream.pick(_WORDS) for _ in range(length)]
        first_word = sentence[0].capitalize()
        tokens.append(first_word if not tokens else f" {first_word}")
        tokens.extend(f" {word}" for word in sentence[1:])
        tokens.append(".")
    return tokens[:count]


def _json_tokens(stream: _Stream, count: int, insertion: Insertion | None) -> list[str]:
    """`{"sentiment": ..., "intent": ..., "summary": "..."}`, the summary sized to fill `count`."""
    head = [
        '{"', "sentiment", '":', ' "', stream.pick(_SENTIMENTS), '",',
        ' "', "intent", '":', ' "', stream.pick(_INTENTS), '",',
        ' "', "summary", '":', ' "',
    ]
    tail = ['"}']
    summary = _prose_tokens(stream, max(1, count - len(head) - len(tail)))
    summary = _inserted(summary, len(summary) // 2, insertion, escape=True)
    return head + summary + tail


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
