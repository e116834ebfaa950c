"""Deterministic batch inputs shared by the batch tests and the kill-and-resume child process."""

from __future__ import annotations

from typing import Any

from airflow_provider_genesys_llm.governance.keys import IdKey

#: The id key of every test (a real deployment generates its own once and keeps it).
TEST_ID_KEY_TEXT = "test-deployment-id-key-0123456789abcdef"
TEST_ID_KEY = IdKey(TEST_ID_KEY_TEXT)

TOPICS = (
    "I was charged twice for my March invoice and want a refund",
    "Please cancel my subscription, the price went up again",
    "My router drops the connection every evening around eight",
    "The mobile app crashes when I open my billing history",
    "I moved house and need to update my service address",
)


def make_items(count: int, invalid_every: int = 0) -> list[dict[str, Any]]:
    """``count`` transcripts; every ``invalid_every``-th one breaks a different documented limit."""
    broken = (
        {"temperature": 3.5},
        {"max_tokens": 100_000},
        {"messages": [{"role": "robot", "content": "beep"}]},
        {"messages": [{"role": "user", "content": "x" * 50_000}]},
        {"id": ""},
    )
    items = []
    for number in range(count):
        item: dict[str, Any] = {
            "id": f"conv-{number:06d}",
            "text": f"{TOPICS[number % len(TOPICS)]} (call {number})",
            "metadata": {"queue": "billing" if number % 2 else "support"},
        }
        if invalid_every and number % invalid_every == invalid_every - 1:
            item.update(broken[(number // invalid_every) % len(broken)])
        items.append(item)
    return items
