"""Typed errors of fleet coordination; each says what a retry would do."""

from __future__ import annotations


class CoordinationError(Exception):
    """Base of every coordination error. ``retryable``: whether trying again later may succeed."""

    retryable: bool = False


class SlotTimeoutError(CoordinationError):
    """No shared slot came free within the caller's timeout; a retry waits again in the queue."""

    retryable = True


class CoordinationUnavailableError(CoordinationError):
    """The coordination database could not be reached or timed out; a retry reconnects."""

    retryable = True


class UnknownModelPriceError(CoordinationError, KeyError):
    """The price table has no entry for a model; a retry fails the same way until one is added."""

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0])
