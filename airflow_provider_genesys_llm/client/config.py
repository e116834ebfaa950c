"""Gateway settings: where the gateway is, who we are, and the limits we keep.

Everything a connection can say lives here as one validated, immutable object, so the hook
only maps connection fields onto it and the transports never parse configuration themselves.
"""

from __future__ import annotations

import re
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationInfo, field_validator, model_validator

from .urls import check_base_url, check_path, is_loopback

Transport = Literal["websocket", "sse"]

#: Scopes requested when the connection names none (protocol section 2).
DEFAULT_SCOPES: tuple[str, ...] = (
    "ai:llm:gateway:use",
    "ai:llm:gateway:stream",
    "ai:llm:prompt:read",
    "ai:generation:write",
)

#: Region keys of the Genesys Cloud Python SDK and the domain each stands for.
REGION_KEYS: dict[str, str] = {
    "us_east_1": "mypurecloud.com",
    "eu_west_1": "mypurecloud.ie",
    "ap_southeast_2": "mypurecloud.com.au",
    "ap_northeast_1": "mypurecloud.jp",
    "eu_central_1": "mypurecloud.de",
    "us_west_2": "usw2.pure.cloud",
    "ca_central_1": "cac1.pure.cloud",
    "ap_northeast_2": "apne2.pure.cloud",
    "eu_west_2": "euw2.pure.cloud",
    "ap_south_1": "aps1.pure.cloud",
    "us_east_2": "use2.us-gov-pure.cloud",
    "sa_east_1": "sae1.pure.cloud",
    "me_central_1": "mec1.pure.cloud",
    "ap_northeast_3": "apne3.pure.cloud",
    "eu_central_2": "euc2.pure.cloud",
    "mx_central_1": "mxc1.pure.cloud",
    "ap_southeast_1": "apse1.pure.cloud",
}

_DOMAIN = re.compile(r"^(?=.{4,253}$)([a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z]{2,63}$")


def resolve_region(region: str) -> str:
    """Turn an SDK region key or a domain into a domain; unknown well-formed domains pass (new regions appear)."""
    value = region.strip().lower()
    if value in REGION_KEYS:
        return REGION_KEYS[value]
    value = value.removeprefix("https://").removeprefix("api.").rstrip("/")
    if not _DOMAIN.match(value):
        raise ValueError(
            f"region {region!r} is neither a Genesys Cloud domain (e.g. mypurecloud.com) "
            f"nor an SDK region key ({', '.join(sorted(REGION_KEYS))})"
        )
    return value


class ModelLimits(BaseModel):
    """What one model accepts; the client checks requests against it before sending."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    max_tokens: int = Field(4096, ge=1)
    context_tokens: int = Field(8000, ge=1)
    max_temperature_websocket: float = 2.0
    max_temperature_sse: float = 1.0


class GatewayPaths(BaseModel):
    """Endpoint paths; all configurable because the LLM paths are not in the public API reference."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    token: str = "/oauth/token"
    completions_stream: str = "/api/v2/ai/llm/gateway/completions/stream"
    chat_completions: str = "/api/v2/ai/generations/chat/completions"
    embeddings: str = "/api/v2/ai/llm/gateway/embeddings"
    status: str = "/api/v2/ai/llm/gateway/status"

    @field_validator("*")
    @classmethod
    def _plain_path(cls, value: str, info: ValidationInfo) -> str:
        """A path only: joined onto a base URL, anything else could move the request (and the
        client secret, for ``token``) to another host."""
        return check_path(f"paths.{info.field_name}", value)


#: Explicit URL fields and the secure scheme each takes.
_URL_FIELDS: dict[str, tuple[str, ...]] = {
    "api_base_url": ("https",),
    "login_base_url": ("https",),
    "stream_base_url": ("wss",),
    "analytics_webhook_url": ("https",),
}
#: The property that resolves each base URL field (explicit value or the region's host).
_URL_PROPERTIES = {"api_base_url": "api_url", "login_base_url": "login_url", "stream_base_url": "stream_url"}


class GatewayConfig(BaseModel):
    """A validated description of one gateway client.

    Inputs are hidden from validation errors: the secret must never reach a message.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", hide_input_in_errors=True)

    client_id: str = Field(min_length=1)
    client_secret: SecretStr
    region: str | None = None
    api_base_url: str | None = None
    login_base_url: str | None = None
    stream_base_url: str | None = None
    verify_ssl: bool = True
    scopes: tuple[str, ...] = DEFAULT_SCOPES
    transport: Transport = "websocket"
    model: str = "genesys-llm-v2"
    embedding_model: str = "genesys-embed-v1"
    model_limits: dict[str, ModelLimits] = Field(default_factory=dict)
    paths: GatewayPaths = GatewayPaths()
    client_name: str = "airflow-provider-genesys-llm"
    max_concurrency: int = Field(10, ge=1, le=1000)
    requests_per_minute: float = Field(300, gt=0)
    websocket_pool_size: int | None = Field(None, ge=1)
    compression: bool = False
    timeout_seconds: float = Field(300.0, gt=0)
    first_token_timeout_seconds: float = Field(60.0, gt=0)
    idle_timeout_seconds: float = Field(30.0, gt=0)
    connect_timeout_seconds: float = Field(10.0, gt=0)
    handshake_timeout_seconds: float = Field(5.0, gt=0)
    ping_interval_seconds: float | None = 20.0
    ping_timeout_seconds: float | None = 10.0
    token_refresh_margin_seconds: float = Field(300.0, ge=0)
    max_attempts: int = Field(5, ge=1, le=50)
    retry_deadline_seconds: float = Field(900.0, gt=0)
    backoff_initial_seconds: float = Field(0.5, ge=0)
    backoff_max_seconds: float = Field(30.0, gt=0)
    analytics_webhook_url: str | None = None
    analytics_webhook_timeout_seconds: float = Field(5.0, gt=0)
    #: Hosts (and their subdomains) transcript download URLs may point to besides the region's domain.
    transcript_url_hosts: tuple[str, ...] = ()
    #: Consecutive connection/timeout/auth failures that open the circuit breaker.
    breaker_failure_threshold: int = Field(5, ge=1, le=1000)
    #: Seconds the open breaker fails calls at once before it lets one probe call through.
    breaker_cooldown_seconds: float = Field(30.0, gt=0)
    #: Frames an answer may have beyond the request's ``max_tokens`` before it is cut off.
    answer_token_margin: int = Field(256, ge=0)
    #: Average UTF-8 bytes per token an answer may use: the byte bound is tokens x this.
    answer_bytes_per_token: int = Field(32, ge=1)
    #: Largest single WebSocket frame or SSE event (bytes) the client accepts.
    max_frame_bytes: int = Field(1 << 20, ge=1024)
    #: Largest REST answer (embeddings, jobs, transcript documents) the client reads, in bytes.
    max_response_bytes: int = Field(64 << 20, ge=1024)

    @field_validator("transcript_url_hosts", mode="before")
    @classmethod
    def _split_hosts(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(value.replace(",", " ").split())
        return value

    @field_validator("transcript_url_hosts")
    @classmethod
    def _hosts_are_domains(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        hosts = tuple(host.strip().lower().rstrip(".") for host in value)
        for host in hosts:
            if not _DOMAIN.match(host):
                raise ValueError(f"transcript_url_hosts entry {host!r} is not a host name (e.g. s3.amazonaws.com)")
        return hosts

    @field_validator("scopes", mode="before")
    @classmethod
    def _split_scopes(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(value.split())
        return value

    @field_validator("region")
    @classmethod
    def _known_region(cls, value: str | None) -> str | None:
        return resolve_region(value) if value else None

    @model_validator(mode="after")
    def _urls_resolvable_and_safe(self) -> GatewayConfig:
        """Every base URL is known (explicit or from the region: the properties raise otherwise) and
        https/wss only (plain on loopback), host and path only: see ``urls``."""
        for field, schemes in _URL_FIELDS.items():
            url = getattr(self, _URL_PROPERTIES.get(field, field))
            if url is not None:
                check_base_url(field, url, schemes)
        return self

    def _base(self, explicit: str | None, scheme: str, prefix: str, field: str) -> str:
        if explicit:
            return explicit.rstrip("/")
        if not self.region:
            raise ValueError(f"set either 'region' or '{field}' on the connection")
        return f"{scheme}://{prefix}.{self.region}"

    @property
    def api_url(self) -> str:
        """REST and SSE base URL."""
        return self._base(self.api_base_url, "https", "api", "api_base_url")

    @property
    def login_url(self) -> str:
        """OAuth base URL: ``login.{region}`` by default, as the platform SDK does."""
        return self._base(self.login_base_url, "https", "login", "login_base_url")

    @property
    def stream_url(self) -> str:
        """WebSocket base URL."""
        return self._base(self.stream_base_url, "wss", "api", "stream_base_url")

    @property
    def token_url(self) -> str:
        """Where the client secret goes; never anywhere else (``paths.token`` is a path only)."""
        return self.login_url + self.paths.token

    @property
    def api_on_loopback(self) -> bool:
        """The API is local (the emulator): its transcript URLs may be local too."""
        return is_loopback(urlsplit(self.api_url).hostname)

    @property
    def pool_size(self) -> int:
        """Idle WebSocket sessions kept for reuse; a session never serves two streams at once."""
        return self.websocket_pool_size or self.max_concurrency

    def limits_for(self, model: str) -> ModelLimits:
        """Limits of ``model``: the connection's ``model_limits`` entry, else the documented defaults."""
        return self.model_limits.get(model) or ModelLimits()
