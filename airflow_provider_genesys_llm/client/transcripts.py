"""Historical conversation transcripts from Genesys Cloud (protocol section 9: real platform APIs).

Bulk listing goes through the asynchronous analytics conversation-details jobs; each transcript
is fetched through a pre-signed URL that expires after ten minutes, so it is requested right
before the download and never stored or logged. Everything rides on ``GatewayClient.call_api``:
the same token, rate limit and retry policy as completions.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from .client import GatewayClient
from .errors import DownloadUrlRefusedError, GatewayError, GatewayProtocolError, RequestValidationError, detached
from .exchange import exchange
from .parsing import loads, parse_model
from .responses import error_from_response
from .urls import download_url_problem

JOBS_PATH = "/api/v2/analytics/conversations/details/jobs"
TRANSCRIPT_URL_PATH = (
    "/api/v2/speechandtextanalytics/conversations/{conversation_id}/communications/{communication_id}/transcripturl"
)
JobState = Literal["QUEUED", "PENDING", "FULFILLED", "FAILED", "CANCELLED", "EXPIRED"]
#: States after which a job never changes again.
TERMINAL_STATES = frozenset({"FULFILLED", "FAILED", "CANCELLED", "EXPIRED"})
#: How phrase and participant purposes read as speaker labels.
SPEAKERS = {"external": "Customer", "customer": "Customer", "internal": "Agent", "agent": "Agent", "ivr": "IVR"}


class JobStatus(BaseModel):
    state: JobState
    errorMessage: str | None = None


class Session(BaseModel):
    model_config = ConfigDict(extra="allow")

    sessionId: str
    mediaType: str | None = None
    recording: bool | None = None


class Participant(BaseModel):
    model_config = ConfigDict(extra="allow")

    participantId: str | None = None
    purpose: str | None = None
    sessions: list[Session] = Field(default_factory=list)


class Conversation(BaseModel):
    model_config = ConfigDict(extra="allow")

    conversationId: str
    conversationStart: datetime | None = None
    conversationEnd: datetime | None = None
    participants: list[Participant] = Field(default_factory=list)

    def communication_ids(self) -> list[str]:
        """The customer's recorded sessions: a call's transcript (both speakers) hangs off the customer
        communication; the agent's leg of the same call has none of its own."""
        return [
            session.sessionId
            for participant in self.participants
            if participant.purpose in ("customer", "external")
            for session in participant.sessions
            if session.recording is not False
        ]


class ResultsPage(BaseModel):
    conversations: list[Conversation] = Field(default_factory=list)
    cursor: str | None = None


class Phrase(BaseModel):
    model_config = ConfigDict(extra="allow")

    phraseIndex: int | None = None
    participantPurpose: str | None = None
    text: str = ""
    startTimeMs: int | None = None


class TranscriptPart(BaseModel):
    model_config = ConfigDict(extra="allow")

    transcriptId: str
    language: str | None = None
    phrases: list[Phrase] = Field(default_factory=list)


class TranscriptDocument(BaseModel):
    model_config = ConfigDict(extra="allow")

    conversationId: str
    communicationId: str
    mediaType: str | None = None
    conversationStartTime: datetime | None = None
    transcripts: list[TranscriptPart] = Field(default_factory=list)


class TranscriptRecord(BaseModel):
    """One transcript flattened for storage, keyed by its natural idempotency key."""

    conversation_id: str
    communication_id: str
    transcript_id: str
    language: str | None
    conversation_start: datetime | None
    text: str
    raw: dict[str, Any]


def flatten(document: TranscriptDocument, raw: dict[str, Any]) -> list[TranscriptRecord]:
    """One record per transcript, phrases in order as ``Customer: ...`` / ``Agent: ...`` lines."""
    records = []
    for part in document.transcripts:
        phrases = sorted(part.phrases, key=lambda p: (p.startTimeMs or 0, p.phraseIndex or 0))
        lines = [
            f"{SPEAKERS.get((p.participantPurpose or '').lower(), 'Speaker')}: {p.text}" for p in phrases if p.text
        ]
        records.append(
            TranscriptRecord(
                conversation_id=document.conversationId,
                communication_id=document.communicationId,
                transcript_id=part.transcriptId,
                language=part.language,
                conversation_start=document.conversationStartTime,
                text="\n".join(lines),
                raw=raw,
            )
        )
    return records


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


class TranscriptSource:
    """Conversation-details jobs and transcript downloads on one ``GatewayClient``."""

    def __init__(self, client: GatewayClient, *, page_size: int = 100) -> None:
        self._client = client
        self._page_size = page_size

    async def availability(self) -> datetime:
        """Analytics data is complete up to this moment; never backfill past it."""
        answer = loads(await self._client.call_api("GET", f"{JOBS_PATH}/availability"), "availability answer")
        value = answer.get("dataAvailabilityDate") if isinstance(answer, dict) else None
        try:
            return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        except ValueError:
            pass
        raise GatewayProtocolError("availability answer lacks a valid dataAvailabilityDate")

    async def clamp(self, start: datetime, end: datetime) -> tuple[datetime, datetime] | None:
        """The interval cut at ``dataAvailabilityDate``; None when nothing of it is available yet."""
        if end <= start:
            raise RequestValidationError(f"interval end {_iso(end)} is not after its start {_iso(start)}")
        available = await self.availability()
        end = min(end, available)
        return (start, end) if end > start else None

    async def submit_job(self, start: datetime, end: datetime) -> str:
        raw = await self._client.call_api("POST", JOBS_PATH, {"interval": f"{_iso(start)}/{_iso(end)}"})
        answer = loads(raw, "job submission answer")
        if not isinstance(answer, dict) or not answer.get("jobId"):
            raise GatewayProtocolError("job submission answer lacks jobId")
        return str(answer["jobId"])

    async def job_status(self, job_id: str) -> JobStatus:
        return parse_model(JobStatus, await self._client.call_api("GET", f"{JOBS_PATH}/{job_id}"), "job status")

    async def conversations(self, job_id: str) -> AsyncIterator[Conversation]:
        """Every conversation of a fulfilled job, page by page (one page in memory at a time)."""
        cursor: str | None = None
        while True:
            params: dict[str, Any] = {"pageSize": self._page_size}
            if cursor:
                params["cursor"] = cursor
            raw = await self._client.call_api("GET", f"{JOBS_PATH}/{job_id}/results", params=params)
            page = parse_model(ResultsPage, raw, "results page")
            for conversation in page.conversations:
                yield conversation
            if not page.cursor:
                return
            cursor = page.cursor

    async def transcript(self, conversation_id: str, communication_id: str) -> list[TranscriptRecord]:
        """Ask for a fresh pre-signed URL and download it at once; an expired URL is asked for again."""
        path = TRANSCRIPT_URL_PATH.format(conversation_id=conversation_id, communication_id=communication_id)
        for last_try in (False, True):
            answer = loads(await self._client.call_api("GET", path), "transcripturl answer")
            url = answer.get("url") if isinstance(answer, dict) else None
            if not url:
                raise GatewayProtocolError(f"transcripturl answer for conversation {conversation_id} has no url")
            try:
                raw = await self._download(str(url), conversation_id)
                break
            except PresignedUrlRefused as refused:
                if last_try:
                    raise detached(refused) from None
        document = parse_model(TranscriptDocument, raw, f"transcript of conversation {conversation_id}")
        return flatten(document, loads(raw, f"transcript of conversation {conversation_id}"))

    def _check_download_url(self, url: str, what: str) -> None:
        """The gateway chooses the URL; fetch it only from the region's domain or an allowed host."""
        config = self._client.config
        domains = (*((config.region,) if config.region else ()), *config.transcript_url_hosts)
        problem = download_url_problem(url, domains, loopback_ok=config.api_on_loopback)
        if problem:
            raise DownloadUrlRefusedError(f"{what}: the gateway's URL {problem}")

    async def _download(self, url: str, conversation_id: str) -> bytes:
        """GET the pre-signed URL (no bearer token: the signature is the credential). Errors never echo the URL."""
        what = f"transcript download for conversation {conversation_id}"
        self._check_download_url(url, what)
        config = self._client.config
        response = await exchange(
            self._client.http, "GET", url, what=what, limit=config.max_response_bytes, deadline=config.timeout_seconds
        )
        if response.status_code == 403:
            raise PresignedUrlRefused(f"{what}: the pre-signed URL was refused (expired?)")
        if response.status_code != 200:
            raise error_from_response(response.status_code, {}, b"", what=what)
        return response.content


class PresignedUrlRefused(GatewayError):
    """The transcript URL was refused, most likely because its ten minutes ran out."""

    retryable = True
    transient = True
