"""The platform's two timestamp formats: ISO-8601 with milliseconds and `Z`, and epoch milliseconds."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

EPOCH = date(1970, 1, 1)
DAY_MS = 86_400_000


def iso_ms(epoch_ms: int) -> str:
    """`2026-10-01T08:12:33.123Z`: the platform's timestamp format."""
    moment = datetime.fromtimestamp(epoch_ms / 1000, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{epoch_ms % 1000:03d}Z"


def epoch_ms(moment: datetime) -> int:
    return (moment - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)


def day_start_ms(day: date) -> int:
    return (day - EPOCH).days * DAY_MS
