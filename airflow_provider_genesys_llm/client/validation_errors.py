"""What a pydantic ``ValidationError`` says is wrong, by field name only.

Its own ``str()`` quotes every bad input (a prompt, a secret, a log line) and links to pydantic's
docs; every message of the provider is built here instead, from the locations and messages alone.
In ``client/`` because ``client`` imports nothing outside itself and everything else may import it.
"""

from __future__ import annotations

from pydantic import ValidationError


def validation_problems(exc: ValidationError, *, whole: str, limit: int | None = None) -> str:
    """``"field.sub: message; other: message"`` for the first ``limit`` errors (all when None);
    ``whole`` names an error about the whole value (an empty location), e.g. ``"request"``."""
    errors = exc.errors(include_input=False, include_url=False)[:limit]
    return "; ".join(f"{'.'.join(str(part) for part in error['loc']) or whole}: {error['msg']}" for error in errors)
