"""Section 9 of the emulator (analytics detail jobs, transcript URLs), over real sockets with raw httpx.

Like test_emulator.py, these pin the emulator to docs/protocol.md (protocol section 9) without the provider's
client: a backfill test that fails against the emulator then points at the client.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import httpx
import pytest

from genesys_llm_emulator import EmulatorServer
from genesys_llm_emulator.config import ContactCenterConfig

JOBS_PATH = "/api/v2/analytics/conversations/details/jobs"
AVAILABILITY_PATH = f"{JOBS_PATH}/availability"
TRANSCRIPT_URL_PATH = "/api/v2/speechandtextanalytics/conversations/{}/communications/{}/transcripturl"
ERROR_BODY_KEYS = {"message", "code", "status", "contextId", "messageWithParams", "messageParams", "details", "errors"}
RATE_LIMIT_HEADERS = ("inin-ratelimit-count", "inin-ratelimit-allowed", "inin-ratelimit-reset")
REPO_ROOT = Path(__file__).resolve().parents[1]
DAY = "2025-03-04T00:00:00Z/2025-03-05T00:00:00Z"  # long past: fully available by default
ISO_MS = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z")


# -- helpers ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def shared_client(emulator_server: EmulatorServer) -> Iterator[httpx.Client]:
    """One client for the module (building one costs more than most of these tests)."""
    with httpx.Client(base_url=emulator_server.base_url, timeout=10) as client:
        yield client


@pytest.fixture
def http(emulator: EmulatorServer, shared_client: httpx.Client) -> httpx.Client:
    """A client of the freshly reset emulator; it sends no default headers (so no token)."""
    return shared_client


@pytest.fixture
def auth(http: httpx.Client) -> dict[str, str]:
    """Bearer headers with a token of the emulator's OAuth (no particular scope is needed)."""
    response = http.post(
        "/oauth/token", data={"grant_type": "client_credentials"}, auth=("emulator-client", "emulator-secret")
    )
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


def submit(http: httpx.Client, auth: dict[str, str], interval: str = DAY, **body: Any) -> str:
    response = http.post(JOBS_PATH, json={"interval": interval, **body}, headers=auth)
    assert response.status_code == 202, response.text
    job_id = response.json()["jobId"]
    assert isinstance(job_id, str) and job_id
    return job_id


def poll_until_final(http: httpx.Client, auth: dict[str, str], job_id: str) -> list[dict[str, Any]]:
    answers = []
    for _ in range(20):
        response = http.get(f"{JOBS_PATH}/{job_id}", headers=auth)
        assert response.status_code == 200, response.text
        answers.append(response.json())
        if answers[-1]["state"] not in ("QUEUED", "PENDING"):
            return answers
    raise AssertionError(f"job {job_id} never finished: {answers}")


def all_results(
    http: httpx.Client, auth: dict[str, str], job_id: str, page_size: int | None = None
) -> list[list[dict[str, Any]]]:
    """Every page of a fulfilled job's results, following cursors."""
    pages: list[list[dict[str, Any]]] = []
    cursor = None
    while True:
        params = {**({"cursor": cursor} if cursor else {}), **({"pageSize": page_size} if page_size else {})}
        response = http.get(f"{JOBS_PATH}/{job_id}/results", params=params, headers=auth)
        assert response.status_code == 200, response.text
        page = response.json()
        assert ISO_MS.fullmatch(page["dataAvailabilityDate"])
        pages.append(page.get("conversations", []))
        cursor = page.get("cursor")
        if not cursor:
            return pages


def run_job(http: httpx.Client, auth: dict[str, str], interval: str = DAY, **body: Any) -> list[dict[str, Any]]:
    job_id = submit(http, auth, interval, **body)
    assert poll_until_final(http, auth, job_id)[-1]["state"] == "FULFILLED"
    return [conversation for page in all_results(http, auth, job_id) for conversation in page]


def customer_session(conversation: dict[str, Any]) -> dict[str, Any]:
    """The customer's voice session: its id is the transcript's communicationId."""
    (customer,) = [p for p in conversation["participants"] if p["purpose"] == "customer"]
    (session,) = customer["sessions"]
    return dict(session)


def transcript_url(http: httpx.Client, auth: dict[str, str], conversation: dict[str, Any]) -> str:
    path = TRANSCRIPT_URL_PATH.format(conversation["conversationId"], customer_session(conversation)["sessionId"])
    response = http.get(path, headers=auth)
    assert response.status_code == 200, response.text
    assert set(response.json()) == {"url"}
    return str(response.json()["url"])


def assert_platform_error(response: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert ERROR_BODY_KEYS <= set(body) and body["status"] == status
    assert body["contextId"] == response.headers["ININ-Correlation-Id"]
    if code is not None:
        assert body["code"] == code
    return dict(body)


def s3_error(response: httpx.Response, status: int) -> dict[str, str]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/xml")
    assert response.headers["x-amz-request-id"]
    root = ElementTree.fromstring(response.content)
    assert root.tag == "Error"
    return {child.tag: child.text or "" for child in root}


def luhn_valid(digits: str) -> bool:
    total = 0
    for position, char in enumerate(reversed(digits)):
        digit = int(char) * (2 if position % 2 else 1)
        total += digit - 9 if digit > 9 else digit
    return total % 10 == 0


# -- jobs ------------------------------------------------------------------------------------


def test_job_moves_through_its_states_and_refuses_results_until_fulfilled(
    emulator: EmulatorServer, http: httpx.Client, auth: dict[str, str]
) -> None:
    response = http.post(JOBS_PATH, json={"interval": DAY, "startOfDayIntervalMatching": True}, headers=auth)
    assert response.status_code == 202 and set(response.json()) == {"jobId"}
    assert response.headers["ININ-Correlation-Id"] and all(name in response.headers for name in RATE_LIMIT_HEADERS)
    job_id = response.json()["jobId"]
    early = http.get(f"{JOBS_PATH}/{job_id}/results", headers=auth)
    assert "QUEUED" in assert_platform_error(early, 400, "bad.request")["message"]

    answers = poll_until_final(http, auth, job_id)
    assert [answer["state"] for answer in answers] == ["QUEUED", "PENDING", "FULFILLED"]
    assert "errorMessage" not in answers[-1] and ISO_MS.fullmatch(answers[-1]["submissionDate"])
    again = http.get(f"{JOBS_PATH}/{job_id}", headers=auth)
    assert again.json()["state"] == "FULFILLED" and again.headers["ININ-Correlation-Id"]
    assert http.get(f"{JOBS_PATH}/{job_id}/results", headers=auth).status_code == 200

    assert_platform_error(http.get(f"{JOBS_PATH}/no-such-job", headers=auth), 404, "not.found")
    assert_platform_error(http.get(f"{JOBS_PATH}/no-such-job/results", headers=auth), 404, "not.found")
    assert http.delete(f"{JOBS_PATH}/{job_id}", headers=auth).status_code == 204
    assert_platform_error(http.get(f"{JOBS_PATH}/{job_id}", headers=auth), 404)

    counters = emulator.counters()
    assert counters["jobs_submitted"] == 1 and counters["job_polls"] == 4 and counters["result_pages"] == 1
    assert counters["analytics_jobs"] == 1 and counters["analytics_job_status"] == 6
    assert counters["analytics_results"] == 3 and counters["analytics_job_delete"] == 1


def test_polls_to_fulfil_is_configurable(emulator: EmulatorServer, http: httpx.Client, auth: dict[str, str]) -> None:
    emulator.configure(job_polls_to_fulfil=0)
    job_id = submit(http, auth)
    assert http.get(f"{JOBS_PATH}/{job_id}/results", headers=auth).status_code == 200  # never polled
    assert [a["state"] for a in poll_until_final(http, auth, job_id)] == ["FULFILLED"]
    emulator.configure(job_polls_to_fulfil=4)
    states = [a["state"] for a in poll_until_final(http, auth, submit(http, auth))]
    assert states == ["QUEUED", "PENDING", "PENDING", "PENDING", "FULFILLED"]


@pytest.mark.parametrize("outcome", ["FAILED", "CANCELLED", "EXPIRED"])
def test_configured_job_outcome(
    emulator: EmulatorServer, http: httpx.Client, auth: dict[str, str], outcome: str
) -> None:
    emulator.configure(job_outcome=outcome)
    job_id = submit(http, auth)
    answers = poll_until_final(http, auth, job_id)
    assert [a["state"] for a in answers] == ["QUEUED", "PENDING", outcome]
    assert isinstance(answers[-1]["errorMessage"], str) and answers[-1]["errorMessage"]
    assert outcome in assert_platform_error(http.get(f"{JOBS_PATH}/{job_id}/results", headers=auth), 400)["message"]


def test_job_outcome_fault_fails_one_job(emulator: EmulatorServer, http: httpx.Client, auth: dict[str, str]) -> None:
    emulator.add_fault(kind="job_outcome", state="FAILED", error_message="Query timed out")
    emulator.configure(job_polls_to_fulfil=1)
    failed = poll_until_final(http, auth, submit(http, auth))[-1]
    assert failed == {**failed, "state": "FAILED", "errorMessage": "Query timed out"}
    assert poll_until_final(http, auth, submit(http, auth))[-1]["state"] == "FULFILLED"  # the fault fired once
    assert http.post("/_emulator/faults", json={"kind": "job_outcome", "state": "DONE"}).status_code == 400
    assert http.post("/_emulator/faults", json={"kind": "job_outcome", "endpoint": "status"}).status_code == 400


def test_paging_returns_every_conversation_exactly_once(
    emulator: EmulatorServer, http: httpx.Client, auth: dict[str, str]
) -> None:
    interval = "2025-03-04T00:00:00Z/2025-03-07T00:00:00Z"
    job_id = submit(http, auth, interval, startOfDayIntervalMatching=True)
    poll_until_final(http, auth, job_id)
    pages = all_results(http, auth, job_id, page_size=7)
    conversations = [conversation for page in pages for conversation in page]
    ids = [conversation["conversationId"] for conversation in conversations]
    assert len(ids) == len(set(ids)) and all(len(page) == 7 for page in pages[:-1]) and 1 <= len(pages[-1]) <= 7
    assert emulator.counters()["result_pages"] == len(pages)
    # Three days of a 40-a-day contact center (+-25% by day), and daily jobs partition them.
    assert 3 * 30 <= len(ids) <= 3 * 50
    daily = [
        run_job(http, auth, f"2025-03-0{day}T00:00:00Z/2025-03-0{day + 1}T00:00:00Z", startOfDayIntervalMatching=True)
        for day in (4, 5, 6)
    ]
    assert [c["conversationId"] for day in daily for c in day] == ids
    assert len({len(day) for day in daily}) > 1  # volume varies from day to day
    starts = [conversation["conversationStart"] for conversation in conversations]
    assert starts == sorted(starts) and "2025-03-04T00:00:00.000Z" <= starts[0] and starts[-1] < "2025-03-07"
    default_pages = [len(page) for page in all_results(http, auth, job_id)]  # 100 a page by default
    assert default_pages == [min(100, len(ids) - offset) for offset in range(0, len(ids), 100)]


def test_conversation_records_have_the_section_9_shape(http: httpx.Client, auth: dict[str, str]) -> None:
    conversations = run_job(http, auth)
    for conversation in conversations:
        assert ISO_MS.fullmatch(conversation["conversationStart"]) and ISO_MS.fullmatch(conversation["conversationEnd"])
        assert conversation["conversationStart"] < conversation["conversationEnd"]
        purposes = [participant["purpose"] for participant in conversation["participants"]]
        assert sorted(purposes) == ["acd", "agent", "customer", "ivr"]
        for participant in conversation["participants"]:
            assert participant["participantId"]
            for session in participant["sessions"]:
                assert session["sessionId"] and session["mediaType"] == "voice"
                assert isinstance(session["recording"], bool)
        agent = next(p for p in conversation["participants"] if p["purpose"] == "agent")
        assert agent["userId"] and agent["sessions"][0]["recording"] == customer_session(conversation)["recording"]
    assert any(
        not customer_session(conversation)["recording"]
        for conversation in run_job(http, auth, "2025-03-01T00:00:00Z/2025-03-08T00:00:00Z")
    )  # some calls were not recorded


def test_same_interval_gives_the_same_conversations(http: httpx.Client, auth: dict[str, str]) -> None:
    first, second = run_job(http, auth), run_job(http, auth)
    assert first == second and len(first) > 0
    overlapping = run_job(http, auth, "2025-03-04T12:00:00Z/2025-03-05T12:00:00Z")
    shared = {c["conversationId"] for c in first} & {c["conversationId"] for c in overlapping}
    assert shared and all(c in first for c in overlapping if c["conversationId"] in shared)


def test_conversation_ids_are_the_same_in_another_process(http: httpx.Client, auth: dict[str, str]) -> None:
    ids = [c["conversationId"] for c in run_job(http, auth, startOfDayIntervalMatching=True)]
    script = (
        "from datetime import date; from genesys_llm_emulator import contact_center as cc\n"
        "calls = cc.day_conversations(date(2025, 3, 4), 40, 0.15, 0.05)\n"
        "print(' '.join(c.conversation_id for c in sorted(calls, key=lambda c: (c.start_ms, c.conversation_id))))"
    )
    environment = {**os.environ, "PYTHONPATH": str(REPO_ROOT / "emulator"), "PYTHONHASHSEED": "12345"}
    output = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO_ROOT, env=environment, capture_output=True, text=True, check=True
    )
    assert output.stdout.split() == ids


def test_start_of_day_interval_matching_and_overlap(http: httpx.Client, auth: dict[str, str]) -> None:
    # A call that crosses midnight UTC belongs to the day it started on, with startOfDayIntervalMatching.
    week = run_job(http, auth, "2025-03-01T00:00:00Z/2025-03-03T00:00:00Z")
    crossing = [c for c in week if c["conversationStart"][:10] != c["conversationEnd"][:10]]
    assert crossing, "the synthetic data has evening calls running past midnight UTC"
    call = crossing[0]
    start_day = datetime.fromisoformat(call["conversationStart"][:10]).replace(tzinfo=UTC)

    def day_interval(day: datetime) -> str:
        return f"{day:%Y-%m-%d}T00:00:00Z/{day + timedelta(days=1):%Y-%m-%d}T00:00:00Z"

    next_day, same_day = day_interval(start_day + timedelta(days=1)), day_interval(start_day)

    def ids(interval: str, matching: bool) -> set[str]:
        return {c["conversationId"] for c in run_job(http, auth, interval, startOfDayIntervalMatching=matching)}

    assert call["conversationId"] in ids(next_day, False)  # overlaps the next day
    assert call["conversationId"] not in ids(next_day, True)  # but did not start on it
    assert call["conversationId"] in ids(same_day, True)


def test_order_and_limit(http: httpx.Client, auth: dict[str, str]) -> None:
    ascending = [c["conversationId"] for c in run_job(http, auth)]
    descending = [c["conversationId"] for c in run_job(http, auth, order="desc", orderBy="conversationStart")]
    assert descending == ascending[::-1]
    assert [c["conversationId"] for c in run_job(http, auth, limit=5)] == ascending[:5]


@pytest.mark.parametrize(
    "body",
    [
        {"interval": "2025-03-04"},
        {"interval": "yesterday/today"},
        {"interval": "2025-03-05T00:00:00Z/2025-03-04T00:00:00Z"},
        {"interval": "2025-03-04T00:00:00Z/2025-03-04T00:00:00Z"},
        {"interval": "2025-03-04T00:00:00Z/P1D"},
        {"interval": "2025-02-30T00:00:00Z/2025-03-04T00:00:00Z"},
        {"interval": "2020-01-01T00:00:00Z/2025-01-01T00:00:00Z"},
        {"interval": 20250304},
        {},
        {"interval": DAY, "startOfDayIntervalMatching": "yes"},
        {"interval": DAY, "order": "sideways"},
        {"interval": DAY, "order": "outdated_sdk_version"},  # what the SDK sends for a value it does not know
        {"interval": DAY, "orderBy": "conversationDuration"},
        {"interval": DAY, "segmentFilters": [{"type": "and", "predicates": []}]},
        [DAY],
    ],
)
def test_malformed_job_requests_are_400(http: httpx.Client, auth: dict[str, str], body: Any) -> None:
    assert_platform_error(http.post(JOBS_PATH, json=body, headers=auth), 400, "bad.request")


def test_malformed_results_requests_are_400(emulator: EmulatorServer, http: httpx.Client, auth: dict[str, str]) -> None:
    assert_platform_error(http.post(JOBS_PATH, content=b"{not json", headers=auth), 400)
    emulator.configure(job_polls_to_fulfil=0)
    job_id = submit(http, auth)
    for params in ({"pageSize": 0}, {"pageSize": 1001}, {"pageSize": "ten"}, {"cursor": "garbage"}):
        assert_platform_error(http.get(f"{JOBS_PATH}/{job_id}/results", params=params, headers=auth), 400)
    other = submit(http, auth)
    cursor = http.get(f"{JOBS_PATH}/{other}/results", params={"pageSize": 2}, headers=auth).json()["cursor"]
    assert_platform_error(http.get(f"{JOBS_PATH}/{job_id}/results", params={"cursor": cursor}, headers=auth), 400)


# -- data availability ------------------------------------------------------------------------


def test_availability_defaults_to_an_hour_ago(http: httpx.Client, auth: dict[str, str]) -> None:
    response = http.get(AVAILABILITY_PATH, headers=auth)
    assert response.status_code == 200 and set(response.json()) == {"dataAvailabilityDate"}
    assert response.headers["ININ-Correlation-Id"]
    value = response.json()["dataAvailabilityDate"]
    assert ISO_MS.fullmatch(value) and value.endswith(":00.000Z")  # truncated to the minute
    available = datetime.fromisoformat(value.replace("Z", "+00:00"))
    expected = datetime.now(UTC) - timedelta(hours=1)
    assert timedelta(0) <= expected - available <= timedelta(seconds=65)


def test_conversations_after_the_availability_date_are_never_served(
    emulator: EmulatorServer, http: httpx.Client, auth: dict[str, str]
) -> None:
    full_day = run_job(http, auth)
    emulator.configure(data_availability_date="2025-03-04T18:00:00Z")
    assert http.get(AVAILABILITY_PATH, headers=auth).json() == {"dataAvailabilityDate": "2025-03-04T18:00:00.000Z"}
    job_id = submit(http, auth)
    poll_until_final(http, auth, job_id)
    page = http.get(f"{JOBS_PATH}/{job_id}/results", headers=auth).json()
    assert page["dataAvailabilityDate"] == "2025-03-04T18:00:00.000Z"
    clamped = page["conversations"]
    assert 0 < len(clamped) < len(full_day)
    assert all(c["conversationEnd"] <= "2025-03-04T18:00:00.000Z" for c in clamped)
    assert clamped == [c for c in full_day if c["conversationEnd"] <= "2025-03-04T18:00:00.000Z"]
    # A job wholly past the availability date finds nothing: no `conversations` key, no cursor.
    emulator.configure(data_availability_date="2025-03-01T00:00:00Z")
    job_id = submit(http, auth)
    poll_until_final(http, auth, job_id)
    empty = http.get(f"{JOBS_PATH}/{job_id}/results", headers=auth).json()
    assert empty == {"dataAvailabilityDate": "2025-03-01T00:00:00.000Z"}


# -- transcripts --------------------------------------------------------------------------------


def test_transcript_url_downloads_the_document_then_expires(
    emulator: EmulatorServer, http: httpx.Client, auth: dict[str, str]
) -> None:
    emulator.configure(transcript_url_ttl_seconds=1)
    conversation = next(c for c in run_job(http, auth) if customer_session(c)["recording"])
    url = transcript_url(http, auth, conversation)
    assert url.startswith(f"{emulator.base_url}/_transcripts/")
    response = http.get(url)  # a pre-signed URL: no bearer token (the client sends no default headers)
    assert response.status_code == 200, response.text
    document = response.json()
    assert document["organizationId"] and document["conversationId"] == conversation["conversationId"]
    assert document["communicationId"] == customer_session(conversation)["sessionId"]
    assert document["mediaType"] == "call" and isinstance(document["conversationStartTime"], int)
    start_ms = datetime.fromisoformat(conversation["conversationStart"].replace("Z", "+00:00")).timestamp() * 1000
    assert document["conversationStartTime"] == round(start_ms) <= document["startTime"]
    assert document["duration"]["milliseconds"] > 0
    assert {p["participantPurpose"] for p in document["participants"]} == {"customer", "agent", "ivr"}
    (transcript,) = document["transcripts"]
    assert transcript["transcriptId"] and transcript["language"] == "en-US"
    phrases = transcript["phrases"]
    assert [p["phraseIndex"] for p in phrases] == list(range(len(phrases))) and len(phrases) >= 10
    assert {p["participantPurpose"] for p in phrases} == {"external", "internal"}
    for phrase in phrases:
        assert phrase["text"] and 0 < phrase["confidence"] <= 1 and phrase["duration"]["milliseconds"] > 0
        assert phrase["startTimeMs"] >= document["startTime"]
    assert [p["startTimeMs"] for p in phrases] == sorted(p["startTimeMs"] for p in phrases)
    assert http.get(url).json() == document  # same document every time

    time.sleep(1.1)
    expired = s3_error(http.get(url), 403)
    assert expired["Code"] == "AccessDenied" and expired["Message"] == "Request has expired"
    assert expired["Expires"] <= expired["ServerTime"]
    counters = emulator.counters()
    assert counters["transcript_urls_issued"] == 1 and counters["transcript_downloads"] == 2
    assert counters["transcript_downloads_expired"] == 1 and counters["transcript_download"] == 3
    assert transcript_url(http, auth, conversation) != url  # a fresh URL works again
    assert http.get(transcript_url(http, auth, conversation)).status_code == 200


def test_tampered_transcript_url_is_refused(emulator: EmulatorServer, http: httpx.Client, auth: dict[str, str]) -> None:
    conversations = [c for c in run_job(http, auth) if customer_session(c)["recording"]]
    url = transcript_url(http, auth, conversations[0])
    payload, signature = url.rsplit("/", 1)[1].split(".")
    other = transcript_url(http, auth, conversations[1]).rsplit("/", 1)[1].split(".")
    flipped = signature[:-2] + ("A" if signature[-2] != "A" else "B") + signature[-1]
    base = url.rsplit("/", 1)[0]
    for token in (f"{payload}.{flipped}", f"{other[0]}.{signature}", payload, "not-a-token", f"{payload}.!!"):
        refused = s3_error(http.get(f"{base}/{token}"), 403)
        assert refused["Code"] == "SignatureDoesNotMatch"
    assert emulator.counters()["transcript_downloads_forbidden"] == 5


def test_transcript_url_is_404_for_anything_but_a_recorded_customer_communication(
    http: httpx.Client, auth: dict[str, str]
) -> None:
    conversations = run_job(http, auth, "2025-03-01T00:00:00Z/2025-03-08T00:00:00Z")
    recorded = next(c for c in conversations if customer_session(c)["recording"])
    unrecorded = next(c for c in conversations if not customer_session(c)["recording"])
    agent_session = next(p for p in recorded["participants"] if p["purpose"] == "agent")["sessions"][0]["sessionId"]
    cases = [
        (recorded["conversationId"], agent_session),
        (recorded["conversationId"], "00000000-0000-0000-0000-000000000000"),
        (unrecorded["conversationId"], customer_session(unrecorded)["sessionId"]),
        ("6f1c2b3a-0000-4000-8000-000000000000", customer_session(recorded)["sessionId"]),
        ("not-a-conversation", "x"),
    ]
    for conversation_id, communication_id in cases:
        response = http.get(TRANSCRIPT_URL_PATH.format(conversation_id, communication_id), headers=auth)
        assert_platform_error(response, 404, "not.found")


def test_some_transcripts_carry_pii(http: httpx.Client, auth: dict[str, str]) -> None:
    conversations = [
        c for c in run_job(http, auth, "2025-03-04T00:00:00Z/2025-03-07T00:00:00Z") if customer_session(c)["recording"]
    ]
    found: dict[str, int] = {"card": 0, "email": 0, "phone": 0, "ssn": 0}
    with_pii = 0
    for conversation in conversations:
        document = http.get(transcript_url(http, auth, conversation)).json()
        text = "\n".join(phrase["text"] for phrase in document["transcripts"][0]["phrases"])
        kinds = {
            "card": any(
                luhn_valid(re.sub(r"\D", "", match))
                for match in re.findall(r"\b\d{4}[ -]?\d{4}[ -]?\d{4}[ -]?\d{4}\b", text)
            ),
            "email": bool(re.search(r"[\w.+-]+@[\w-]+(\.[\w-]+)+", text)),
            "phone": bool(re.search(r"(\(\d{3}\) |\b\d{3}-|\+1 \d{3} )555[- ]01\d\d\b", text)),
            "ssn": bool(re.search(r"\b\d{3}[- ]\d{2}[- ]\d{4}\b", text)),
        }
        for kind, present in kinds.items():
            found[kind] += present
        with_pii += any(kinds.values())
    assert all(found.values()), found  # every kind shows up somewhere
    assert 0.05 * len(conversations) <= with_pii <= 0.35 * len(conversations), (with_pii, len(conversations))


def test_pii_ratio_is_configurable(emulator: EmulatorServer, http: httpx.Client, auth: dict[str, str]) -> None:
    emulator.configure(pii_ratio=0.0, unrecorded_ratio=0.0)
    conversations = run_job(http, auth)
    assert all(customer_session(c)["recording"] for c in conversations)
    for conversation in conversations[:10]:
        document = http.get(transcript_url(http, auth, conversation)).json()
        assert "@" not in json.dumps(document["transcripts"])


# -- faults, authentication, config ----------------------------------------------------------------


@pytest.mark.parametrize(
    "endpoint",
    ["analytics_jobs", "analytics_availability", "analytics_job_status", "analytics_results", "transcript_url"],
)
def test_http_error_faults_on_the_api_routes(
    emulator: EmulatorServer, http: httpx.Client, auth: dict[str, str], endpoint: str
) -> None:
    emulator.configure(job_polls_to_fulfil=0)
    conversation = next(c for c in run_job(http, auth) if customer_session(c)["recording"])
    job_id = submit(http, auth)
    requests = {
        "analytics_jobs": ("POST", JOBS_PATH, {"interval": DAY}),
        "analytics_availability": ("GET", AVAILABILITY_PATH, None),
        "analytics_job_status": ("GET", f"{JOBS_PATH}/{job_id}", None),
        "analytics_results": ("GET", f"{JOBS_PATH}/{job_id}/results", None),
        "transcript_url": (
            "GET",
            TRANSCRIPT_URL_PATH.format(conversation["conversationId"], customer_session(conversation)["sessionId"]),
            None,
        ),
    }
    method, path, body = requests[endpoint]
    emulator.add_fault(endpoint=endpoint, kind="http_error", status=503, retry_after=2)
    failed = http.request(method, path, json=body, headers=auth)
    assert_platform_error(failed, 503, "service.unavailable")
    assert failed.headers["Retry-After"] == "2" and all(name in failed.headers for name in RATE_LIMIT_HEADERS)
    assert http.request(method, path, json=body, headers=auth).status_code in (200, 202)
    assert emulator.counters()["faults_fired"] == 1


def test_http_error_fault_on_the_download_answers_like_s3(
    emulator: EmulatorServer, http: httpx.Client, auth: dict[str, str]
) -> None:
    conversation = next(c for c in run_job(http, auth) if customer_session(c)["recording"])
    url = transcript_url(http, auth, conversation)
    emulator.add_fault(endpoint="transcript_download", kind="http_error", status=503)
    assert s3_error(http.get(url), 503)["Code"] == "SlowDown"
    emulator.add_fault(endpoint="transcript_download", kind="http_error", status=500, code="InternalError")
    assert s3_error(http.get(url), 500)["Code"] == "InternalError"
    assert http.get(url).status_code == 200


def test_api_routes_need_a_live_token(emulator: EmulatorServer, http: httpx.Client, auth: dict[str, str]) -> None:
    job_id = submit(http, auth)
    routes = [
        ("POST", JOBS_PATH, {"interval": DAY}),
        ("GET", AVAILABILITY_PATH, None),
        ("GET", f"{JOBS_PATH}/{job_id}", None),
        ("DELETE", f"{JOBS_PATH}/{job_id}", None),
        ("GET", f"{JOBS_PATH}/{job_id}/results", None),
        ("GET", TRANSCRIPT_URL_PATH.format("a", "b"), None),
    ]
    for headers in ({}, {"Authorization": "Bearer not-a-token"}, {"Authorization": "Basic eDp5"}):
        for method, path, body in routes:
            response = http.request(method, path, json=body, headers=headers)
            assert_platform_error(response, 401, "bad.credentials")
    emulator.expire_tokens()
    assert_platform_error(http.get(AVAILABILITY_PATH, headers=auth), 401)


def test_any_scope_will_do(emulator: EmulatorServer, http: httpx.Client) -> None:
    emulator.configure(clients={"narrow": ["pw", ["ai:llm:prompt:read"]]})
    token = http.post("/oauth/token", data={"grant_type": "client_credentials"}, auth=("narrow", "pw")).json()
    assert http.get(AVAILABILITY_PATH, headers={"Authorization": f"Bearer {token['access_token']}"}).status_code == 200


def test_contact_center_config_is_patched_validated_and_reset(emulator: EmulatorServer, http: httpx.Client) -> None:
    values = {
        "conversations_per_day": 5,
        "pii_ratio": 1.0,
        "unrecorded_ratio": 0.5,
        "job_polls_to_fulfil": 0,
        "job_outcome": "EXPIRED",
        "job_page_size": 10,
        "data_availability_date": "2025-03-04T18:00:00+02:00",
        "data_availability_lag_seconds": 60,
        "transcript_url_ttl_seconds": 0.5,
    }
    assert set(values) == ContactCenterConfig.field_names()
    assert http.post("/_emulator/config", json=values).json() == {"updated": sorted(values)}
    assert emulator.state.contact_center.data_availability_date == datetime(2025, 3, 4, 16, tzinfo=UTC)
    assert emulator.state.contact_center.conversations_per_day == 5
    for bad in (
        {"pii_ratio": 1.5},
        {"job_outcome": "DONE"},
        {"job_page_size": 5000},
        {"data_availability_date": "soon"},
        {"transcript_url_ttl_seconds": 0},
        {"conversations_per_dai": 4},
        {"token_delay": 0.1, "pii_ratio": -1},  # nothing changes when one field is bad
    ):
        assert http.post("/_emulator/config", json=bad).status_code == 400
    assert emulator.state.config.token_delay == 0.0
    http.post("/_emulator/reset")
    assert emulator.state.contact_center == ContactCenterConfig()
    assert emulator.state.analytics_jobs == {}


def test_conversations_per_day_scales_the_volume(
    emulator: EmulatorServer, http: httpx.Client, auth: dict[str, str]
) -> None:
    emulator.configure(conversations_per_day=200, job_page_size=1000)
    many = run_job(http, auth)
    assert 150 <= len(many) <= 250
    emulator.configure(conversations_per_day=0)
    assert run_job(http, auth) == []
