"""Land every transcript of a fulfilled analytics job into the landing table.

Downloads run with bounded concurrency (each pre-signed URL is fetched right after it is
issued), records are masked before they are written when asked, and rows go to Postgres in
chunks, so an interval of any size runs in bounded memory.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import asdict, dataclass, field
from typing import Any

from ..client.errors import GatewayError
from ..client.transcripts import Conversation, TranscriptRecord, TranscriptSource
from ..governance.masking import PiiMasker
from ..sinks.erasure import TombstoneList
from ..sinks.transcripts import TranscriptStore

log = logging.getLogger(__name__)


#: Conversation ids of failed downloads kept for the summary; the rest are only counted.
FAILED_IDS_IN_SUMMARY = 50


@dataclass
class LandingStats:
    """What one landing did, under the names its summary reports, so ``summary`` lists nothing twice.

    Conversations count as the job lists them. A communication without a transcript counts in
    ``without_transcript``, a failed download in ``failed_downloads`` (with the first
    ``FAILED_IDS_IN_SUMMARY`` conversation ids: memory stays bounded however many fail), an erased
    conversation or transcript in ``skipped_erased``.
    """

    conversations: int = 0
    transcripts: int = 0
    #: Transcript rows the store reports written.
    rows_written: int = 0
    without_transcript: int = 0
    #: PII values masked in the landed texts, all types together.
    masked_values: int = 0
    skipped_erased: int = 0
    failed_downloads: int = 0
    failed_conversation_ids: list[str] = field(default_factory=list)

    def note_failure(self, conversation_id: str) -> None:
        self.failed_downloads += 1
        if len(self.failed_conversation_ids) < FAILED_IDS_IN_SUMMARY:
            self.failed_conversation_ids.append(conversation_id)

    def summary(self) -> dict[str, object]:
        return asdict(self)


def _mask_strings(value: Any, masker: PiiMasker) -> Any:
    if isinstance(value, str):
        return masker.mask(value).text
    if isinstance(value, list):
        return [_mask_strings(item, masker) for item in value]
    if isinstance(value, dict):
        return {key: _mask_strings(item, masker) for key, item in value.items()}
    return value


def mask_record(record: TranscriptRecord, masker: PiiMasker) -> tuple[TranscriptRecord, int]:
    """Mask the flattened text and every string of the raw document (PII may sit in any field)."""
    text = masker.mask(record.text)
    found = sum(text.counts.values())
    return record.model_copy(update={"text": text.text, "raw": _mask_strings(record.raw, masker)}), found


async def land_transcripts(
    source: TranscriptSource,
    job_id: str,
    store: TranscriptStore,
    *,
    masker: PiiMasker | None,
    concurrency: int = 8,
    chunk_size: int = 200,
    tombstones: TombstoneList | None = None,
) -> LandingStats:
    """Land the job's transcripts; erased conversations (``tombstones``) are not even downloaded."""
    stats = LandingStats()
    queue: asyncio.Queue[Conversation | None] = asyncio.Queue(maxsize=concurrency * 2)
    pending: list[TranscriptRecord] = []
    write_lock = asyncio.Lock()

    async def flush() -> None:
        async with write_lock:
            batch, pending[:] = list(pending), []
            if batch:
                stats.rows_written += await asyncio.to_thread(store.upsert, batch)

    async def worker() -> None:
        while (conversation := await queue.get()) is not None:
            if tombstones is not None and tombstones.is_erased(conversation.conversationId):
                stats.skipped_erased += 1
                continue
            for communication_id in conversation.communication_ids():
                try:
                    records = await source.transcript(conversation.conversationId, communication_id)
                except GatewayError as exc:
                    if exc.status_code == 404:
                        stats.without_transcript += 1  # not transcribed (yet): nothing to land
                        continue
                    stats.note_failure(conversation.conversationId)
                    log.warning(
                        "transcript of conversation %s failed: %s", conversation.conversationId, type(exc).__name__
                    )
                    continue
                for record in records:
                    key = f"{record.conversation_id}:{record.communication_id}:{record.transcript_id}"
                    if tombstones is not None and tombstones.is_erased(key):
                        stats.skipped_erased += 1
                        continue
                    if masker is not None:
                        record, found = mask_record(record, masker)
                        stats.masked_values += found
                    pending.append(record)
                    stats.transcripts += 1
            if len(pending) >= chunk_size:
                await flush()

    async def produce() -> None:
        async for conversation in source.conversations(job_id):
            stats.conversations += 1
            await queue.put(conversation)
        for _ in range(concurrency):
            await queue.put(None)

    tasks = [asyncio.create_task(produce()), *(asyncio.create_task(worker()) for _ in range(concurrency))]
    try:
        await asyncio.gather(*tasks)  # a failing worker or page fails the landing instead of stalling it
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await flush()
    return stats
