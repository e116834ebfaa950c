"""``GenesysLLMHook``: a ``genesys_llm`` connection turned into a configured gateway client."""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseHook
from airflow.sdk.log import mask_secret
from pydantic import ValidationError

from ..client import (
    CompletionRequest,
    CompletionResult,
    GatewayClient,
    GatewayConfig,
    GatewayStatus,
    StreamEvent,
)
from ..client.parsing import parse_model
from ..client.transcripts import JOBS_PATH, JobStatus, TranscriptSource
from ..client.validation_errors import validation_problems
from ..coordination.settings import Priority
from ..governance.completion import GovernedCompletion, complete_governed, stream_governed
from ..governance.policy import Governance
from ._loop import BackgroundLoop
from .erasure import ErasureHookMixin

if TYPE_CHECKING:
    from airflow.sdk import Connection

#: Connection extras the hook passes to ``GatewayConfig`` (documented in the README).
CONNECTION_EXTRAS = frozenset(GatewayConfig.model_fields) - {"client_id", "client_secret"}
#: Conversations per results page when only counting them: the largest page the results route
#: serves, so a count costs as few requests as possible while one page stays small in memory.
COUNT_PAGE_SIZE = 1000


class GenesysLLMHook(ErasureHookMixin, BaseHook):
    """Interact with the Genesys Cloud LLM Gateway.

    Synchronous methods run on one private event loop per hook, so consecutive calls reuse the
    WebSocket sessions and HTTP connections; async methods use a client bound to the caller's loop
    and read the connection without blocking it (``aget_config``).

    ``retry=False`` on the status methods makes one attempt instead of the connection's retry
    policy: for sensors and triggers, whose next check is their retry.

    Governance is on by default: prompts and texts to embed are masked before they leave, answers
    are filtered and masked before they are returned (``governance=Governance(...)`` configures
    it). ``governance=False`` is the explicit opt-out for callers that govern text themselves.

    :param genesys_llm_conn_id: the ``genesys_llm`` connection: OAuth client id (login) and secret
        (password), and ``GatewayConfig`` fields as extras (region, model, transport, limits,
        coordination, prices, budgets); unknown extras are refused. Default ``"genesys_llm_default"``.
    :param governance: ``True`` (default): PII masking and the built-in output filters; a
        ``Governance`` for other patterns, output policy or filters; ``False`` for none.
    :param priority: class of this hook's completions in the fleet's shared gate when the
        connection enables coordination: ``"interactive"`` is served before ``"backfill"`` (default).
    """

    conn_name_attr = "genesys_llm_conn_id"
    default_conn_name = "genesys_llm_default"
    conn_type = "genesys_llm"
    hook_name = "Genesys Cloud LLM Gateway"

    def __init__(
        self,
        genesys_llm_conn_id: str = default_conn_name,
        *,
        governance: Governance | bool = True,
        priority: Priority = "backfill",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.genesys_llm_conn_id = genesys_llm_conn_id
        #: Class of this hook's completions in the fleet's shared gate (when the connection enables one).
        self.priority: Priority = priority
        if governance is True:
            governance = Governance()
        self.governance: Governance | None = governance or None
        self._loop: BackgroundLoop | None = None
        self._sync_client: GatewayClient | None = None
        self._async_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, GatewayClient] = (
            weakref.WeakKeyDictionary()
        )

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        """The connection form's labels and hidden fields, from the provider info (one source)."""
        from ..get_provider_info import get_provider_info

        return get_provider_info()["connection-types"][0]["ui-field-behaviour"]

    @cached_property
    def config(self) -> GatewayConfig:
        """The connection as a validated ``GatewayConfig`` (read once per hook; blocking: in a
        coroutine use ``aget_config``)."""
        return self._config_from(self.get_connection(self.genesys_llm_conn_id))

    async def aget_config(self) -> GatewayConfig:
        """``config``, reading the connection without blocking the event loop (secrets backend or
        API server); cached on the hook like ``config``."""
        if "config" not in self.__dict__:
            conn = await self.aget_connection(self.genesys_llm_conn_id)
            self.__dict__["config"] = self._config_from(conn)
        return self.config

    def _config_from(self, conn: Connection) -> GatewayConfig:
        if not conn.login or not conn.password:
            raise ValueError(
                f"connection {self.genesys_llm_conn_id!r} needs the OAuth client id as login "
                "and the client secret as password"
            )
        mask_secret(conn.password)
        extras = dict(conn.extra_dejson)
        unknown = sorted(set(extras) - CONNECTION_EXTRAS)
        if unknown:
            raise ValueError(
                f"connection {self.genesys_llm_conn_id!r} has unknown extras {unknown}; "
                f"known: {sorted(CONNECTION_EXTRAS)}"
            )
        try:
            return GatewayConfig(client_id=conn.login, client_secret=conn.password, **extras)
        except ValidationError as exc:
            problems = validation_problems(exc, whole="connection")
            raise ValueError(f"connection {self.genesys_llm_conn_id!r} is invalid: {problems}") from None

    def coordination_conninfo(self) -> str | None:
        """libpq conninfo of the Postgres connection named by ``coordination.postgres_conn_id`` (the
        fleet's shared gate, claims and spend), None when the connection names none."""
        if "_coordination_conninfo" not in self.__dict__:
            conn_id = self.config.coordination.postgres_conn_id
            self.__dict__["_coordination_conninfo"] = (
                self._conninfo_of(self.get_connection(conn_id)) if conn_id else None
            )
        return self.__dict__["_coordination_conninfo"]

    async def acoordination_conninfo(self) -> str | None:
        """``coordination_conninfo`` without blocking the event loop."""
        if "_coordination_conninfo" not in self.__dict__:
            conn_id = (await self.aget_config()).coordination.postgres_conn_id
            conninfo = self._conninfo_of(await self.aget_connection(conn_id)) if conn_id else None
            self.__dict__["_coordination_conninfo"] = conninfo
        return self.coordination_conninfo()

    @staticmethod
    def _conninfo_of(conn: Connection) -> str:
        from .postgres import airflow_conninfo  # psycopg: only for connections that use a database

        if conn.password:
            mask_secret(conn.password)
        return airflow_conninfo(conn)

    def _new_client(self) -> GatewayClient:
        """A client; with ``coordination.enabled``, behind the fleet's gate (it connects on first use)."""
        config = self.config
        gate = None
        if config.coordination.enabled:
            from ..coordination import GatewayCoordinator

            conninfo = self.coordination_conninfo()
            assert conninfo is not None  # CoordinationSettings requires postgres_conn_id when enabled
            gate = GatewayCoordinator(conninfo, self.genesys_llm_conn_id, config.coordination)
        return GatewayClient(config, on_new_token=mask_secret, gate=gate, priority=self.priority)

    def get_conn(self) -> GatewayClient:
        """The client behind the synchronous methods (it lives on the hook's private loop)."""
        if self._sync_client is None:
            self._loop = BackgroundLoop(f"genesys-llm-{self.genesys_llm_conn_id}")
            self._sync_client = self._new_client()
        return self._sync_client

    def _run(self, coroutine: Any) -> Any:
        self.get_conn()
        assert self._loop is not None
        return self._loop.run(coroutine)

    def get_async_client(self) -> GatewayClient:
        """A client bound to the running event loop, kept for the loop's lifetime.

        Reads the connection synchronously the first time; in a coroutine prefer ``aget_async_client``.
        """
        loop = asyncio.get_running_loop()
        client = self._async_clients.get(loop)
        if client is None:
            client = self._async_clients[loop] = self._new_client()
        return client

    async def aget_async_client(self) -> GatewayClient:
        """``get_async_client`` without blocking the event loop to read the connections."""
        await self.aget_config()
        await self.acoordination_conninfo()
        return self.get_async_client()

    async def aclose(self) -> None:
        """Close the client bound to the running loop (a no-op when there is none); the next async
        call opens a new one."""
        client = self._async_clients.pop(asyncio.get_running_loop(), None)
        if client is not None:
            await client.aclose()

    # --- completions ----------------------------------------------------------------------

    def complete(self, messages: Sequence[Any] | None = None, **options: Any) -> CompletionResult:
        """Run one completion and return its result (``text`` governed unless governance is off).

        Options: ``model``, ``transport``, ``temperature``, ``max_tokens``, ``prompt_id``,
        ``variables``, ``system``, ``stop_sequences``, ``response_format``.
        """
        return self._run(self._acomplete_with(self.get_conn(), messages, **options))

    def complete_governed(self, request: CompletionRequest) -> GovernedCompletion:
        """Run ``request`` (made with ``get_conn().request(...)``) and say what governance did:
        masking counts, filters applied, the request as sent."""
        return self._run(complete_governed(self.get_conn(), request, self._governance()))

    async def acomplete(self, messages: Sequence[Any] | None = None, **options: Any) -> CompletionResult:
        """``complete`` on the running event loop (same options, same governance)."""
        return await self._acomplete_with(await self.aget_async_client(), messages, **options)

    async def _acomplete_with(
        self, client: GatewayClient, messages: Sequence[Any] | None = None, **options: Any
    ) -> CompletionResult:
        request = client.request(messages=messages, **options)
        if self.governance is None:
            return await client.complete(request)
        return (await complete_governed(client, request, self.governance)).result

    async def astream(
        self, messages: Sequence[Any] | None = None, *, chunk_tokens: int = 1, **options: Any
    ) -> AsyncIterator[StreamEvent]:
        """Stream events (tokens, or chunks of ``chunk_tokens`` tokens, and restarts), masked
        unless governance is off (filters need the whole answer and are not applied to a stream)."""
        client = await self.aget_async_client()
        request = client.request(messages=messages, **options)
        if self.governance is None:
            events = client.stream(request).chunks(chunk_tokens)
        else:
            events = stream_governed(client, request, self.governance, chunk_tokens=chunk_tokens)
        async for event in events:
            yield event

    def _governance(self) -> Governance:
        if self.governance is None:
            raise ValueError("this hook was made with governance=False; use complete() for ungoverned text")
        return self.governance

    def _outgoing(self, texts: Sequence[str]) -> list[str]:
        """Texts to embed as they may leave: masked unless governance is off."""
        if self.governance is None:
            return list(texts)
        return [self.governance.masker.mask(text).text for text in texts]

    # --- other endpoints ------------------------------------------------------------------

    def embed(self, texts: Sequence[str], *, model: str | None = None) -> list[list[float]]:
        """Vectors of ``texts`` in input order (masked first unless governance is off), in calls of
        at most 256 texts; ``model`` defaults to the connection's ``embedding_model``."""
        return self._run(self.get_conn().embed(self._outgoing(texts), model=model))

    async def aembed(self, texts: Sequence[str], *, model: str | None = None) -> list[list[float]]:
        """``embed`` on the running event loop; usable as the batch operator's ``embedder``."""
        return await (await self.aget_async_client()).embed(self._outgoing(texts), model=model)

    # --- conversation transcripts (real Genesys Cloud APIs) --------------------------------

    def get_transcript_source(self) -> TranscriptSource:
        """Analytics jobs and transcript downloads on the running loop's client."""
        return TranscriptSource(self.get_async_client())

    def submit_conversation_job(self, start: datetime, end: datetime) -> str | None:
        """Submit a details job for [start, end) cut at ``dataAvailabilityDate``; None if nothing is available yet."""

        async def submit() -> str | None:
            source = TranscriptSource(self.get_conn())
            interval = await source.clamp(start, end)
            return await source.submit_job(*interval) if interval else None

        return self._run(submit())

    def get_conversation_job(self, job_id: str, *, retry: bool = True) -> JobStatus:
        """The job's state (and ``errorMessage``); ``retry=False``: one attempt."""
        return self._run(_job_status(self.get_conn(), job_id, retry))

    async def aget_conversation_job(self, job_id: str, *, retry: bool = True) -> JobStatus:
        """``get_conversation_job`` on the running event loop."""
        return await _job_status(await self.aget_async_client(), job_id, retry)

    def count_conversations(self, job_id: str) -> int:
        """How many conversations a fulfilled job found, paging its results without keeping them."""
        return self._run(_count(self.get_conn(), job_id))

    async def acount_conversations(self, job_id: str) -> int:
        """``count_conversations`` on the running event loop."""
        return await _count(await self.aget_async_client(), job_id)

    def get_status(self, *, retry: bool = True) -> GatewayStatus:
        """The gateway status; ``retry=False``: one attempt instead of the connection's retry policy."""
        return self._run(self.get_conn().status(attempts=None if retry else 1))

    async def aget_status(self, *, retry: bool = True) -> GatewayStatus:
        """``get_status`` on the running event loop."""
        client = await self.aget_async_client()
        return await client.status(attempts=None if retry else 1)

    def test_connection(self) -> tuple[bool, str]:
        """Fetch a token and the gateway status; no billed call.

        Airflow's API server calls this on a fresh hook and never closes it, so the hook closes its
        own loop thread and sockets before answering."""
        try:
            status = self.get_status()
        except Exception as exc:
            return False, f"{type(exc).__name__}: {exc}"
        finally:
            self.close()
        return True, f"gateway is {status.status}"

    def close(self) -> None:
        """Close the sessions and stop the private loop; the hook opens them again when used."""
        if self._sync_client is not None and self._loop is not None:
            self._loop.run(self._sync_client.aclose())
            self._loop.close()
        self._sync_client = None
        self._loop = None


async def _job_status(client: GatewayClient, job_id: str, retry: bool) -> JobStatus:
    if retry:
        return await TranscriptSource(client).job_status(job_id)
    # One attempt: the same call as ``TranscriptSource.job_status``, which takes no retry setting.
    return parse_model(JobStatus, await client.call_api("GET", f"{JOBS_PATH}/{job_id}", attempts=1), "job status")


async def _count(client: GatewayClient, job_id: str) -> int:
    count = 0
    async for _ in TranscriptSource(client, page_size=COUNT_PAGE_SIZE).conversations(job_id):
        count += 1
    return count
