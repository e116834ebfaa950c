"""What every transport reports about one attempt besides its tokens."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol

from ..models import CompletionRequest, FinishReason, Usage


@dataclass(slots=True)
class AttemptInfo:
    """Filled in by the transport while it streams; read by the client when the stream ends."""

    correlation_id: str | None = None
    response_id: str | None = None
    connect_ms: float = 0.0
    finish_reason: FinishReason | None = None
    usage: Usage | None = None


class Transport(Protocol):
    name: str

    def stream(self, request: CompletionRequest, token: str, info: AttemptInfo) -> AsyncIterator[str]:
        """Yield the text of every frame (possibly empty) until the final one, or raise a typed error."""
        ...

    async def aclose(self) -> None: ...
