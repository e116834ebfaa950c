"""Section 9: analytics conversation-detail jobs and transcript URLs (real Genesys Cloud APIs).

Routes, with the name each one goes by in fault rules (`http_error` works on all) and counters:

| route | name | answer |
|---|---|---|
| `POST /api/v2/analytics/conversations/details/jobs` | `analytics_jobs` | `202 {"jobId"}` |
| `GET .../details/jobs/availability` | `analytics_availability` | `{"dataAvailabilityDate"}` |
| `GET .../details/jobs/{jobId}` | `analytics_job_status` | `{"state", "submissionDate", ...}` |
| `DELETE .../details/jobs/{jobId}` | `analytics_job_delete` | `204`, the job is forgotten |
| `GET .../details/jobs/{jobId}/results` | `analytics_results` | `{"conversations", "cursor"?, ...}` |
| `GET /api/v2/speechandtextanalytics/conversations/{c}/communications/{m}/transcripturl` | `transcript_url` | url |
| `GET /_transcripts/{token}` (the pre-signed URL) | `transcript_download` | the transcript document |

The API routes take any live bearer token from the emulator's OAuth endpoint and check no scope:
the real permissions (`analytics:conversationDetail:view`, `recording:recording:view`,
`speechAndTextAnalytics:data:view`) belong to the OAuth client's role, not to token scopes. They
answer like every other platform endpoint (`ININ-Correlation-Id`, `inin-ratelimit-*`, the section
3 ErrorBody). The download URL needs no token, like a pre-signed S3 URL, and answers like S3.

Choices where the protocol leaves room (each the most likely behaviour of the real API):
- A job is `QUEUED` on its first status poll, `PENDING` on the next ones, and reaches its final
  state once `job_polls_to_fulfil` polls (default 2) have answered: QUEUED, PENDING, FULFILLED.
  The final state is `job_outcome` (default FULFILLED), or the `state` of a `job_outcome` fault
  armed when the job was submitted; FAILED, CANCELLED and EXPIRED carry an `errorMessage`.
- Results of a job that is not FULFILLED (still running, or ended otherwise) are refused with
  `400 bad.request` naming the state: the platform's documented answers for this route include
  400 but no 409. An unknown or deleted job id is `404 not.found` on every job route.
- A job finds the conversations that overlap its interval; `startOfDayIntervalMatching: true`
  keeps only those that started on or after midnight UTC of the interval's start day (so daily
  jobs partition calls by start day). Conversations that had not ended by the data availability
  date, taken when the job is submitted, are never found. `order` (asc/desc; unordered gives
  conversationStart order) and `orderBy` (conversationStart/conversationEnd, and segmentStart/
  segmentEnd, which sort like them: a call's segments span it) are honoured, as is `limit`;
  non-empty filters are refused with 400 (the emulator does not evaluate them), other fields
  are ignored.
- The interval is `start/end`, both ISO-8601 date-times (no zone means UTC), end after start,
  at most 366 days (an emulator limit); anything else is 400.
- A results page holds `pageSize` conversations (default `job_page_size`, 100; 1 to 1000) and a
  `cursor` while more remain; the last page has no `cursor`. Like the platform, which leaves
  empty lists out, a job that found nothing answers without a `conversations` key.
- The transcript of a call belongs to the customer's voice session: its `sessionId` is the
  `communicationId`. The agent's session, an unrecorded call (`recording: false`), a call not
  yet ended and an unknown conversation are `404 not.found`.
- The URL is `{base}/_transcripts/{token}`: the token carries the conversation, communication
  and expiry, signed with HMAC-SHA256 under a per-process key; it lives
  `transcript_url_ttl_seconds` (default 600). An expired URL gets S3's
  `403 <Error><Code>AccessDenied</Code><Message>Request has expired</Message>...` and a
  tampered one `403 ... <Code>SignatureDoesNotMatch</Code>`, both `application/xml` with an
  `x-amz-request-id` header, as S3 answers (no Genesys headers: S3 serves the real download).
  Injected `http_error` faults on `transcript_download` answer in the same XML shape.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import hashlib
import hmac
import json
import secrets
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any
from xml.sax.saxutils import escape

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .admission import Admission, admit, bearer_token
from .config import JOB_OUTCOMES, MAX_JOB_PAGE_SIZE, ContactCenterConfig, parse_utc_instant
from .contact_center import (
    Conversation,
    conversation,
    conversations_between,
    detail_record,
    epoch_ms,
    find_conversation,
    iso_ms,
    transcript_document,
)
from .faults import FaultRule, Phase
from .responses import platform_error, retry_after_value
from .state import MAX_ANALYTICS_JOBS, EmulatorState
from .validation import InvalidRequest, decode_json

JOBS_PATH = "/api/v2/analytics/conversations/details/jobs"
AVAILABILITY_PATH = f"{JOBS_PATH}/availability"
JOB_PATH = JOBS_PATH + "/{job_id}"
RESULTS_PATH = JOB_PATH + "/results"
TRANSCRIPT_URL_PATH = (
    "/api/v2/speechandtextanalytics/conversations/{conversation_id}/communications/{communication_id}/transcripturl"
)
DOWNLOAD_PREFIX = "/_transcripts"
DOWNLOAD_PATH = DOWNLOAD_PREFIX + "/{token}"

MAX_INTERVAL = timedelta(days=366)
JOB_FILTER_FIELDS = ("segmentFilters", "conversationFilters", "evaluationFilters", "surveyFilters", "resolutionFilters")
# The SDK's AsyncConversationQuery allows these. A call's first segment starts with the call and its
# last one ends with it, so the segment orders sort calls like the conversation ones.
JOB_ORDER_BY = {"conversationStart": "start", "segmentStart": "start", "conversationEnd": "end", "segmentEnd": "end"}
JOB_ORDERS = ("asc", "desc", "unordered")  # unordered: the emulator's natural order, conversationStart
JOB_RESULTS_LIFETIME = timedelta(days=2)  # what `expirationDate` announces; nothing expires by time
DEFAULT_ERROR_MESSAGES = {
    "FAILED": "The query failed to execute (emulated failure).",
    "CANCELLED": "The query was cancelled.",
    "EXPIRED": "The query results have expired.",
}
S3_ERROR_CODES = {
    400: "InvalidRequest",
    403: "AccessDenied",
    404: "NoSuchKey",
    429: "SlowDown",
    500: "InternalError",
    503: "SlowDown",
}


@dataclass
class AnalyticsJob:
    """A submitted conversation-detail job: what it found, and how far it has got."""

    job_id: str
    submitted: datetime
    available: datetime  # the data availability date when it was submitted
    calls: tuple[tuple[date, int], ...]  # (day, index) of each conversation found, in result order
    ratios: tuple[float, float]  # (pii_ratio, unrecorded_ratio) the calls were generated with
    polls_to_fulfil: int
    outcome: str
    error_message: str | None
    polls: int = 0

    @property
    def finished(self) -> bool:
        return self.polls >= self.polls_to_fulfil

    @property
    def state(self) -> str:
        if self.finished:
            return self.outcome
        return "QUEUED" if self.polls <= 1 else "PENDING"

    def poll(self) -> str:
        """The state a status poll answers; each poll before the end moves the job forward."""
        if not self.finished:
            self.polls += 1
            return "QUEUED" if self.polls == 1 else "PENDING"
        return self.outcome

    def status(self, state: str) -> dict[str, Any]:
        answer: dict[str, Any] = {"state": state, "submissionDate": _iso(self.submitted)}
        if state in JOB_OUTCOMES:
            answer["completionDate"] = _iso(self.submitted + timedelta(milliseconds=250 * (self.polls_to_fulfil + 1)))
        if state == "FULFILLED":
            answer["expirationDate"] = _iso(self.submitted + JOB_RESULTS_LIFETIME)
        if state in DEFAULT_ERROR_MESSAGES:
            answer["errorMessage"] = self.error_message or DEFAULT_ERROR_MESSAGES[state]
        return answer

    def conversations(self, offset: int, count: int) -> list[Conversation]:
        pii_ratio, unrecorded_ratio = self.ratios
        window = self.calls[offset : offset + count]
        return [conversation(day, index, pii_ratio, unrecorded_ratio) for day, index in window]


def _state(request: Request) -> EmulatorState:
    state: EmulatorState = request.app.state.emulator
    return state


def _iso(moment: datetime) -> str:
    return iso_ms(epoch_ms(moment))


def admit_any_token(request: Request, state: EmulatorState, endpoint: str) -> Admission:
    """`admit` for a route that needs a live token but no particular scope: counting, injected
    errors, the token, then the rate limit, in the same order as for every other endpoint."""
    admission = admit(request, state, endpoint, None)
    if admission.refusal is not None:
        return admission
    token = state.authenticate(bearer_token(request.headers.get("authorization")))
    correlation_id, headers, rate = admission.correlation_id, admission.headers, admission.rate
    if token is None:
        refusal = platform_error(401, "Invalid login credentials.", correlation_id, headers)
        return dataclasses.replace(admission, refusal=refusal)
    if state.config.enforce_rate_limit and rate.count > rate.allowed:
        refusal = platform_error(
            429,
            "Rate limit exceeded the maximum.",
            correlation_id,
            headers,
            retry_after=str(rate.reset_seconds),
            limit=rate.allowed,
        )
        return dataclasses.replace(admission, refusal=refusal)
    return dataclasses.replace(admission, token=token)


# -- jobs -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _JobQuery:
    start: datetime
    end: datetime
    start_of_day: bool
    descending: bool
    by_end: bool  # sorted by conversationEnd (else by conversationStart)
    limit: int | None


def parse_interval(value: Any) -> tuple[datetime, datetime]:
    """`start/end` as two aware UTC datetimes; raises InvalidRequest saying what is wrong."""
    if not isinstance(value, str) or value.count("/") != 1:
        raise InvalidRequest(f"interval must be an ISO-8601 'start/end' string, got {value!r}")
    try:
        start, end = (parse_utc_instant(part) for part in value.split("/"))
    except ValueError as exc:
        raise InvalidRequest(f"interval {value!r} is not an ISO-8601 'start/end' interval: {exc}") from None
    if end <= start:
        raise InvalidRequest(f"interval {value!r} must end after it starts")
    if end - start > MAX_INTERVAL:
        raise InvalidRequest(f"interval {value!r} is longer than {MAX_INTERVAL.days} days")
    return start, end


def _job_query(body: Any) -> _JobQuery:
    if not isinstance(body, dict):
        raise InvalidRequest("the request body must be a JSON object")
    if "interval" not in body:
        raise InvalidRequest("interval is required")
    start, end = parse_interval(body["interval"])
    start_of_day = body.get("startOfDayIntervalMatching", False)
    if not isinstance(start_of_day, bool):
        raise InvalidRequest(f"startOfDayIntervalMatching must be true or false, got {start_of_day!r}")
    order = body.get("order", "asc")
    if order not in JOB_ORDERS:
        raise InvalidRequest(f"order must be one of {list(JOB_ORDERS)}, got {order!r}")
    order_by = body.get("orderBy", "conversationStart")
    if order_by not in JOB_ORDER_BY:
        raise InvalidRequest(f"orderBy must be one of {list(JOB_ORDER_BY)}, got {order_by!r}")
    limit = body.get("limit")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise InvalidRequest(f"limit must be a positive integer, got {limit!r}")
    for name in JOB_FILTER_FIELDS:
        if body.get(name):
            raise InvalidRequest(f"{name} is not supported by the emulator (it does not evaluate filters)")
    by_end = order != "unordered" and JOB_ORDER_BY[order_by] == "end"
    return _JobQuery(start, end, start_of_day, order == "desc", by_end, limit)


def _find_calls(query: _JobQuery, config: ContactCenterConfig, available: datetime) -> tuple[tuple[date, int], ...]:
    calls = conversations_between(
        query.start,
        query.end,
        per_day=config.conversations_per_day,
        pii_ratio=config.pii_ratio,
        unrecorded_ratio=config.unrecorded_ratio,
        start_of_day_matching=query.start_of_day,
        available_until=available,
    )
    if query.by_end:
        calls.sort(key=lambda call: (call.end_ms, call.conversation_id))
    if query.descending:
        calls.reverse()
    if query.limit is not None:
        calls = calls[: query.limit]
    return tuple((call.day, call.index) for call in calls)


async def submit_job(request: Request) -> Response:
    state = _state(request)
    admission = admit_any_token(request, state, "analytics_jobs")
    if admission.refusal is not None:
        return admission.refusal
    try:
        query = _job_query(decode_json(await request.body()))
    except InvalidRequest as exc:
        return platform_error(400, str(exc), admission.correlation_id, admission.headers)
    config = state.contact_center
    now = datetime.now(UTC)
    available = config.availability(now)
    # Generating a long interval takes a while: off the loop, so other requests keep flowing.
    calls = await run_in_threadpool(_find_calls, query, config, available)
    fault = state.draw_fault("analytics_jobs", Phase.JOB)
    outcome, error_message = (config.job_outcome, None)
    if fault is not None:
        outcome, error_message = fault.params["state"], fault.params["error_message"]
    job = AnalyticsJob(
        job_id=str(uuid.uuid4()),
        submitted=now,
        available=available,
        calls=calls,
        ratios=(config.pii_ratio, config.unrecorded_ratio),
        polls_to_fulfil=config.job_polls_to_fulfil,
        outcome=outcome,
        error_message=error_message,
    )
    jobs = state.analytics_jobs
    jobs[job.job_id] = job
    while len(jobs) > MAX_ANALYTICS_JOBS:
        del jobs[next(iter(jobs))]
    state.counters.add("jobs_submitted")
    return JSONResponse({"jobId": job.job_id}, status_code=202, headers=admission.headers)


def _job(state: EmulatorState, admission: Admission, job_id: str) -> AnalyticsJob | Response:
    job = state.analytics_jobs.get(job_id)
    if isinstance(job, AnalyticsJob):
        return job
    return platform_error(404, f"Job {job_id} was not found.", admission.correlation_id, admission.headers)


async def job_status(request: Request) -> Response:
    state = _state(request)
    admission = admit_any_token(request, state, "analytics_job_status")
    if admission.refusal is not None:
        return admission.refusal
    job = _job(state, admission, request.path_params["job_id"])
    if isinstance(job, Response):
        return job
    state.counters.add("job_polls")
    return JSONResponse(job.status(job.poll()), headers=admission.headers)


async def delete_job(request: Request) -> Response:
    state = _state(request)
    admission = admit_any_token(request, state, "analytics_job_delete")
    if admission.refusal is not None:
        return admission.refusal
    job = _job(state, admission, request.path_params["job_id"])
    if isinstance(job, Response):
        return job
    del state.analytics_jobs[job.job_id]
    return Response(status_code=204, headers=admission.headers)


async def job_results(request: Request) -> Response:
    state = _state(request)
    admission = admit_any_token(request, state, "analytics_results")
    if admission.refusal is not None:
        return admission.refusal
    job = _job(state, admission, request.path_params["job_id"])
    if isinstance(job, Response):
        return job
    if job.state != "FULFILLED":
        message = f"Job {job.job_id} is {job.state}, not FULFILLED: its results are not available."
        return platform_error(400, message, admission.correlation_id, admission.headers)
    try:
        size = _page_size(request.query_params.get("pageSize"), state.contact_center.job_page_size)
        offset = _cursor_offset(request.query_params.get("cursor"), job)
    except InvalidRequest as exc:
        return platform_error(400, str(exc), admission.correlation_id, admission.headers)
    page = job.conversations(offset, size)
    answer: dict[str, Any] = {}
    if page:
        answer["conversations"] = [detail_record(call) for call in page]
    if offset + size < len(job.calls):
        answer["cursor"] = _cursor(job, offset + size)
    answer["dataAvailabilityDate"] = _iso(job.available)
    state.counters.add("result_pages")
    return JSONResponse(answer, headers=admission.headers)


def _page_size(value: str | None, default: int) -> int:
    if value is None or value == "":
        return default
    try:
        size = int(value)
    except ValueError:
        raise InvalidRequest(f"pageSize must be an integer, got {value!r}") from None
    if not 1 <= size <= MAX_JOB_PAGE_SIZE:
        raise InvalidRequest(f"pageSize must be between 1 and {MAX_JOB_PAGE_SIZE}, got {size}")
    return size


def _cursor(job: AnalyticsJob, offset: int) -> str:
    return _b64(json.dumps({"job": job.job_id, "offset": offset}, separators=(",", ":")).encode())


def _cursor_offset(cursor: str | None, job: AnalyticsJob) -> int:
    if cursor is None or cursor == "":
        return 0
    try:
        decoded = json.loads(_unb64(cursor))
        offset = decoded["offset"] if decoded["job"] == job.job_id else -1
    except (ValueError, KeyError, TypeError, binascii.Error):
        offset = -1
    if not isinstance(offset, int) or isinstance(offset, bool) or not 0 < offset < len(job.calls):
        raise InvalidRequest(f"cursor {cursor!r} is not a cursor of job {job.job_id}")
    return offset


async def availability(request: Request) -> Response:
    state = _state(request)
    admission = admit_any_token(request, state, "analytics_availability")
    if admission.refusal is not None:
        return admission.refusal
    answer = {"dataAvailabilityDate": _iso(state.contact_center.availability())}
    return JSONResponse(answer, headers=admission.headers)


# -- transcripts ------------------------------------------------------------------------------------


def _transcribed_call(state: EmulatorState, conversation_id: str, communication_id: str) -> Conversation | str:
    """The call whose transcript this is, or why there is none."""
    config = state.contact_center
    call = find_conversation(
        conversation_id,
        per_day=config.conversations_per_day,
        pii_ratio=config.pii_ratio,
        unrecorded_ratio=config.unrecorded_ratio,
    )
    if call is None:
        return f"Conversation {conversation_id} was not found."
    if communication_id != call.communication_id or not call.recorded or call.end_ms > time.time() * 1000:
        return f"No transcript was found for communication {communication_id} of conversation {conversation_id}."
    return call


async def transcript_url(request: Request) -> Response:
    state = _state(request)
    admission = admit_any_token(request, state, "transcript_url")
    if admission.refusal is not None:
        return admission.refusal
    conversation_id = request.path_params["conversation_id"]
    communication_id = request.path_params["communication_id"]
    call = _transcribed_call(state, conversation_id, communication_id)
    if isinstance(call, str):
        return platform_error(404, call, admission.correlation_id, admission.headers)
    expires_ms = int((time.time() + state.contact_center.transcript_url_ttl_seconds) * 1000)
    token = sign_transcript_token(state.transcript_url_key, conversation_id, communication_id, expires_ms)
    state.counters.add("transcript_urls_issued")
    base = str(request.base_url).rstrip("/")
    return JSONResponse({"url": f"{base}{DOWNLOAD_PREFIX}/{token}"}, headers=admission.headers)


def sign_transcript_token(key: bytes, conversation_id: str, communication_id: str, expires_ms: int) -> str:
    payload = f"{conversation_id}:{communication_id}:{expires_ms}".encode()
    return f"{_b64(payload)}.{_b64(hmac.new(key, payload, hashlib.sha256).digest())}"


def read_transcript_token(key: bytes, token: str) -> tuple[str, str, int] | None:
    """(conversation id, communication id, expiry in epoch ms) of a token signed with `key`."""
    encoded, _, signature = token.partition(".")
    try:
        payload, given = _unb64(encoded), _unb64(signature)
    except (ValueError, binascii.Error):
        return None
    if not hmac.compare_digest(hmac.new(key, payload, hashlib.sha256).digest(), given):
        return None
    try:
        conversation_id, communication_id, expires = payload.decode().split(":")
        return conversation_id, communication_id, int(expires)
    except ValueError:
        return None


async def download_transcript(request: Request) -> Response:
    """The pre-signed URL: no bearer token, S3's answers."""
    state = _state(request)
    state.counters.count_request("transcript_download")
    request_id = secrets.token_hex(8).upper()
    headers = {"x-amz-request-id": request_id, "x-amz-id-2": _b64(secrets.token_bytes(24))}
    fault = state.draw_fault("transcript_download", Phase.REQUEST)
    if fault is not None:
        return _injected_s3_error(fault, request_id, headers)
    read = read_transcript_token(state.transcript_url_key, request.path_params["token"])
    if read is None:
        state.counters.add("transcript_downloads_forbidden")
        message = (
            "The request signature we calculated does not match the signature you provided. "
            "Check your key and signing method."
        )
        return s3_error(403, "SignatureDoesNotMatch", message, request_id, headers)
    conversation_id, communication_id, expires_ms = read
    now_ms = int(time.time() * 1000)
    if now_ms >= expires_ms:
        state.counters.add("transcript_downloads_expired")
        extra = {"Expires": _s3_time(expires_ms), "ServerTime": _s3_time(now_ms)}
        return s3_error(403, "AccessDenied", "Request has expired", request_id, headers, extra)
    call = _transcribed_call(state, conversation_id, communication_id)
    if isinstance(call, str):
        return s3_error(404, "NoSuchKey", "The specified key does not exist.", request_id, headers)
    state.counters.add("transcript_downloads")
    return JSONResponse(transcript_document(call), headers=headers)


def s3_error(
    status: int,
    code: str,
    message: str,
    request_id: str,
    headers: Mapping[str, str],
    extra: Mapping[str, str] | None = None,
) -> Response:
    """An error in S3's XML shape: `<Error><Code/><Message/>...<RequestId/><HostId/></Error>`."""
    fields = {"Code": code, "Message": message, **(extra or {})}
    fields.update(RequestId=request_id, HostId=headers["x-amz-id-2"])
    body = "".join(f"<{name}>{escape(value)}</{name}>" for name, value in fields.items())
    xml = f'<?xml version="1.0" encoding="UTF-8"?>\n<Error>{body}</Error>'
    return Response(xml, status_code=status, media_type="application/xml", headers=dict(headers))


def _injected_s3_error(fault: FaultRule, request_id: str, headers: Mapping[str, str]) -> Response:
    params = fault.params
    status: int = params["status"]
    merged = dict(headers)
    merged.update(params["headers"])
    if params["retry_after"] is not None and not params["omit_retry_after"]:
        merged["Retry-After"] = retry_after_value(params["retry_after"])
    code = params["code"] or S3_ERROR_CODES.get(status, "ServiceUnavailable")
    message = params["message"] or f"injected HTTP {status} (emulator fault)"
    return s3_error(status, code, message, request_id, merged)


def _s3_time(epoch_milliseconds: int) -> str:
    return datetime.fromtimestamp(epoch_milliseconds // 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def analytics_routes() -> list[Route]:
    """Section 9's routes, in matching order (`availability` before `{job_id}`)."""
    return [
        Route(JOBS_PATH, submit_job, methods=["POST"]),
        Route(AVAILABILITY_PATH, availability, methods=["GET"]),
        Route(JOB_PATH, job_status, methods=["GET"]),
        Route(JOB_PATH, delete_job, methods=["DELETE"]),
        Route(RESULTS_PATH, job_results, methods=["GET"]),
        Route(TRANSCRIPT_URL_PATH, transcript_url, methods=["GET"]),
        Route(DOWNLOAD_PATH, download_transcript, methods=["GET"]),
    ]
