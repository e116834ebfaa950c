"""``GenesysLLMBatchCompletionOperator``: many completions into a pgvector table, resumably.

The operator only wires Airflow things (connections, templating, XCom, context ids) onto the
Airflow-free ``BatchRunner``; it runs on the worker's event loop (``BaseAsyncOperator``) so
hundreds of streams share one thread.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Sequence
from functools import partial
from itertools import islice
from typing import Any, ClassVar, Literal

import psycopg
from airflow.sdk import BaseAsyncOperator, BaseHook, Context
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from ..batch.fleet import FleetControls
from ..batch.items import check_items_source, iter_jsonl, iter_query
from ..batch.plan import plan_batch
from ..batch.prompt_version import PreviousVersions, Reenrich, check_version_options
from ..batch.reask import DEFAULT_OUTPUT_RETRIES, check_output_retries
from ..batch.runner import BatchRunner, BatchSettings, Embedder, RunContext
from ..callbacks.audit import DEFAULT_AUDIT_TABLE, audit_store, publish_head, record_context, task_audit_record
from ..client import GatewayClient, GatewayConfig
from ..coordination import SampleCompletion
from ..coordination.settings import Priority
from ..exceptions import BatchFailedError
from ..governance.audit import COMPLIANCE_TAG, AuditLog, Cost
from ..governance.chain import AuditChainStore
from ..governance.filters import OutputFilter
from ..governance.keys import IdKey
from ..governance.masking import MaskingPolicy
from ..hooks.genesys_llm import GenesysLLMHook
from ..hooks.id_key import ID_KEY_VARIABLE, get_id_key
from ..hooks.postgres import airflow_conninfo, pgvector_store_from_airflow
from ..metrics import StatsObserver, batch_spend
from ..rendered_fields import MaskedRenderedFieldsMixin
from ..sinks.erasure import TombstoneList, stored_digests
from ..sinks.pgvector import PgVectorStore
from .assets import batch_extra, declare_results_outlet, emits_results_asset  # issue 11: asset events
from .lineage import batch_lineage  # issue 11: OpenLineage
from .request_fields import RequestFieldsMixin
from .task_options import OutputSchemaOption, output_schema_of, task_governance

#: What a task does when a budget left items unsent: fail it (the default: nothing downstream
#: mistakes a partial batch for a whole one), mark it skipped, or let it succeed.
BudgetOutcome = Literal["fail", "skip", "succeed"]

#: Request options that apply to every item unless the item overrides them.
REQUEST_DEFAULTS = ("model", "temperature", "max_tokens", "system", "prompt_id", "transport", "response_format")


def store_conninfo(operator: GenesysLLMBatchCompletionOperator) -> str:
    """libpq conninfo of the results database (a Unix-socket directory as host works)."""
    return airflow_conninfo(BaseHook.get_connection(operator.postgres_conn_id))


def is_transient(exc: BaseException) -> bool:
    """Whether another try of the task may succeed: the error's own ``transient`` when it has one
    (gateway, sink and batch errors do), else not for ``ValueError``/``TypeError`` (invalid configuration)."""
    flag = getattr(exc, "transient", None)
    return bool(flag) if flag is not None else not isinstance(exc, (ValueError, TypeError))


class GenesysLLMBatchCompletionOperator(RequestFieldsMixin, MaskedRenderedFieldsMixin, BaseAsyncOperator):
    """Run a completion for every item and upsert the results, with embeddings, into pgvector.

    Items come from exactly one of ``items``, ``jsonl_path`` or ``sql``. Each item has an ``id``
    and ``messages``, ``text`` or ``variables``, plus optional per-item overrides of the request
    options below (``model``, ``temperature``, ``max_tokens``, ``system``, ``prompt_id``,
    ``transport``, ``response_format``, ``stop_sequences``) and ``metadata`` stored with its row.
    Results are keyed by an HMAC of (item id, prompt, model, parameters): with
    ``skip_existing`` a retry or re-run sends only what is not stored yet. Every row carries its
    ``prompt_version`` (a keyed hash of system prompt, template, model and parameters): changing the
    prompt re-enriches the items stored at older versions (``reenrich``) and keeps or replaces
    their old rows (``previous_versions``). The task returns (XCom) a
    manifest of counts, tokens, cost, latencies and the audit chain's head, never texts.

    Fleet settings come from the connection's extras (``coordination``, ``price_table``,
    ``budgets``); the parameters below choose this task's place in them.

    :param table: results table, created if missing with ``<table>_failures`` beside it; a plain
        name (a dotted one is refused: use ``schema``), templated. Its asset
        (``x-genesys-llm://<postgres_conn_id>/<schema>/<table>``) gets an event on success.
    :param postgres_conn_id: Airflow ``postgres`` connection of the results database (a Unix-socket
        directory as host works). Default ``"postgres_default"``.
    :param schema: schema of the results and failures tables (and of the erasure tombstones that
        are checked before enrichment); it must exist. Default ``"public"``.
    :param items: the items as a list of dicts, an iterable or an ``XComArg``, templated. A string
        or a single dict is refused (it would be read per character or per key). Airflow's
        rendered-template store keeps only a masked, truncated preview. Default ``None``.
    :param jsonl_path: a JSON-lines file of items, read lazily in bounded memory, templated; a line
        that is not JSON, over 4 MiB or nested too deep becomes an invalid item of its own.
        Default ``None``.
    :param sql: a query whose rows (columns named as item fields) are the items, read with a
        server-side cursor so a large source streams, templated. Default ``None``.
    :param sql_parameters: values bound to ``sql``'s ``%(name)s`` placeholders (never formatted into
        it), templated and masked in the rendered-template store. Default ``None``.
    :param source_conn_id: Postgres connection ``sql`` runs on. Default: ``postgres_conn_id``; set
        it when the items live in another database than the results.
    :param genesys_llm_conn_id: the ``genesys_llm`` connection: credentials, region, and the
        defaults of every option left ``None`` here (model, transport, concurrency, rate limits,
        fleet coordination, prices, budgets). Default ``"genesys_llm_default"``.
    :param model: model of every item that names none, templated (a rendered string is used as
        is). Default ``None``: the connection's ``model``. Part of the result key, so a new model
        completes every item again.
    :param temperature: sampling temperature, or a list of them for a sweep (each item is
        completed once per value, each result its own row), templated: a rendered ``"0.2"`` or
        ``"[0.2, 0.7]"`` is read as the number or list. Checked against the model's range
        (``0..2`` over WebSocket, ``0..1`` over SSE by default) per item. Default ``None``: 0.7.
    :param max_tokens: most tokens an answer may have, templated (a rendered ``"256"`` is read as
        an int). Answers that reach it end with ``finish_reason="length"``. Default ``None``:
        1024; at most the model's capacity.
    :param system: system prompt of every item that has none, templated and masked in the
        rendered-template store; it is masked before it is sent like the prompt. Default ``None``.
    :param prompt_id: a server-side prompt template, filled from each item's ``variables``,
        templated (WebSocket transport only). Default ``None``.
    :param transport: ``"websocket"`` or ``"sse"``. Default ``None``: the connection's
        ``transport`` (``"websocket"``); SSE needs ``messages`` and allows temperatures up to 1.
    :param response_format: ``"json"`` asks the model for a JSON answer (see ``embed="json:<field>"``);
        ``"text"`` for prose. Default ``None``: the gateway's default.
    :param concurrency: completions in flight at once in this task. Default ``None``: the
        connection's ``max_concurrency`` (10), which also caps a larger value; with fleet
        coordination the fleet's shared limit applies on top. Raise it for throughput, lower it to
        leave the gateway's quota to other tasks.
    :param chunk_size: results written (and embedded) per database round trip; at most
        ``chunk_size + concurrency`` results are held in memory. Default 500; lower it for very
        large answers, raise it to cut round trips.
    :param skip_existing: skip items whose result id is already stored (and embed paid-for answers
        an earlier attempt could not embed, without asking the gateway again). Default ``True``;
        ``False`` completes and overwrites every item again (paid again).
    :param max_failed_ratio: share of the input (failed completions plus invalid items, over all
        items) the task tolerates before it fails with ``BatchFailedError``; whatever succeeded is
        stored either way, and a retry sends only the failed items. Default 0.0 (any failure fails
        the task); between 0 and 1.
    :param embed: what is embedded into each row's vector: ``"completion"`` (the answer, default),
        ``"source"`` (the item's text), or ``"json:<field>"`` (one field of a JSON answer; an answer
        without it falls back to the whole answer, counted in the manifest and marked on the row).
    :param embedder: an async callable from a list of texts to their vectors (for example an
        OpenAI-compatible embeddings API, see the README). Default ``None``: the gateway's
        embeddings endpoint on the same connection. Texts are masked before they are embedded.
    :param embedding_dimension: length of the vectors, fixed by the table once created (a table
        with another dimension fails the task without retries). Default 384; 1 to 16,000, at most
        2,000 with an index.
    :param index_mode: ``"hnsw"`` (default) creates the HNSW cosine index with the table;
        ``"deferred"`` builds it after the batch (an index makes every insert much slower: use it
        for a large first load); ``"none"`` never creates one.
    :param progress_interval_seconds: seconds between progress lines (done, failed, rate, ETA) in
        the task log. Default 30.
    :param mask_prompts: redact PII in prompts, system prompts, variables and stop sequences
        before they are sent. Default ``True``; ``False`` sends them as written (ids, metadata and
        logs are still masked, answers follow ``output_masking``), for gateways inside the data's
        trust boundary.
    :param output_masking: what PII in an answer does: ``"redact"`` (default) masks it before it is
        stored; ``"fail"`` fails that item (recorded, without the value); ``"flag"`` stores it
        unmasked and counts the findings.
    :param extra_pii_patterns: more detectors, by name, masked like the built-in ones, e.g.
        ``{"EMPLOYEE_ID": r"EMP-\\d{6}"}``. Default ``None``.
    :param output_filters: safety filters applied to each answer before masking. Default ``None``:
        the built-in filters (reasoning blocks and generation-error lines removed); ``[]`` turns
        them off.
    :param audit_table: the hash-chained audit table one record per completion and one per task
        are appended to (created if missing). Default ``"genesys_llm_audit"``; ``None`` keeps the
        records in the task log only.
    :param audit_conn_id: Postgres connection of the audit table. Default: ``postgres_conn_id``;
        set it to a connection with the least-privilege writer role (``create-writer-role``).
    :param compliance_tag: tag carried by every audit record of the task, for the auditors'
        queries. Default ``"GENESYS_AI_GATEWAY_V2"``.
    :param id_key_variable: Airflow Variable holding the deployment's HMAC key for result ids,
        request ids and prompt fingerprints; the task fails before any request when it is unset.
        Default ``"genesys_llm_id_key"``.
    :param priority: this task's class in the fleet's shared gate (with coordination):
        ``"interactive"`` for scheduled work that must not wait behind backfills, ``"backfill"``
        (default) otherwise.
    :param on_budget_exhausted: the task's state when a budget of the connection left items unsent
        (``deferred_by_budget`` in the manifest; a later run sends exactly them): ``"fail"``
        (default, without retries: a retry today meets the same budget), ``"skip"`` or ``"succeed"``.
    :param claim_wait_seconds: with coordination, items are claimed before they are paid for, so a
        duplicate delivery of the task pays for nothing twice; this is how long it waits for items
        another delivery holds before leaving them to it. Default 60.
    :param dry_run: spend nothing on the items: return (and print) the plan, i.e. items, already
        stored, and the tokens, cost and time of the rest, scaled from stored results of the
        model. Needs the connection's ``price_table``. Default ``False``.
    :param plan_sample_items: with ``dry_run`` and no stored results of the model to scale from,
        this many items are first completed for real (and stored, so never paid again); 0 refuses
        to plan instead. Default 5.
    :param prompt_label: a human name for the prompt (``"refund-intent v2"``), stored with every
        row next to its ``prompt_version`` (a keyed hash of system prompt, template, model and
        parameters); not part of the version, so relabelling re-enriches nothing. Templated.
    :param reenrich: with ``skip_existing``, what happens to an item stored at other prompt
        versions: ``"outdated"`` (default) sends it again, ``"never"`` leaves it as it is.
        Items already stored at the current version are never sent again.
    :param previous_versions: ``"keep"`` (default) keeps an item's rows of other versions next to
        the new one (tell them apart by ``prompt_version``); ``"replace"`` deletes them, and
        resolves their failures, in the transaction that stores the item's current row.
    :param output_schema: a pydantic v2 model class or a JSON-schema dict (templated; a rendered
        string is parsed as JSON) every answer must be a valid object of; ``response_format`` then
        defaults to ``json``. Valid objects are stored in the ``output`` jsonb column, and
        ``embed="json:<field>"`` embeds that field. Checked (with ``embed`` and ``output_columns``)
        before any spend. Default ``None``: answers are stored as text, unchecked.
    :param output_retries: re-asks of an invalid answer (default 2), each a paid, audited
        completion carrying the validation reason; an item still invalid is a failure
        (``OutputValidationError``) counted against ``max_failed_ratio``.
    :param output_columns: schema fields (string, enum, integer, number or boolean) to store as
        typed columns generated from ``output``, for ``GROUP BY`` (a clash with an existing column
        is refused). Default ``()``: the values stay in ``output`` only.
    """

    template_fields: Sequence[str] = (
        "items",
        "jsonl_path",
        "sql",
        "sql_parameters",
        "system",
        "prompt_id",
        "table",
        "model",
        "temperature",
        "max_tokens",
        "prompt_label",
        "output_schema",
    )
    template_fields_renderers = {"sql": "sql", "items": "json"}
    masked_template_fields: ClassVar[tuple[str, ...]] = ("items", "sql_parameters", "system")
    temperature_sweep = True

    def __init__(
        self,
        *,
        table: str,
        postgres_conn_id: str = "postgres_default",
        schema: str = "public",
        items: Any = None,
        jsonl_path: str | None = None,
        sql: str | None = None,
        sql_parameters: dict[str, Any] | None = None,
        source_conn_id: str | None = None,
        genesys_llm_conn_id: str = GenesysLLMHook.default_conn_name,
        model: str | None = None,
        temperature: float | list[float] | str | None = None,
        max_tokens: int | str | None = None,
        system: str | None = None,
        prompt_id: str | None = None,
        transport: str | None = None,
        response_format: str | None = None,
        concurrency: int | None = None,
        chunk_size: int = 500,
        skip_existing: bool = True,
        max_failed_ratio: float = 0.0,
        embed: str = "completion",
        embedder: Embedder | None = None,
        embedding_dimension: int = 384,
        index_mode: Literal["hnsw", "deferred", "none"] = "hnsw",
        progress_interval_seconds: float = 30.0,
        mask_prompts: bool = True,
        output_masking: MaskingPolicy = "redact",
        extra_pii_patterns: dict[str, str] | None = None,
        output_filters: Sequence[OutputFilter] | None = None,
        audit_table: str | None = DEFAULT_AUDIT_TABLE,
        audit_conn_id: str | None = None,
        compliance_tag: str = COMPLIANCE_TAG,
        id_key_variable: str = ID_KEY_VARIABLE,
        priority: Priority = "backfill",
        on_budget_exhausted: BudgetOutcome = "fail",
        claim_wait_seconds: float = 60.0,
        dry_run: bool = False,
        plan_sample_items: int = 5,
        prompt_label: str | None = None,
        reenrich: Reenrich = "outdated",
        previous_versions: PreviousVersions = "keep",
        output_schema: OutputSchemaOption = None,
        output_retries: int = DEFAULT_OUTPUT_RETRIES,
        output_columns: Sequence[str] = (),
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        sources = [
            name for name, value in (("items", items), ("jsonl_path", jsonl_path), ("sql", sql)) if value is not None
        ]
        if len(sources) != 1:
            raise ValueError(f"give exactly one of items, jsonl_path or sql (got {sources or 'none'})")
        if isinstance(items, (str, bytes)):
            check_items_source(items)
        if not 0.0 <= max_failed_ratio <= 1.0:
            raise ValueError(f"max_failed_ratio must be between 0 and 1, got {max_failed_ratio}")
        if priority not in ("interactive", "backfill"):
            raise ValueError(f"priority must be 'interactive' or 'backfill', got {priority!r}")
        if on_budget_exhausted not in ("fail", "skip", "succeed"):
            raise ValueError(f"on_budget_exhausted must be 'fail', 'skip' or 'succeed', got {on_budget_exhausted!r}")
        if plan_sample_items < 0:
            raise ValueError(f"plan_sample_items must be at least 0, got {plan_sample_items}")
        check_version_options(reenrich, previous_versions, None)  # the label is checked once rendered
        self.prompt_label = prompt_label
        self.reenrich: Reenrich = reenrich
        self.previous_versions: PreviousVersions = previous_versions
        self.priority: Priority = priority
        self.on_budget_exhausted = on_budget_exhausted
        self.claim_wait_seconds = claim_wait_seconds
        #: Named ``dry_run`` as a parameter; ``BaseOperator.dry_run`` is a method (template rendering).
        self.plan_only = dry_run
        self.plan_sample_items = plan_sample_items
        self.table = table
        self.postgres_conn_id = postgres_conn_id
        self.schema = schema
        self.items = items
        self.jsonl_path = jsonl_path
        self.sql = sql
        self.sql_parameters = sql_parameters
        self.source_conn_id = source_conn_id or postgres_conn_id
        self.genesys_llm_conn_id = genesys_llm_conn_id
        self.model = model
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.system = system
        self.prompt_id = prompt_id
        self.transport = transport
        # An output schema asks for JSON unless the DAG says otherwise.
        self.response_format = response_format or ("json" if output_schema is not None else None)
        self.concurrency = concurrency
        self.chunk_size = chunk_size
        self.skip_existing = skip_existing
        self.max_failed_ratio = max_failed_ratio
        self.embed = embed
        self.embedder = embedder
        self.embedding_dimension = embedding_dimension
        self.index_mode = index_mode
        self.progress_interval_seconds = progress_interval_seconds
        self.governance = task_governance(extra_pii_patterns, mask_prompts, output_masking, output_filters)
        self.audit_table = audit_table
        self.audit_conn_id = audit_conn_id or postgres_conn_id
        self.compliance_tag = compliance_tag
        self.id_key_variable = id_key_variable
        self._erased: TombstoneList | None = None
        if isinstance(output_columns, str):
            raise TypeError("output_columns must be a list of schema field names, not a string")
        self.output_columns = tuple(output_columns)
        PgVectorStore.check_output_columns(self.output_columns, f"{schema}.{table}")
        output_schema_of(output_schema, embed=embed, columns=self.output_columns)  # before any spend
        self.output_schema = output_schema
        self.output_retries = check_output_retries(output_retries)
        self.preview_masker = self.governance.masker
        declare_results_outlet(self)  # issue 11: the table's asset (or an alias when it is templated)

    get_openlineage_facets_on_complete = batch_lineage  # issue 11

    def _source(self) -> tuple[Any, int | None]:
        """The items iterable and its length when known cheaply (for the ETA)."""
        if self.jsonl_path is not None:
            return iter_jsonl(self.jsonl_path), None
        if self.sql is not None:
            conninfo = airflow_conninfo(BaseHook.get_connection(self.source_conn_id))
            return iter_query(lambda: psycopg.connect(conninfo), self.sql, self.raw_field("sql_parameters")), None
        items = check_items_source(self.raw_field("items"))
        return items, len(items) if isinstance(items, Sequence) else None

    @emits_results_asset(batch_extra)  # issue 11
    async def aexecute(self, context: Context) -> dict[str, Any]:
        """Run the batch; an error a retry cannot fix fails the task without Airflow's retries."""
        try:
            return await self._run(context)
        except Exception as exc:
            if is_transient(exc):
                raise
            raise AirflowFailException(
                f"{type(exc).__name__}: {exc} (not retried: another try would fail the same way; fix the cause "
                "and clear the task, results stored so far are kept)"
            ) from exc

    async def _run(self, context: Context) -> dict[str, Any]:
        # Blocking work (Variable and Connection lookups, DDL, queries) runs in threads, never on the
        # loop. Lookups are requests to the task supervisor over one channel that takes a lock per
        # request, so any thread may make them (airflow.sdk.execution_time.comms); a blocking request
        # from the loop's own thread while an async one (``aget_connection``) holds the lock is
        # refused by Airflow 3.3 (DeadlockImminentError) and would hang 3.2.
        id_key = await asyncio.to_thread(get_id_key, self.id_key_variable)  # before any spend
        hook = GenesysLLMHook(self.genesys_llm_conn_id, priority=self.priority)
        client = await hook.aget_async_client()
        store = await asyncio.to_thread(
            pgvector_store_from_airflow,
            self.postgres_conn_id,
            table=self.table,
            schema=self.schema,
            dimension=self.embedding_dimension,
            index=self.index_mode,
        )
        try:
            schema = output_schema_of(self.output_schema, embed=self.embed, columns=self.output_columns)
            await asyncio.to_thread(store.ensure_schema)
            if schema is not None and self.output_columns:
                await asyncio.to_thread(store.ensure_output_columns, schema.sql_columns(self.output_columns))
            if self.plan_only:
                return await self._plan(context, hook, client, store, id_key)
            items, total = await asyncio.to_thread(self._source)
            return await self._batch(context, hook, client, store, id_key, items, total)
        finally:
            await client.aclose()
            await asyncio.to_thread(store.close)

    async def _plan(
        self, context: Context, hook: GenesysLLMHook, client: GatewayClient, store: PgVectorStore, id_key: IdKey
    ) -> dict[str, Any]:
        """The plan of a run, without paying for the items (see the class docstring)."""
        config = client.config
        if config.price_table is None:
            raise ValueError(f"dry_run needs prices: connection {self.genesys_llm_conn_id!r} has no price_table extra")
        defaults = self._request_defaults()
        model = str(defaults.get("model") or config.model)
        sample = await asyncio.to_thread(store.usage_sample, model)
        sampled_now = 0
        if not sample:
            if not self.plan_sample_items:
                raise ValueError(
                    f"dry_run: {self.schema}.{self.table} holds no results of model {model!r} to sample, and "
                    "plan_sample_items is 0; allow a few items to run for real (plan_sample_items=5)"
                )
            items, _ = await asyncio.to_thread(self._source)
            self.log.info(
                "plan: no stored results of %s to sample; completing %d items for real (stored, never paid again)",
                model,
                self.plan_sample_items,
            )
            sampled = await self._batch(
                context, hook, client, store, id_key, islice(items, self.plan_sample_items), self.plan_sample_items
            )
            sampled_now = sampled["counts"]["succeeded"]
            sample = await asyncio.to_thread(store.usage_sample, model)
        items, _ = await asyncio.to_thread(self._source)
        plan = await asyncio.to_thread(
            plan_batch,
            items,
            config=config,
            request_defaults=defaults,
            id_key=id_key,
            stored_ids=store.existing_ids,
            sample=[SampleCompletion(*row) for row in sample],
            prices=config.price_table,
            max_concurrency=self._quota(config),
            requests_per_minute=(
                config.coordination.requests_per_minute if config.coordination.enabled else config.requests_per_minute
            ),
            stored_versions=store.stored_versions if self.skip_existing else None,
            reenrich=self.reenrich,
            version_parameters=self._version_parameters(),
        )
        self.log.info("%s", plan.summary())
        print(plan.summary())  # the plan is what the user asked for: on stdout as well as in the task log
        return {**plan.to_dict(), "sampled_now": sampled_now, "dry_run": True}

    def _quota(self, config: GatewayConfig) -> int:
        """Streams the run will have: the fleet's limit with coordination, else this task's concurrency."""
        if config.coordination.enabled:
            return config.coordination.max_concurrency
        return min(self.concurrency or config.max_concurrency, config.max_concurrency)

    def _request_defaults(self) -> dict[str, Any]:
        return {name: self.raw_field(name) for name in REQUEST_DEFAULTS if self.raw_field(name) is not None}

    def _version_parameters(self) -> dict[str, Any]:
        """What defines the prompt version beyond the request options: the output schema (it shapes
        the answer and every re-ask), so changing it re-enriches like a prompt change does."""
        schema = output_schema_of(self.output_schema)
        return {"output_schema": schema.json_schema} if schema is not None else {}

    async def _fleet(self, hook: GenesysLLMHook, config: GatewayConfig, run: RunContext) -> FleetControls:
        """Claims (with coordination) and budgets (when the connection sets any) of this task."""
        conninfo = await hook.acoordination_conninfo()
        claims = ledger = scope = None
        table_schema = config.coordination.table_schema
        if conninfo and config.coordination.enabled:
            from ..coordination import ItemClaims

            owner = f"{run.dag_id}/{run.run_id}/{run.task_id}/{run.map_index}/{run.try_number}"
            claims = ItemClaims(conninfo, f"{self.schema}.{self.table}", owner, table_schema=table_schema)
        budgets = config.budgets
        if conninfo and config.price_table and any((budgets.per_task, budgets.per_dag_run, budgets.per_day)):
            from ..coordination import BudgetLedger, SpendScope

            ledger = BudgetLedger(conninfo, budgets, currency=config.price_table.currency, table_schema=table_schema)
            # no try number in the task: a retry shares its task's budget instead of getting a fresh one
            scope = SpendScope(
                self.genesys_llm_conn_id,
                dag_run=f"{run.dag_id}/{run.run_id}",
                task=f"{run.dag_id}/{run.task_id}/{run.map_index}",
            )
        return FleetControls(claims, ledger, config.price_table, scope, self.claim_wait_seconds)

    async def _batch(
        self,
        context: Context,
        hook: GenesysLLMHook,
        client: GatewayClient,
        store: PgVectorStore,
        id_key: IdKey,
        items: Iterable[Any],
        total: int | None,
    ) -> dict[str, Any]:
        audit = await asyncio.to_thread(audit_store, self.audit_conn_id, self.audit_table) if self.audit_table else None
        run_context = RunContext(**record_context(context, owner=self.owner, conn_id=self.genesys_llm_conn_id))
        settings = BatchSettings(
            concurrency=self.concurrency or client.config.max_concurrency,
            chunk_size=self.chunk_size,
            skip_existing=self.skip_existing,
            embed=self.embed,
            progress_interval_seconds=self.progress_interval_seconds,
            reenrich=self.reenrich,
            previous_versions=self.previous_versions,
            prompt_label=self.prompt_label or None,
            output_schema=output_schema_of(self.output_schema),
            output_retries=self.output_retries,
        )
        # Erased conversations are never enriched again (sinks/erasure.py): their items are held back.
        conninfo = await asyncio.to_thread(store_conninfo, self)
        digests = await asyncio.to_thread(stored_digests, partial(psycopg.connect, conninfo), schema=self.schema)
        self._erased = TombstoneList(id_key, digests) if digests else None
        if self._erased is not None:
            items = self._erased.filter_items(items)
        runner = BatchRunner(
            client,
            store,
            self.embedder or client.embed,
            settings=settings,
            id_key=id_key,
            context=run_context,
            request_defaults=self._request_defaults(),
            total_hint=total,
            governance=self.governance,
            audit=audit,
            observer=StatsObserver(),
            fleet=await self._fleet(hook, client.config, run_context),
            version_parameters=self._version_parameters(),
        )
        error: BaseException | None = None
        try:
            await runner.run(items)
            if self.index_mode == "deferred":
                await asyncio.to_thread(store.build_index, concurrently=True)
        except BaseException as exc:
            error = exc
            raise
        finally:
            stats = runner.stats
            manifest = await self._finish(context, runner, client, store, audit, error)
        if stats.failed_ratio > self.max_failed_ratio:
            raise BatchFailedError(
                f"{stats.failures} of {stats.total} completions and items failed ({stats.failed} failed, "
                f"{stats.invalid} invalid; ratio {stats.failed_ratio:.3f} > max_failed_ratio {self.max_failed_ratio}); "
                f"{stats.total - stats.failures} results are stored in {self.schema}.{self.table} and a retry sends "
                f"only the failed items; failures are in {self.schema}.{self.table}_failures",
                transient=stats.failed > 0,
            )
        if stats.deferred_by_budget:
            self._budget_exhausted(stats.deferred_by_budget)
        return manifest

    def _budget_exhausted(self, deferred: int) -> None:
        """Apply ``on_budget_exhausted``; the manifest (in XCom) already counts what was deferred."""
        message = (
            f"{deferred} completions were left unsent because a budget of connection "
            f"{self.genesys_llm_conn_id!r} ran out (deferred_by_budget); they are not stored, so a later run "
            "(the next day, or after raising the budget) sends exactly them"
        )
        if self.on_budget_exhausted == "fail":
            raise AirflowFailException(message + " (on_budget_exhausted='fail'; a retry today meets the same budget)")
        if self.on_budget_exhausted == "skip":
            raise AirflowSkipException(message)
        self.log.warning("%s (on_budget_exhausted='succeed')", message)

    async def _finish(
        self,
        context: Context,
        runner: BatchRunner,
        client: GatewayClient,
        store: PgVectorStore,
        audit: AuditChainStore | None,
        error: BaseException | None,
    ) -> dict[str, Any]:
        """Record usage even when the task fails: task audit record, manifest in XCom, analytics webhook."""
        ti = context["ti"]
        stats = runner.stats
        failed = error is not None or stats.failed_ratio > self.max_failed_ratio
        record = task_audit_record(
            context,
            status="failed" if failed else "success",
            error_class=type(error).__name__ if error else ("BatchFailedError" if failed else None),
            conn_id=self.genesys_llm_conn_id,
            model=self.model or client.config.model,
            usage={
                "prompt_tokens": stats.prompt_tokens,
                "completion_tokens": stats.completion_tokens,
                "total_tokens": stats.prompt_tokens + stats.completion_tokens,
            },
            attempts=stats.attempts,
            masking_counts=stats.masking_counts,
            compliance_tag=self.compliance_tag,
        )
        if stats.cost is not None and stats.currency is not None:
            record = record.model_copy(update={"cost": Cost(amount=stats.cost, currency=stats.currency)})
            self.log.info(
                "batch cost: %s %s (%d completions deferred by budget)",
                stats.cost,
                stats.currency,
                stats.deferred_by_budget,
            )
        batch_spend(stats.cost, stats.currency, stats.deferred_by_budget)
        self.log.info("%s", AuditLog.to_log_line(record))
        head = None
        if audit is not None:
            await asyncio.to_thread(audit.append, [record])
            head = publish_head(audit)
        asset_uri = await asyncio.to_thread(lambda: store.asset_uri)  # connects when the location is unknown
        manifest = stats.manifest(
            sink_table=f"{self.schema}.{self.table}",
            asset_uri=asset_uri,
            run_key=f"{ti.dag_id}/{ti.run_id}/{ti.task_id}/{ti.map_index}/try{ti.try_number}",
            client=client.stats.snapshot(client),
            task_audit=record.model_dump(mode="json"),
            audit_head=head.to_dict() if head else None,
            skipped_erased=self._erased.skipped if self._erased is not None else 0,
        )
        self.log.info("batch manifest: %s", manifest)
        await asyncio.to_thread(ti.xcom_push, key="return_value", value=manifest)
        if client.config.analytics_webhook_url:
            delivered = await client.publish_analytics({"event": "genesys_llm.batch", **manifest})
            self.log.info("analytics webhook %s", "delivered" if delivered else "failed (task not affected)")
        return manifest
