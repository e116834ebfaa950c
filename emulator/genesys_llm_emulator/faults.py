"""Fault rules: the ways the emulator misbehaves on purpose.

A client is only as good as its handling of a gateway that refuses, stalls, drops or garbles
things; each rule makes one such failure happen on demand, a bounded number of times, so a test
can script "the second request gets a 429, the third succeeds". Rules are validated when they
are added (unknown kinds, endpoints or parameters are errors), never when they fire.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

from .config import JOB_OUTCOMES
from .draws import stable_fraction

if TYPE_CHECKING:
    from .validation import CompletionRequest

# Section 9: the analytics job and transcript endpoints (also the names of their counters).
ANALYTICS_ENDPOINTS: tuple[str, ...] = (
    "analytics_jobs",  # POST .../details/jobs
    "analytics_job_status",  # GET .../details/jobs/{jobId}
    "analytics_job_delete",  # DELETE .../details/jobs/{jobId}
    "analytics_results",  # GET .../details/jobs/{jobId}/results
    "analytics_availability",  # GET .../details/jobs/availability
    "transcript_url",  # GET /api/v2/speechandtextanalytics/.../transcripturl
    "transcript_download",  # GET /_transcripts/{token}, the pre-signed URL (S3-style errors)
)
ENDPOINTS: tuple[str, ...] = ("oauth", "ws", "sse", "embeddings", "status", "openai", *ANALYTICS_ENDPOINTS)
#: What an `invalid_output` fault answers instead of the stand-in model's JSON.
INVALID_ANSWERS: tuple[str, ...] = ("not_json", "bad_enum")
COMPLETION_ENDPOINTS: frozenset[str] = frozenset({"ws", "sse", "openai"})
ANY_ENDPOINT = "any"


class Phase(StrEnum):
    """When a rule is consulted, which is also what a "matching request" means for `skip`."""

    REQUEST = "request"  # each HTTP request or WebSocket upgrade, before authentication
    INIT = "init"  # each WebSocket `init_stream` handshake
    COMPLETION = "completion"  # each completion request (WebSocket request, SSE or OpenAI call)
    JOB = "job"  # each analytics job accepted by POST .../details/jobs (section 9)


_REQUIRED = object()


@dataclass(frozen=True)
class ParamSpec:
    """Accepted JSON types of one rule parameter and its default (`_REQUIRED` when none)."""

    types: tuple[type, ...]
    default: Any = _REQUIRED


@dataclass(frozen=True)
class FaultKind:
    """What a kind of fault needs: when it is consulted, where it applies, its parameters."""

    phase: Phase
    endpoints: frozenset[str]
    params: Mapping[str, ParamSpec]
    default_count: int | None = 1


_NUMBER = (int, float)
_OPTIONAL_STR = (str, type(None))
_AFTER_TOKENS = {"after_tokens": ParamSpec((int,), 0)}

FAULT_KINDS: dict[str, FaultKind] = {
    "http_error": FaultKind(
        Phase.REQUEST,
        frozenset(ENDPOINTS),
        {
            "status": ParamSpec((int,), 503),
            "retry_after": ParamSpec((str, int, float, type(None)), None),
            "headers": ParamSpec((dict,), {}),
            "code": ParamSpec(_OPTIONAL_STR, None),
            "message": ParamSpec(_OPTIONAL_STR, None),
            "omit_retry_after": ParamSpec((bool,), False),
            "ratelimit_reset": ParamSpec((int, type(None)), None),
        },
    ),
    "reject_init": FaultKind(
        Phase.INIT,
        frozenset({"ws"}),
        {
            "code": ParamSpec((str,), "model_overloaded"),
            "message": ParamSpec(_OPTIONAL_STR, None),
            "retry_after": ParamSpec((int, float, type(None)), None),
        },
    ),
    "stream_error": FaultKind(
        Phase.COMPLETION,
        COMPLETION_ENDPOINTS,
        {
            **_AFTER_TOKENS,
            "code": ParamSpec((str,), "model_overloaded"),
            "message": ParamSpec(_OPTIONAL_STR, None),
            "retry_after": ParamSpec(_NUMBER, 1.0),
            "status": ParamSpec((int, type(None)), None),
        },
    ),
    "close_mid_stream": FaultKind(
        Phase.COMPLETION, COMPLETION_ENDPOINTS, {**_AFTER_TOKENS, "close_code": ParamSpec((int,), 1011)}
    ),
    "truncate": FaultKind(Phase.COMPLETION, COMPLETION_ENDPOINTS, dict(_AFTER_TOKENS)),
    "slow_first_token": FaultKind(Phase.COMPLETION, COMPLETION_ENDPOINTS, {"delay": ParamSpec(_NUMBER, 1.0)}),
    "malformed_frame": FaultKind(Phase.COMPLETION, COMPLETION_ENDPOINTS, dict(_AFTER_TOKENS)),
    "missing_key": FaultKind(
        Phase.COMPLETION, COMPLETION_ENDPOINTS, {**_AFTER_TOKENS, "key": ParamSpec(_OPTIONAL_STR, None)}
    ),
    "bad_sequence": FaultKind(Phase.COMPLETION, frozenset({"ws"}), dict(_AFTER_TOKENS)),
    "pii_output": FaultKind(
        Phase.COMPLETION, COMPLETION_ENDPOINTS, {"text": ParamSpec((str,)), "split": ParamSpec((int,), 5)}
    ),
    "fail_first_attempt_ratio": FaultKind(
        Phase.COMPLETION,
        COMPLETION_ENDPOINTS,
        {"ratio": ParamSpec(_NUMBER), "retry_after": ParamSpec(_NUMBER, 0.05)},
        default_count=None,
    ),
    # Tokens of `token_bytes` bytes until the client hangs up (no final frame ever comes).
    "endless_answer": FaultKind(Phase.COMPLETION, COMPLETION_ENDPOINTS, {"token_bytes": ParamSpec((int,), 8)}),
    # One token of `bytes` bytes after `after_tokens` tokens, then the normal rest of the answer.
    "huge_frame": FaultKind(Phase.COMPLETION, COMPLETION_ENDPOINTS, {**_AFTER_TOKENS, "bytes": ParamSpec((int,))}),
    # An answer with `status` whose JSON body nests `depth` arrays (every HTTP endpoint and the WS upgrade).
    "nested_json": FaultKind(
        Phase.REQUEST, frozenset(ENDPOINTS), {"status": ParamSpec((int,), 500), "depth": ParamSpec((int,), 100_000)}
    ),
    # After `after_tokens` tokens, a frame (WS) or event (SSE) nesting `depth` arrays; `error=True`
    # sends it as an error frame (`{"error": ...}`) or an `event: error`.
    "nested_frame": FaultKind(
        Phase.COMPLETION,
        COMPLETION_ENDPOINTS,
        {**_AFTER_TOKENS, "depth": ParamSpec((int,), 100_000), "error": ParamSpec((bool,), False)},
    ),
    # The answer to a prompt whose first user message contains `contains` is not valid output: `answer`
    # "not_json" (prose around an unterminated object) or "bad_enum" (sentiment outside its enum), or
    # `text` verbatim. It fires on the first `asks` asks of the conversation (the user messages in the
    # request: a client's re-ask adds one), `null` on every ask; the stand-in model's answer otherwise.
    "invalid_output": FaultKind(
        Phase.COMPLETION,
        COMPLETION_ENDPOINTS,
        {
            "contains": ParamSpec((str,)),
            "asks": ParamSpec((int, type(None)), 1),
            "answer": ParamSpec((str,), "not_json"),
            "text": ParamSpec(_OPTIONAL_STR, None),
        },
        default_count=None,
    ),
    # The next accepted analytics job ends in `state` (after the usual polls) with `error_message`.
    "job_outcome": FaultKind(
        Phase.JOB,
        frozenset({"analytics_jobs"}),
        {"state": ParamSpec((str,), "FAILED"), "error_message": ParamSpec(_OPTIONAL_STR, None)},
    ),
}

_UNSENDABLE_CLOSE_CODES = frozenset({1004, 1005, 1006, 1015})


@dataclass
class FaultRule:
    """One armed fault; `count` and `skip` go down as matching requests arrive."""

    endpoint: str
    kind: str
    count: int | None
    skip: int
    params: dict[str, Any]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FaultRule:
        """Validate a rule given as JSON; raises ValueError saying what is wrong."""
        data = dict(data)
        kind_name = data.pop("kind", None)
        kind = FAULT_KINDS.get(kind_name) if isinstance(kind_name, str) else None
        if kind is None:
            raise ValueError(f"fault 'kind' must be one of {sorted(FAULT_KINDS)}, got {kind_name!r}")
        endpoint = data.pop("endpoint", ANY_ENDPOINT)
        if endpoint != ANY_ENDPOINT and endpoint not in kind.endpoints:
            raise ValueError(f"fault kind {kind_name!r} applies to {sorted(kind.endpoints)} or 'any', not {endpoint!r}")
        count = data.pop("count", kind.default_count)
        if count is not None and (not _is_int(count) or count < 1):
            raise ValueError(f"fault 'count' must be a positive integer or null, got {count!r}")
        skip = data.pop("skip", 0)
        if not _is_int(skip) or skip < 0:
            raise ValueError(f"fault 'skip' must be a non-negative integer, got {skip!r}")
        params = _checked_params(kind_name, kind, data)
        return cls(endpoint=endpoint, kind=kind_name, count=count, skip=skip, params=params)

    @property
    def phase(self) -> Phase:
        return FAULT_KINDS[self.kind].phase

    def applies(
        self,
        endpoint: str,
        phase: Phase,
        request_id: str | None,
        first_sighting: bool,
        request: CompletionRequest | None = None,
    ) -> bool:
        """Whether this rule would fire for a request at `endpoint` in `phase` (`request`: a completion's)."""
        if phase is not self.phase:
            return False
        if self.endpoint != endpoint and not (
            self.endpoint == ANY_ENDPOINT and endpoint in FAULT_KINDS[self.kind].endpoints
        ):
            return False
        if self.kind == "fail_first_attempt_ratio":
            return first_sighting and request_id is not None and stable_fraction(request_id) < self.params["ratio"]
        if self.kind == "invalid_output":
            return request is not None and _asked(request, self.params["contains"], self.params["asks"])
        return True

    def as_dict(self) -> dict[str, Any]:
        """The rule as JSON, with defaults filled in and the remaining count and skip."""
        return {"endpoint": self.endpoint, "kind": self.kind, "count": self.count, "skip": self.skip, **self.params}


def _asked(request: CompletionRequest, marker: str, asks: int | None) -> bool:
    """Whether the conversation starts with `marker` and is within its first `asks` asks."""
    user = [message.content for message in request.messages if message.role == "user"]
    return bool(user) and marker in user[0] and (asks is None or len(user) <= asks)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _checked_params(kind_name: str, kind: FaultKind, given: dict[str, Any]) -> dict[str, Any]:
    unknown = set(given) - set(kind.params)
    if unknown:
        raise ValueError(f"fault kind {kind_name!r} has no parameters {sorted(unknown)}; known: {sorted(kind.params)}")
    params: dict[str, Any] = {}
    for name, spec in kind.params.items():
        if name not in given:
            if spec.default is _REQUIRED:
                raise ValueError(f"fault kind {kind_name!r} needs parameter {name!r}")
            params[name] = spec.default
            continue
        value = given[name]
        if not isinstance(value, spec.types) or (isinstance(value, bool) and bool not in spec.types):
            allowed = ", ".join(t.__name__ for t in spec.types)
            raise ValueError(f"fault parameter {name!r} must be of type {allowed}, got {value!r}")
        params[name] = value
    _check_ranges(params)
    return params


def _check_ranges(params: dict[str, Any]) -> None:
    """Bounds that would otherwise surface as a crash inside the server when the rule fires."""
    status = params.get("status")
    if status is not None:
        try:
            HTTPStatus(status)
        except ValueError:
            raise ValueError(f"fault parameter 'status' is not an HTTP status: {status}") from None
    close_code = params.get("close_code")
    if close_code is not None and (not 1000 <= close_code <= 4999 or close_code in _UNSENDABLE_CLOSE_CODES):
        raise ValueError(f"fault parameter 'close_code' cannot be sent in a close frame: {close_code}")
    for name, limit in (("token_bytes", 1 << 20), ("bytes", 1 << 28), ("depth", 10_000_000)):
        value = params.get(name)
        if value is not None and not 1 <= value <= limit:
            raise ValueError(f"fault parameter {name!r} must be between 1 and {limit}: {value}")
    for name in ("after_tokens", "delay", "retry_after"):
        value = params.get(name)
        if isinstance(value, (int, float)) and value < 0:
            raise ValueError(f"fault parameter {name!r} must not be negative: {value}")
    if params.get("split", 1) < 1:
        raise ValueError("fault parameter 'split' must be at least 1")
    if params.get("answer", "not_json") not in INVALID_ANSWERS:
        raise ValueError(f"fault parameter 'answer' must be one of {INVALID_ANSWERS}, got {params['answer']!r}")
    if params.get("asks") is not None and params["asks"] < 1:
        raise ValueError("fault parameter 'asks' must be at least 1 (or null: every ask)")
    ratio = params.get("ratio")
    if ratio is not None and not 0 <= ratio <= 1:
        raise ValueError(f"fault parameter 'ratio' must be between 0 and 1: {ratio}")
    state = params.get("state")
    if state is not None and state not in JOB_OUTCOMES:
        raise ValueError(f"fault parameter 'state' must be one of {JOB_OUTCOMES}, got {state!r}")
    headers = params.get("headers", {})
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in headers.items()):
        raise ValueError("fault parameter 'headers' must map strings to strings")
