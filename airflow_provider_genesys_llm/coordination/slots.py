"""What a worker holds and sees of the shared gate: its slot, and a snapshot of the fleet."""

from __future__ import annotations

import os
import secrets
import socket
import uuid
from dataclasses import dataclass, field

from .settings import Priority


def process_owner() -> str:
    """An owner name for this process: host and pid for people, a random tail for uniqueness."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"


@dataclass
class Slot:
    """A held place in the shared limit. `report` what the gateway answered, before leaving."""

    lease_id: uuid.UUID
    priority: Priority
    waited_seconds: float
    #: Set by the heartbeat when the lease expired or was taken over (the process stalled too long).
    lost: bool = False
    status: int | None = field(default=None, init=False)
    retry_after: float | None = field(default=None, init=False)

    def report(self, *, status: int, retry_after: float | None = None) -> None:
        """Record the gateway's answer; a 429 halves the fleet's limit and pauses everyone until
        `retry_after` (applied when the slot is released)."""
        self.status = status
        self.retry_after = retry_after


@dataclass(frozen=True)
class GateSnapshot:
    """The shared state of one connection, as the next grant would see it."""

    limit: int
    in_flight: dict[Priority, int]
    waiting: dict[Priority, int]
    paused_seconds: float
