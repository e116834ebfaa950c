"""The emulator's real-Genesys sections, with the official Genesys Cloud Python SDK as the client.

`PureCloudPlatformClientV2` (pinned in requirements/constraints.txt, installed by the emulator's
`test` extra) is generated from the platform's own API definition, so its models are the nearest
thing to the real API we can run here. Every answer is read twice: by the SDK (typed models; an
enum value the SDK does not know becomes "outdated_sdk_version") and key by key against the
SDK's model tree (a key the model lacks would be silently dropped by the SDK, so it is a
difference from the real API too).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import httpx
import pytest

from genesys_llm_emulator import EmulatorServer
from genesys_llm_emulator.contact_center.ids import IVR_FLOW_ID

if os.environ.get("CI"):  # CI installs the emulator's test extra: a missing SDK is a failure there
    import PureCloudPlatformClientV2 as sdk
else:
    sdk = pytest.importorskip("PureCloudPlatformClientV2", reason="pip install -e './emulator[test]'")

from PureCloudPlatformClientV2.rest import ApiException  # noqa: E402  (after the import guard)

CLIENT = ("emulator-client", "emulator-secret")
DAY = "2025-03-04T00:00:00Z/2025-03-05T00:00:00Z"  # long past: fully available by default
OUTDATED = "outdated_sdk_version"
PRIMITIVES = {"str", "int", "float", "bool", "datetime", "date", "object"}


@pytest.fixture
def api_client(emulator: EmulatorServer) -> sdk.ApiClient:
    """An SDK client logged in with client credentials at the emulator's OAuth endpoint."""
    return sdk.ApiClient(host=emulator.base_url).get_client_credentials_token(*CLIENT)


@pytest.fixture
def conversations(api_client: sdk.ApiClient) -> sdk.ConversationsApi:
    return sdk.ConversationsApi(api_client)


# -- reading answers against the SDK's models ----------------------------------------------------


def unknown_keys(value: Any, type_name: str, path: str = "$") -> list[str]:
    """JSON paths in `value` that the SDK model `type_name` (recursively) has no field for."""
    if value is None or type_name in PRIMITIVES:
        return []
    if type_name.startswith("list["):
        return [key for i, item in enumerate(value) for key in unknown_keys(item, type_name[5:-1], f"{path}[{i}]")]
    if type_name.startswith("dict("):
        inner = type_name[type_name.index(",") + 1 : -1].strip()
        return [key for name, item in value.items() for key in unknown_keys(item, inner, f"{path}.{name}")]
    model = getattr(sdk, type_name)()
    fields = {json_name: attribute for attribute, json_name in model.attribute_map.items()}
    found = []
    for name, item in value.items():
        if name not in fields:
            found.append(f"{path}.{name}")
        else:
            found += unknown_keys(item, model.swagger_types[fields[name]], f"{path}.{name}")
    return found


def outdated_values(value: Any, path: str = "$") -> Iterator[str]:
    """Paths in an SDK model's `to_dict()` where the SDK did not know an enum value."""
    if isinstance(value, dict):
        for name, item in value.items():
            yield from outdated_values(item, f"{path}.{name}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from outdated_values(item, f"{path}[{index}]")
    elif value == OUTDATED:
        yield path


def raw_json(emulator: EmulatorServer, api_client: sdk.ApiClient, path: str) -> Any:
    """The same answer the SDK got, as JSON (the SDK keeps only what its models know)."""
    headers = {"Authorization": f"Bearer {api_client.access_token}"}
    response = httpx.get(emulator.base_url + path, headers=headers, timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def fulfilled_job(conversations: sdk.ConversationsApi, **query: Any) -> str:
    body = sdk.AsyncConversationQuery()
    body.interval = DAY
    for name, value in query.items():
        setattr(body, name, value)
    assert OUTDATED not in json.dumps(body.to_dict()), "the query itself uses a value the SDK does not know"
    job_id: str = conversations.post_analytics_conversations_details_jobs(body).job_id
    states = [conversations.get_analytics_conversations_details_job(job_id).state for _ in range(10)]
    assert "FULFILLED" in states, states
    assert states[: states.index("FULFILLED")] == ["QUEUED", *["PENDING"] * (states.index("FULFILLED") - 1)]
    return job_id


def all_pages(conversations: sdk.ConversationsApi, job_id: str, page_size: int) -> list[Any]:
    pages, cursor = [], None
    for _ in range(1000):
        kwargs = {"page_size": page_size, **({"cursor": cursor} if cursor else {})}
        page = conversations.get_analytics_conversations_details_job_results(job_id, **kwargs)
        assert isinstance(page.data_availability_date, datetime)
        pages.append(page)
        cursor = page.cursor
        if not cursor:
            return pages
    raise AssertionError("results never ended")


# -- the checks -------------------------------------------------------------------------------------


def test_client_credentials_login_gives_a_token_the_api_takes(api_client: sdk.ApiClient) -> None:
    assert api_client.access_token
    availability = sdk.ConversationsApi(api_client).get_analytics_conversations_details_jobs_availability()
    assert isinstance(availability.data_availability_date, datetime)


def test_wrong_client_secret_is_refused_in_the_oauth_shape(emulator: EmulatorServer) -> None:
    with pytest.raises(ApiException) as refused:
        sdk.ApiClient(host=emulator.base_url).get_client_credentials_token(CLIENT[0], "guess-7f19c2")
    assert refused.value.status == 401
    body = json.loads(refused.value.body)
    assert body["error"] == "invalid_client" and body["error_description"]
    assert CLIENT[1] not in refused.value.body and "guess-7f19c2" not in refused.value.body


def test_job_status_and_results_paging_match_the_sdk_models(
    emulator: EmulatorServer, api_client: sdk.ApiClient, conversations: sdk.ConversationsApi
) -> None:
    job_id = fulfilled_job(conversations)
    status_path = f"/api/v2/analytics/conversations/details/jobs/{job_id}"
    assert unknown_keys(raw_json(emulator, api_client, status_path), "AsyncQueryStatus") == []
    status = conversations.get_analytics_conversations_details_job(job_id)
    assert status.state == "FULFILLED" and status.completion_date >= status.submission_date
    pages = all_pages(conversations, job_id, page_size=7)
    calls = [call for page in pages for call in page.conversations]
    assert len(pages) >= 3 and all(len(page.conversations) == 7 for page in pages[:-1])
    assert len({call.conversation_id for call in calls}) == len(calls) > 14
    raw = raw_json(emulator, api_client, f"{status_path}/results?pageSize=50")
    assert unknown_keys(raw, "AnalyticsConversationAsyncQueryResponse") == []
    for page in pages:
        assert list(outdated_values(page.to_dict())) == []


def test_the_ivr_session_carries_its_flow_as_an_object(conversations: sdk.ConversationsApi) -> None:
    page = conversations.get_analytics_conversations_details_job_results(fulfilled_job(conversations), page_size=5)
    for call in page.conversations:
        (ivr,) = [participant for participant in call.participants if participant.purpose == "ivr"]
        (session,) = ivr.sessions
        assert session.flow is not None and session.flow.flow_id == IVR_FLOW_ID
        assert session.flow.flow_type == "INBOUNDCALL" and session.flow.entry_type == "dnis"
        others = [participant for participant in call.participants if participant.purpose != "ivr"]
        assert all(session.flow is None for participant in others for session in participant.sessions)


@pytest.mark.parametrize("order_by", ["conversationStart", "conversationEnd", "segmentStart", "segmentEnd"])
@pytest.mark.parametrize("order", ["asc", "desc", "unordered"])
def test_every_order_the_sdk_allows_is_accepted(conversations: sdk.ConversationsApi, order: str, order_by: str) -> None:
    job_id = fulfilled_job(conversations, order=order, order_by=order_by)
    calls = [call for page in all_pages(conversations, job_id, page_size=100) for call in page.conversations]
    assert calls
    if order == "unordered":
        return  # any order is right; the set is checked below against the ordered jobs
    key = "conversation_end" if order_by.endswith("End") else "conversation_start"
    values = [getattr(call, key) for call in calls]
    assert values == sorted(values, reverse=order == "desc")


def test_unordered_finds_the_same_calls(conversations: sdk.ConversationsApi) -> None:
    def ids(**query: Any) -> set[str]:
        job_id = fulfilled_job(conversations, **query)
        return {c.conversation_id for page in all_pages(conversations, job_id, 100) for c in page.conversations}

    assert ids(order="unordered") == ids(order="desc", order_by="segmentEnd") == ids()


def test_transcript_url_answers_the_sdk_model_and_downloads(
    emulator: EmulatorServer, api_client: sdk.ApiClient, conversations: sdk.ConversationsApi
) -> None:
    page = conversations.get_analytics_conversations_details_job_results(fulfilled_job(conversations), page_size=20)
    call = next(
        c
        for c in page.conversations
        if all(s.recording for p in c.participants if p.purpose == "customer" for s in p.sessions)
    )
    (customer,) = [p for p in call.participants if p.purpose == "customer"]
    communication_id = customer.sessions[0].session_id
    speech = sdk.SpeechTextAnalyticsApi(api_client)
    answer = speech.get_speechandtextanalytics_conversation_communication_transcripturl(
        call.conversation_id, communication_id
    )
    path = (
        f"/api/v2/speechandtextanalytics/conversations/{call.conversation_id}"
        f"/communications/{communication_id}/transcripturl"
    )
    assert unknown_keys(raw_json(emulator, api_client, path), "TranscriptUrl") == []
    document = httpx.get(answer.url, timeout=10).json()  # pre-signed: no token, like S3
    assert document["conversationId"] == call.conversation_id and document["communicationId"] == communication_id


def _error_body(error: ApiException) -> Any:
    """The ErrorBody the SDK's ApiException carries, read with the SDK's own deserializer."""

    class Answer:
        data = error.body

        @staticmethod
        def getheader(name: str) -> str:
            return "application/json"

    return sdk.ApiClient().deserialize(Answer(), "ErrorBody")


@pytest.mark.parametrize(
    "call, status, code",
    [
        (lambda api: api.get_analytics_conversations_details_job("no-such-job"), 404, "not.found"),
        (lambda api: api.get_analytics_conversations_details_job_results("no-such-job"), 404, "not.found"),
        (lambda api: api.post_analytics_conversations_details_jobs(sdk.AsyncConversationQuery()), 400, "bad.request"),
    ],
)
def test_error_bodies_match_the_sdk_error_body(
    conversations: sdk.ConversationsApi, call: Any, status: int, code: str
) -> None:
    with pytest.raises(ApiException) as refused:
        call(conversations)
    assert refused.value.status == status
    assert unknown_keys(json.loads(refused.value.body), "ErrorBody") == []
    body = _error_body(refused.value)
    assert body.status == status and body.code == code and body.message and body.context_id


def test_an_unknown_transcript_is_a_404_error_body(api_client: sdk.ApiClient) -> None:
    speech = sdk.SpeechTextAnalyticsApi(api_client)
    unknown = "00000000-0000-0000-0000-000000000000"
    with pytest.raises(ApiException) as refused:
        speech.get_speechandtextanalytics_conversation_communication_transcripturl(unknown, unknown)
    assert refused.value.status == 404 and _error_body(refused.value).code == "not.found"
