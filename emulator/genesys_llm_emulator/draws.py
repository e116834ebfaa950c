"""Deterministic draws: numbers that depend only on a text, the same in every process and Python.

The contact center and the fault rules both need "random" choices that a test can predict and a
restarted emulator repeats; both take them from here.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from typing import TypeVar

_T = TypeVar("_T")


def stable_fraction(text: str) -> float:
    """A number in [0, 1) that depends only on `text`."""
    digest = hashlib.blake2b(text.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


class Draws:
    """Deterministic draws from one seed, built on `random.Random.random` alone (whose sequence for
    a string seed is the same on every Python 3), and fast: a year of calls is generated in seconds."""

    def __init__(self, seed: str) -> None:
        self.fraction = random.Random(seed).random

    def between(self, low: int, high: int) -> int:
        """An integer in [low, high]."""
        return low + int(self.fraction() * (high - low + 1))

    def uniform(self, low: float, high: float) -> float:
        return low + (high - low) * self.fraction()

    def pick(self, choices: Sequence[_T]) -> _T:
        return choices[int(self.fraction() * len(choices))]
