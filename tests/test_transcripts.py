"""Historical transcripts: analytics jobs, paging, expiring URLs and idempotent landing (emulator + pgserver)."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
from test_client import make_config

from airflow_provider_genesys_llm.batch.landing import FAILED_IDS_IN_SUMMARY, LandingStats, land_transcripts
from airflow_provider_genesys_llm.client import GatewayClient, RequestValidationError
from airflow_provider_genesys_llm.client.transcripts import PresignedUrlRefused, TranscriptSource
from airflow_provider_genesys_llm.governance.masking import PiiMasker
from airflow_provider_genesys_llm.sinks.transcripts import TranscriptStore

DAY = datetime(2026, 11, 2, tzinfo=UTC)
CARD = re.compile(r"\b\d{4}[ -]\d{4}[ -]\d{4}[ -]\d{1,4}\b")
EMAIL = re.compile(r"[\w.+-]+@[\w-]+\.[\w.]+")


@pytest.fixture
async def source(emulator):
    async with GatewayClient(make_config(emulator)) as client:
        yield TranscriptSource(client, page_size=7)


async def fulfilled_job(source: TranscriptSource, start: datetime, end: datetime) -> str:
    job_id = await source.submit_job(start, end)
    for _ in range(10):
        if (await source.job_status(job_id)).state == "FULFILLED":
            return job_id
    raise AssertionError("job never fulfilled")


async def test_job_pages_every_conversation_once_and_transcripts_are_speaker_labelled(source, emulator):
    job_id = await fulfilled_job(source, DAY, DAY + timedelta(days=1))
    conversations = [c async for c in source.conversations(job_id)]
    ids = [c.conversationId for c in conversations]
    assert len(ids) == len(set(ids)) > 10
    assert emulator.counters()["result_pages"] >= len(ids) // 7
    records = await source.transcript(conversations[0].conversationId, conversations[0].communication_ids()[0])
    assert records and records[0].text.startswith(("Customer:", "Agent:", "IVR:"))
    assert "Agent:" in records[0].text and "Customer:" in records[0].text
    assert "url" not in records[0].raw  # the pre-signed URL is never kept


async def test_interval_is_clamped_to_data_availability(source, emulator):
    available = await source.availability()
    assert await source.clamp(available + timedelta(hours=1), available + timedelta(hours=2)) is None
    start, end = await source.clamp(available - timedelta(hours=2), available + timedelta(days=1))
    assert end == available and start == available - timedelta(hours=2)
    with pytest.raises(RequestValidationError, match="not after its start"):
        await source.clamp(DAY, DAY)


async def test_expired_transcript_url_is_asked_for_again_then_fails_clearly(source, emulator):
    job_id = await fulfilled_job(source, DAY, DAY + timedelta(days=1))
    conversation = [c async for c in source.conversations(job_id)][0]
    emulator.configure(transcript_url_ttl_seconds=0.001)
    with pytest.raises(PresignedUrlRefused) as caught:
        await source.transcript(conversation.conversationId, conversation.communication_ids()[0])
    assert "http" not in str(caught.value)  # the URL itself never reaches a message
    assert emulator.counters()["transcript_urls_issued"] == 2


async def test_landing_is_idempotent_and_masks_pii(source, emulator, pg_connect):
    store = TranscriptStore(pg_connect, schema=pg_connect.schema)
    store.ensure_schema()
    job_id = await fulfilled_job(source, DAY, DAY + timedelta(days=2))
    first = await land_transcripts(source, job_id, store, masker=PiiMasker(), concurrency=4, chunk_size=16)
    assert first.transcripts == store.count() == first.rows_written > 20
    assert first.masked_values > 0
    with pg_connect() as conn:
        texts = [row[0] + row[1] for row in conn.execute("SELECT text, raw::text FROM genesys_transcripts")]
    assert not any(CARD.search(text) or EMAIL.search(text) for text in texts)
    assert any("[REDACTED:" in text for text in texts)

    again = await land_transcripts(source, job_id, store, masker=PiiMasker(), concurrency=4)
    assert again.transcripts == first.transcripts and again.rows_written == 0
    assert store.count() == first.transcripts


def test_landing_summary_counts_every_failure_but_keeps_a_bounded_list_of_ids():
    stats = LandingStats()
    for number in range(FAILED_IDS_IN_SUMMARY + 25):
        stats.note_failure(f"conversation-{number}")
    summary = stats.summary()
    assert summary["failed_downloads"] == FAILED_IDS_IN_SUMMARY + 25
    assert summary["failed_conversation_ids"] == [f"conversation-{n}" for n in range(FAILED_IDS_IN_SUMMARY)]
    summary["failed_conversation_ids"].append("x")  # a copy: the summary cannot change the stats
    assert len(stats.failed_conversation_ids) == FAILED_IDS_IN_SUMMARY
