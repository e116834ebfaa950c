"""The synthetic contact center behind section 9: calls (`calls.py`), their listing and their JSON.

Split by purpose: data tables (`tables.py`), the id scheme (`ids.py`), timestamps (`times.py`),
call generation (`calls.py`), which calls a job finds (`listing.py`) and record shaping
(`records.py`). This package re-exports what the analytics endpoints and tests use.
"""

from .calls import Conversation, Phrase, conversation, conversations_on, luhn_complete
from .ids import conversation_id, locate_conversation, named_uuid
from .listing import conversations_between, day_conversations, find_conversation
from .records import detail_record, transcript_document
from .tables import AGENTS, PII_KINDS, TOPIC_NAMES, TOPICS
from .times import epoch_ms, iso_ms

__all__ = [
    "AGENTS",
    "PII_KINDS",
    "TOPICS",
    "TOPIC_NAMES",
    "Conversation",
    "Phrase",
    "conversation",
    "conversation_id",
    "conversations_between",
    "conversations_on",
    "day_conversations",
    "detail_record",
    "epoch_ms",
    "find_conversation",
    "iso_ms",
    "locate_conversation",
    "luhn_complete",
    "named_uuid",
    "transcript_document",
]
