"""Which calls an analytics job finds: by day, by interval, by conversation id."""

from __future__ import annotations

from datetime import date, datetime, timedelta

from .calls import Conversation, conversation, conversations_on
from .ids import locate_conversation
from .times import day_start_ms, epoch_ms


def day_conversations(day: date, per_day: int, pii_ratio: float, unrecorded_ratio: float) -> list[Conversation]:
    """Every call of `day`, by index."""
    return [conversation(day, index, pii_ratio, unrecorded_ratio) for index in range(conversations_on(day, per_day))]


def conversations_between(
    start: datetime,
    end: datetime,
    *,
    per_day: int,
    pii_ratio: float,
    unrecorded_ratio: float,
    start_of_day_matching: bool = False,
    available_until: datetime | None = None,
) -> list[Conversation]:
    """The calls an analytics job for `start/end` finds, by `conversationStart` (then id).

    A call matches when it overlaps the interval (like a detail query, which also finds calls
    that started before the interval); `start_of_day_matching` (the job's
    `startOfDayIntervalMatching`) keeps only calls that started on or after midnight UTC of the
    interval's start day, so day-sized jobs partition calls by start day. Calls that had not
    ended by `available_until` (the data availability date) are never found.
    """
    start_ms, end_ms = epoch_ms(start), epoch_ms(end)
    floor_ms = day_start_ms(start.date()) if start_of_day_matching else None
    until_ms = epoch_ms(available_until) if available_until is not None else None
    found = []
    day = start.date() - timedelta(days=1)  # a call lasts far less than a day
    while day <= end.date():
        for call in day_conversations(day, per_day, pii_ratio, unrecorded_ratio):
            if call.start_ms >= end_ms or call.end_ms <= start_ms:
                continue
            if floor_ms is not None and call.start_ms < floor_ms:
                continue
            if until_ms is not None and call.end_ms > until_ms:
                continue
            found.append(call)
        day += timedelta(days=1)
    found.sort(key=lambda call: (call.start_ms, call.conversation_id))
    return found


def find_conversation(
    conversation_id_: str, *, per_day: int, pii_ratio: float, unrecorded_ratio: float
) -> Conversation | None:
    """The call with this id, None when no day of the contact center has it."""
    located = locate_conversation(conversation_id_)
    if located is None:
        return None
    day, index = located
    if index >= conversations_on(day, per_day):
        return None
    return conversation(day, index, pii_ratio, unrecorded_ratio)
