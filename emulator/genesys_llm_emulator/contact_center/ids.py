"""Ids of the synthetic contact center, made without a registry.

Ids are uuid5 names under one fixed namespace; a conversation id is the uuid5 of its (day, index)
with the first 32 bits replaced by an invertible mix of the day and the index, so any conversation
id can be resolved back to its call (for transcript URLs), even by an emulator restarted since the
job that listed it.
"""

from __future__ import annotations

import uuid
from datetime import date, timedelta

from .times import EPOCH

NAMESPACE = uuid.UUID("5b0c9d7e-2f4a-5e61-8c3d-a9e7f1b24c60")
MAX_DAY_NUMBER = 0xFFFF  # days since 1970 that fit a conversation id (up to 2149)
MAX_INDEX = 0xFFFF


def named_uuid(name: str) -> str:
    """The uuid5 of `name` under the emulator's namespace: the same in every process."""
    return str(uuid.uuid5(NAMESPACE, name))


ORGANIZATION_ID = named_uuid("organization")
DIVISION_ID = named_uuid("division/home")
IVR_FLOW_ID = named_uuid("flow/main-menu")


_MASK32 = 0xFFFFFFFF
_MIX_A = 0x9E3779B1
_MIX_B = 0x85EBCA6B
_UNMIX_A = pow(_MIX_A, -1, 2**32)
_UNMIX_B = pow(_MIX_B, -1, 2**32)


def _mix(value: int) -> int:
    value = (value * _MIX_A) & _MASK32
    value ^= value >> 16
    value = (value * _MIX_B) & _MASK32
    return value ^ (value >> 16)


def _unmix(value: int) -> int:
    value ^= value >> 16
    value = (value * _UNMIX_B) & _MASK32
    value ^= value >> 16
    return (value * _UNMIX_A) & _MASK32


def conversation_id(day: date, index: int) -> str:
    """The id of the `index`-th call of `day`."""
    name = uuid.uuid5(NAMESPACE, f"conversation/{day.isoformat()}/{index}")
    prefix = _mix(((day - EPOCH).days << 16) | index)
    return str(uuid.UUID(hex=f"{prefix:08x}{name.hex[8:]}"))


def locate_conversation(conversation_id_: str) -> tuple[date, int] | None:
    """(day, index) of a conversation id made by `conversation_id`, None for any other string."""
    try:
        parsed = uuid.UUID(conversation_id_)
    except (ValueError, AttributeError, TypeError):
        return None
    key = _unmix(int(parsed.hex[:8], 16))
    day = EPOCH + timedelta(days=key >> 16)
    index = key & 0xFFFF
    return (day, index) if conversation_id(day, index) == conversation_id_ else None
