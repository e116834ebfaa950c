"""The emulator's Starlette application: OAuth, the gateway endpoints, section 9's analytics and
transcript endpoints (`analytics.py`) and the control API.

One app serves HTTP, SSE and WebSocket on one port, like the real API host. The control API
under `/_emulator/` (`control.py`) lets tests (and a subprocess started with
`python -m genesys_llm_emulator`) arm faults, patch config and read counters; it needs a token
when one is given, which a server bound beyond loopback must have.
"""

from __future__ import annotations

import base64
import binascii
import hmac
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import parse_qsl

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute

from .admission import admit, injected_http_error
from .analytics import analytics_routes
from .chat import GENESYS_CHAT, OPENAI_CHAT, chat_endpoint
from .config import ALL_SCOPES, SCOPE_USE, ContactCenterConfig, EmulatorConfig
from .control import control_routes
from .faults import Phase
from .generator import embed, estimate_tokens
from .responses import CORRELATION_HEADER, new_correlation_id, oauth_error, platform_error
from .state import EmulatorState
from .validation import InvalidRequest, decode_json
from .websocket import completion_stream

OAUTH_PATH = "/oauth/token"
WS_STREAM_PATH = "/api/v2/ai/llm/gateway/completions/stream"
SSE_CHAT_PATH = "/api/v2/ai/generations/chat/completions"
EMBEDDINGS_PATH = "/api/v2/ai/llm/gateway/embeddings"
STATUS_PATH = "/api/v2/ai/llm/gateway/status"
OPENAI_CHAT_PATH = "/v1/chat/completions"


def _state(request: Request) -> EmulatorState:
    state: EmulatorState = request.app.state.emulator
    return state


async def oauth_token(request: Request) -> Response:
    """Section 2: client credentials grant, Basic-authenticated, answering in the OAuth shape."""
    state = _state(request)
    state.counters.count_request("oauth")
    correlation_id = new_correlation_id()
    headers = {CORRELATION_HEADER: correlation_id}
    fault = state.draw_fault("oauth", Phase.REQUEST)
    if fault is not None:
        return injected_http_error(fault, "oauth", correlation_id, headers, state.config.rate_limit_per_minute)
    credentials = _basic_credentials(request.headers.get("authorization"))
    client = state.config.clients.get(credentials[0]) if credentials else None
    if credentials is None or client is None or not hmac.compare_digest(client.secret, credentials[1]):
        return oauth_error(
            401,
            "invalid_client",
            "authentication failed: unknown client id or wrong secret (or the wrong region's login host)",
            {**headers, "WWW-Authenticate": 'Basic realm="oauth"'},
        )
    client_id = credentials[0]
    form = dict(parse_qsl((await request.body()).decode("utf-8", "replace")))
    grant_type = form.get("grant_type")
    if grant_type != "client_credentials":
        return oauth_error(400, "unsupported_grant_type", f"grant_type {grant_type!r} is not supported", headers)
    granted = _granted_scopes(form.get("scope", ""), client.scopes)
    token = state.issue_token(client_id, frozenset(granted))
    body = {
        "access_token": token,
        "token_type": "bearer",
        "expires_in": state.config.token_lifetime,
        "scope": " ".join(granted),
    }
    return JSONResponse(body, headers={**headers, "Cache-Control": "no-store"})


def _granted_scopes(requested: str, allowed: frozenset[str]) -> list[str]:
    """Requested scopes the client may have, in the order asked; all it may have when none asked."""
    wanted = requested.split() or [*ALL_SCOPES, *sorted(allowed - set(ALL_SCOPES))]
    return [scope for scope in dict.fromkeys(wanted) if scope in allowed]


def _basic_credentials(authorization: str | None) -> tuple[str, str] | None:
    """(client id, secret) from an `Authorization: Basic ...` header, None when there is none."""
    scheme, _, encoded = (authorization or "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    client_id, separator, secret = decoded.partition(":")
    return (client_id, secret) if separator else None


async def embeddings(request: Request) -> Response:
    """Section 6: deterministic unit vectors, at most `max_embedding_inputs` texts per call."""
    state = _state(request)
    admission = admit(request, state, "embeddings", SCOPE_USE)
    if admission.refusal is not None:
        return admission.refusal
    config = state.config
    raw = await request.body()
    state.counters.note_payload(raw)
    try:
        body = decode_json(raw)
        texts = _embedding_inputs(body, config)
    except InvalidRequest as exc:
        return platform_error(400, str(exc), admission.correlation_id, admission.headers)
    state.counters.add("embedding_inputs", len(texts))
    data = [{"index": index, "embedding": embed(text, config.embedding_dim)} for index, text in enumerate(texts)]
    tokens = sum(estimate_tokens(text) for text in texts)
    answer = {"model": body["model"], "data": data, "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}
    return JSONResponse(answer, headers=admission.headers)


def _embedding_inputs(body: Any, config: EmulatorConfig) -> list[str]:
    if not isinstance(body, dict):
        raise InvalidRequest("the request body must be a JSON object")
    model_id = body.get("model")
    model = config.models.get(model_id) if isinstance(model_id, str) else None
    if model is None or model.kind != "embedding":
        known = sorted(name for name, spec in config.models.items() if spec.kind == "embedding")
        raise InvalidRequest(f"model {model_id!r} is not an embedding model of this gateway; known: {known}")
    texts = body.get("input")
    if not isinstance(texts, list) or not all(isinstance(text, str) for text in texts):
        raise InvalidRequest("input must be a list of strings")
    if not 1 <= len(texts) <= config.max_embedding_inputs:
        raise InvalidRequest(f"input must hold 1 to {config.max_embedding_inputs} texts, got {len(texts)}")
    return texts


async def gateway_status(request: Request) -> Response:
    """Section 7: the configured status, the completion models and the caller's rate window."""
    state = _state(request)
    admission = admit(request, state, "status", SCOPE_USE)
    if admission.refusal is not None:
        return admission.refusal
    rate = admission.rate
    models = [
        {"id": model_id, "max_tokens": spec.max_tokens, "context_tokens": spec.context_tokens}
        for model_id, spec in state.config.models.items()
        if spec.kind == "completion"
    ]
    answer = {
        "status": state.config.status,
        "models": models,
        "rate_limit": {
            "limit": rate.allowed,
            "remaining": max(0, rate.allowed - rate.count),
            "reset_seconds": rate.reset_seconds,
        },
    }
    return JSONResponse(answer, headers=admission.headers)


def create_app(
    config: EmulatorConfig | None = None,
    faults: Iterable[Mapping[str, Any]] = (),
    contact_center: ContactCenterConfig | None = None,
    control_token: str | None = None,
) -> Starlette:
    """A fresh emulator app; its state is `app.state.emulator` (an `EmulatorState`).

    `faults` are armed at startup and re-armed by every reset, like the startup config;
    `contact_center` sets up the synthetic contact center of section 9 the same way;
    `control_token`, when set, is required by every control call (see `control.py`).
    """
    app = Starlette(
        routes=[
            Route(OAUTH_PATH, oauth_token, methods=["POST"]),
            WebSocketRoute(WS_STREAM_PATH, completion_stream),
            Route(SSE_CHAT_PATH, chat_endpoint(GENESYS_CHAT), methods=["POST"]),
            Route(EMBEDDINGS_PATH, embeddings, methods=["POST"]),
            Route(STATUS_PATH, gateway_status, methods=["GET"]),
            Route(OPENAI_CHAT_PATH, chat_endpoint(OPENAI_CHAT), methods=["POST"]),
            *analytics_routes(),  # section 9: analytics jobs, transcript URLs and their downloads
            *control_routes(control_token),
        ]
    )
    app.state.emulator = EmulatorState(config or EmulatorConfig(), faults, contact_center)
    return app
