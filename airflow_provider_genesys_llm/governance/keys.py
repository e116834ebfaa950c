"""Keyed fingerprints: ids and hashes that cover prompt text without revealing it.

A plain SHA-256 of a prompt is a dictionary attack waiting to happen: with a known template
(``"Summarise the call of SSN {ssn}"``) the 10,000 possible last four digits of an SSN are
hashed in milliseconds and compared with a result id. Every id or hash that covers prompt text
is therefore an HMAC-SHA256 under a per-deployment secret key, which turns the same guess into
a brute force against 256 bits. The key is stable, so re-runs keep their ids (idempotency) as
long as the deployment keeps its key; rotating it re-keys every id (a full re-enrichment).

The key is a secret: it is never logged, never part of an exception message, and never
compared in a way that leaks timing (``hmac`` does the work).
"""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

#: Shortest key accepted, in bytes: below 128 bits an HMAC key is guessable.
MIN_KEY_BYTES = 16


class IdKeyError(ValueError):
    """The id key is missing or too weak; names the problem, never the key."""


class IdKey:
    """An HMAC key for ids and prompt fingerprints. ``repr`` and ``str`` never show the key."""

    __slots__ = ("_key",)

    def __init__(self, key: str | bytes) -> None:
        raw = key.encode() if isinstance(key, str) else bytes(key)
        if len(raw) < MIN_KEY_BYTES:
            raise IdKeyError(
                f"the id key has {len(raw)} bytes, at least {MIN_KEY_BYTES} are needed; "
                "generate one with: python -c 'import secrets; print(secrets.token_hex(32))'"
            )
        self._key = raw

    def __repr__(self) -> str:
        return "IdKey(<hidden>)"

    __str__ = __repr__

    def digest(self, purpose: str, value: Any) -> str:
        """Hex HMAC-SHA256 of ``value`` (canonical JSON) for one ``purpose``.

        The purpose is part of the message, so a result id can never equal the fingerprint of
        the same prompt in an audit record: one value cannot be used to probe another.
        """
        canonical = json.dumps([purpose, value], sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return hmac.new(self._key, canonical.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()
