"""Wire and result models.

Requests are validated once, before any network call; frames are validated one by one as they
arrive, with a single ``model_validate_json`` call each so parsing and checking cost one pass.
"""

from __future__ import annotations

import uuid
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

Role = Literal["system", "user", "assistant"]
FinishReason = Literal["stop", "length", "content_filter"]


class Message(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    role: Role
    content: str


class Usage(BaseModel):
    model_config = ConfigDict(frozen=True)

    prompt_tokens: int = 0
    completion_tokens: int = 0
    total_tokens: int = 0


def new_request_id() -> str:
    return str(uuid.uuid4())


class CompletionRequest(BaseModel):
    """One completion, independent of the transport that will carry it.

    ``request_id`` is made here so every retry of the request carries the same id.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    model: str
    messages: tuple[Message, ...] = ()
    prompt_id: str | None = None
    variables: dict[str, str] | None = None
    system: str | None = None
    response_format: Literal["json", "text"] | None = None
    temperature: float = 0.7
    max_tokens: int = 1024
    stop_sequences: tuple[str, ...] = ()
    transport: Literal["websocket", "sse"] = "websocket"
    request_id: str = Field(default_factory=new_request_id)


# --- WebSocket (protocol section 4) -------------------------------------------------------


class StreamParameters(BaseModel):
    temperature: float
    max_tokens: int
    stop_sequences: list[str] = Field(default_factory=list)
    stream: bool = True


class StreamContext(BaseModel):
    system: str | None = None
    format: str | None = None


class StreamRequestPayload(BaseModel):
    """The request message sent on a WebSocket session after ``stream_ready``."""

    request_id: str
    model: str
    prompt_id: str | None = None
    parameters: StreamParameters
    context: StreamContext | None = None
    messages: list[Message] | None = None
    variables: dict[str, str] | None = None


class StreamReady(BaseModel):
    status: Literal["stream_ready"]
    session_id: str
    max_tokens_limit: int | None = None


class ErrorDetail(BaseModel):
    code: str
    message: str = ""
    retry_after: float | None = None


class StreamRejected(BaseModel):
    status: Literal["rejected"]
    error: ErrorDetail


class StreamFrame(BaseModel):
    """A token frame: all three keys are required, ``sequence`` is optional."""

    token: str
    finish_reason: FinishReason | None
    usage: Usage | None
    sequence: int | None = None


class ErrorFrame(BaseModel):
    error: ErrorDetail


# --- SSE chat completions (protocol section 5) --------------------------------------------


class ChatParams(BaseModel):
    model_id: str
    temperature: float
    max_tokens: int
    stream: bool = True
    stop: list[str] | None = None


class ChatRequestPayload(BaseModel):
    messages: list[Message]
    params: ChatParams


class ChunkDelta(BaseModel):
    role: str | None = None
    content: str | None = None


class ChunkChoice(BaseModel):
    index: int = 0
    delta: ChunkDelta
    finish_reason: FinishReason | None = None


class ChatChunk(BaseModel):
    id: str | None = None
    choices: list[ChunkChoice]
    usage: Usage | None = None


class ChoiceMessage(BaseModel):
    role: str
    content: str


class CompletedChoice(BaseModel):
    index: int = 0
    message: ChoiceMessage
    finish_reason: FinishReason


class ChatCompletion(BaseModel):
    """The whole answer of a ``"stream": false`` chat completion."""

    id: str | None = None
    choices: list[CompletedChoice] = Field(min_length=1)
    usage: Usage


# --- REST (sections 3, 6, 7) --------------------------------------------------------------


class Embedding(BaseModel):
    index: int
    embedding: list[float]


class EmbeddingResponse(BaseModel):
    model: str
    data: list[Embedding]
    usage: Usage = Usage()


class ModelInfo(BaseModel):
    id: str
    max_tokens: int | None = None
    context_tokens: int | None = None


class RateLimitInfo(BaseModel):
    limit: int | None = None
    remaining: int | None = None
    reset_seconds: float | None = None


class GatewayStatus(BaseModel):
    status: Literal["available", "degraded", "unavailable"]
    models: list[ModelInfo] = Field(default_factory=list)
    rate_limit: RateLimitInfo | None = None


# --- Results ------------------------------------------------------------------------------


class CompletionResult(BaseModel):
    """What one completion produced and what it cost.

    Timings: ``total_ms`` spans the whole completion including retries and rate-limit waits;
    ``ttft_ms`` runs from the same start to the first token of the attempt that produced
    ``text``; ``connect_ms`` is that attempt's connection set-up (0 on a reused session);
    ``tokens_per_second`` is completion tokens over that attempt's duration.
    """

    model_config = ConfigDict(frozen=True)

    text: str
    finish_reason: FinishReason
    usage: Usage
    request_id: str
    correlation_id: str | None
    response_id: str | None
    model: str
    transport: Literal["websocket", "sse"]
    temperature: float
    prompt_id: str | None = None
    attempts: int
    connect_ms: float
    ttft_ms: float | None
    total_ms: float
    tokens_per_second: float
    rate_limit_wait_ms: float = 0.0
