"""The JSON the platform answers with for a call: its analytics detail record and its transcript.

Shapes follow the public platform API (and the official SDK's models, which the SDK conformance
tests check), not only the fields section 9 names:
- the conversation detail record has `conversationId`, `conversationStart`, `conversationEnd`
  (ISO-8601, milliseconds, `Z`), `originatingDirection`, `divisionIds` and four participants,
  `customer`, `ivr`, `acd` and `agent` (with `userId`), each with one `voice` session
  (`sessionId`, `mediaType`, `direction`, `ani`, `dnis`, `recording`, `segments`);
- the transcript belongs to the **customer's voice session**: its `sessionId` is the
  `communicationId` of the transcript URL (the agent's session id has no transcript, nor has a
  call whose sessions say `recording: false`);
- the transcript document uses epoch milliseconds for `conversationStartTime`, `startTime` and
  every `startTimeMs`, `{"milliseconds": n}` objects for `duration` and `offset`, `mediaType`
  `"call"` (where detail sessions say `"voice"`), participants `ivr`/`customer`/`agent`, and
  phrases `external` (customer) / `internal` (agent) with per-word timings and confidences.
"""

from __future__ import annotations

from typing import Any

from ..draws import Draws
from .calls import Conversation, Phrase
from .ids import DIVISION_ID, IVR_FLOW_ID, ORGANIZATION_ID
from .tables import DNIS, IVR_FLOW_NAME, LANGUAGE
from .times import iso_ms


def detail_record(call: Conversation) -> dict[str, Any]:
    """The call as an analytics conversation detail record (one element of `conversations`)."""
    ivr_end = call.start_ms + call.ivr_ms
    queue_end = ivr_end + call.queue_ms
    end = call.end_ms

    def segment(start: int, stop: int, kind: str, **extra: Any) -> dict[str, Any]:
        return {"segmentStart": iso_ms(start), "segmentEnd": iso_ms(stop), "segmentType": kind, **extra}

    def session(role: str, recording: bool, segments: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
        return {
            "sessionId": call.session_id(role),
            "mediaType": "voice",
            "direction": "inbound",
            "ani": call.ani,
            "dnis": DNIS,
            **extra,
            "recording": recording,
            "segments": segments,
        }

    return {
        "conversationId": call.conversation_id,
        "conversationStart": iso_ms(call.start_ms),
        "conversationEnd": iso_ms(end),
        "originatingDirection": "inbound",
        "divisionIds": [DIVISION_ID],
        "participants": [
            {
                "participantId": call.participant_id("customer"),
                "participantName": call.customer_name,
                "purpose": "customer",
                "sessions": [
                    session(
                        "customer",
                        call.recorded,
                        [
                            segment(call.start_ms, queue_end, "system"),
                            segment(queue_end, end, "interact", disconnectType="client"),
                        ],
                    )
                ],
            },
            {
                "participantId": call.participant_id("ivr"),
                "participantName": IVR_FLOW_NAME,
                "purpose": "ivr",
                "sessions": [
                    session(
                        "ivr",
                        False,
                        [segment(call.start_ms, ivr_end, "ivr", disconnectType="transfer")],
                        flow=_ivr_flow(call),
                    )
                ],
            },
            {
                "participantId": call.participant_id("acd"),
                "participantName": call.queue,
                "purpose": "acd",
                "sessions": [
                    session(
                        "acd",
                        False,
                        [segment(ivr_end, queue_end, "interact", queueId=call.queue_id, disconnectType="transfer")],
                    )
                ],
            },
            {
                "participantId": call.participant_id("agent"),
                "participantName": call.agent.name,
                "purpose": "agent",
                "userId": call.agent.user_id,
                "sessions": [
                    session(
                        "agent",
                        call.recorded,
                        [
                            segment(queue_end, call.talk_start_ms, "alert", queueId=call.queue_id),
                            segment(call.talk_start_ms, end, "interact", queueId=call.queue_id, disconnectType="peer"),
                        ],
                    )
                ],
            },
        ],
    }


def _ivr_flow(call: Conversation) -> dict[str, Any]:
    """The IVR session's `flow` (the SDK's AnalyticsFlow): the flow id lives here, not on the session."""
    return {
        "flowId": IVR_FLOW_ID,
        "flowName": IVR_FLOW_NAME,
        "flowType": "INBOUNDCALL",
        "flowVersion": "1.0",
        "entryType": "dnis",
        "entryReason": DNIS,
        "exitReason": "TRANSFER",
        "transferType": "ACD",
        "transferTargetName": call.queue,
    }


def transcript_document(call: Conversation) -> dict[str, Any]:
    """The speech-and-text-analytics transcript of the call's customer communication."""
    talk_start, ivr_end = call.talk_start_ms, call.start_ms + call.ivr_ms
    phrases = []
    for index, phrase in enumerate(call.phrases):
        start = talk_start + phrase.offset_ms
        phrases.append(
            {
                "phraseIndex": index,
                "participantPurpose": phrase.purpose,
                "text": phrase.text,
                "stability": 1.0,
                "confidence": phrase.confidence,
                "offset": {"milliseconds": phrase.offset_ms},
                "startTimeMs": start,
                "duration": {"milliseconds": phrase.duration_ms},
                "words": _words(call, index, phrase, start),
            }
        )
    return {
        "organizationId": ORGANIZATION_ID,
        "conversationId": call.conversation_id,
        "communicationId": call.communication_id,
        "recordingId": call.recording_id,
        "mediaType": "call",
        "conversationStartTime": call.start_ms,
        "startTime": talk_start,
        "duration": {"milliseconds": call.talk_ms},
        "participants": [
            {"participantPurpose": "ivr", "flowId": IVR_FLOW_ID, "startTimeMs": call.start_ms, "endTimeMs": ivr_end},
            {
                "participantPurpose": "customer",
                "initialDirection": "inbound",
                "ani": call.ani,
                "dnis": DNIS,
                "startTimeMs": call.start_ms,
                "endTimeMs": call.end_ms,
            },
            {
                "participantPurpose": "agent",
                "userId": call.agent.user_id,
                "queueId": call.queue_id,
                "divisionId": DIVISION_ID,
                "startTimeMs": talk_start,
                "endTimeMs": call.end_ms,
            },
        ],
        "transcripts": [
            {
                "transcriptId": call.transcript_id,
                "language": LANGUAGE,
                "engineId": "Genesys",
                "startTime": talk_start,
                "duration": {"milliseconds": call.talk_ms},
                "phrases": phrases,
            }
        ],
    }


def _words(call: Conversation, index: int, phrase: Phrase, start: int) -> list[dict[str, Any]]:
    """Per-word timings spread over the phrase by word length, with confidences near the phrase's."""
    rng = Draws(f"words/{call.conversation_id}/{index}")
    words = phrase.text.split()
    weights = [len(word) + 2 for word in words]
    total = sum(weights)
    out, elapsed = [], 0
    for word, weight in zip(words, weights, strict=True):
        duration = phrase.duration_ms * weight // total
        confidence = min(0.999, max(0.5, phrase.confidence + rng.uniform(-0.08, 0.05)))
        out.append(
            {
                "word": word,
                "confidence": round(confidence, 3),
                "offset": {"milliseconds": phrase.offset_ms + elapsed},
                "startTimeMs": start + elapsed,
                "duration": {"milliseconds": duration},
            }
        )
        elapsed += duration
    return out
