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
from ..governance.policy import Governance
from ..hooks.genesys_llm import GenesysLLMHook
from ..hooks.id_key import ID_KEY_VARIABLE, get_id_key
from ..hooks.postgres import airflow_conninfo, pgvector_store_from_airflow
from ..metrics import StatsObserver, batch_spend
from ..rendered_fields import MaskedRenderedFieldsMixin
from ..sinks.erasure import TombstoneList, stored_digests
from ..sinks.pgvector import PgVectorStore
from .assets import batch_extra, declare_results_outlet, emits_results_asset  # issue 11: asset events
from .lineage import batch_lineage  # issue 11: OpenLineage

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


class GenesysLLMBatchCompletionOperator(MaskedRenderedFieldsMixin, BaseAsyncOperator):
    """Run a completion for every item and upsert the results, with embeddings, into pgvector.

    Items come from exactly one of ``items`` (a list of dicts or an XComArg), ``jsonl_path`` or
    ``sql`` (a query on ``source_conn_id`` with bound ``sql_parameters``, read with a server-side cursor).
    Each item has an ``id`` and ``messages``, ``text`` or ``variables``, plus optional per-item overrides.
    Results are keyed by a hash of (item id, prompt, model, parameters): with
    ``skip_existing`` a retry or re-run sends only what is not stored yet.

    Fleet settings come from the connection (``coordination``, ``price_table``, ``budgets``):
    ``priority`` is this task's class in the shared gate (``"interactive"`` for scheduled work that
    must not wait behind backfills); with coordination enabled, items are claimed before they are
    paid for, so a duplicate delivery of the task pays for nothing twice (it waits up to
    ``claim_wait_seconds`` for items another delivery holds). When a budget runs out, the rest
    is left unsent and counted (``deferred_by_budget``) and ``on_budget_exhausted`` decides the
    task's state: ``"fail"`` (default, not retried: a retry today meets the same budget),
    ``"skip"`` or ``"succeed"``; a run on a later day sends what was deferred.
    ``dry_run=True`` spends nothing on the items: it returns (and logs) the plan, i.e. items,
    already stored, and the tokens, cost and time of the rest, scaled from stored results of the
    model; with none stored it first runs ``plan_sample_items`` items for real (stored, so never paid
    again), or refuses when that is 0.
    """

    template_fields: Sequence[str] = ("items", "jsonl_path", "sql", "sql_parameters", "system", "prompt_id", "table")
    template_fields_renderers = {"sql": "sql", "items": "json"}
    masked_template_fields: ClassVar[tuple[str, ...]] = ("items", "sql_parameters", "system")

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
        temperature: float | list[float] | None = None,
        max_tokens: int | None = None,
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
        self.response_format = response_format
        self.concurrency = concurrency
        self.chunk_size = chunk_size
        self.skip_existing = skip_existing
        self.max_failed_ratio = max_failed_ratio
        self.embed = embed
        self.embedder = embedder
        self.embedding_dimension = embedding_dimension
        self.index_mode = index_mode
        self.progress_interval_seconds = progress_interval_seconds
        self.governance = Governance(
            extra_patterns=extra_pii_patterns,
            mask_prompts=mask_prompts,
            output_policy=output_masking,
            filters=output_filters,
        )
        self.audit_table = audit_table
        self.audit_conn_id = audit_conn_id or postgres_conn_id
        self.compliance_tag = compliance_tag
        self.id_key_variable = id_key_variable
        self._erased: TombstoneList | None = None
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
        id_key = get_id_key(self.id_key_variable)  # before any spend
        hook = GenesysLLMHook(self.genesys_llm_conn_id, priority=self.priority)
        client = await hook.aget_async_client()
        store = pgvector_store_from_airflow(
            self.postgres_conn_id,
            table=self.table,
            schema=self.schema,
            dimension=self.embedding_dimension,
            index=self.index_mode,
        )
        try:
            store.ensure_schema()
            if self.plan_only:
                return await self._plan(context, hook, client, store, id_key)
            items, total = self._source()
            return await self._batch(context, hook, client, store, id_key, items, total)
        finally:
            await client.aclose()
            store.close()

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
            items, _ = self._source()
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
        items, _ = self._source()
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
        audit = audit_store(self.audit_conn_id, self.audit_table) if self.audit_table else None
        run_context = RunContext(**record_context(context, owner=self.owner, conn_id=self.genesys_llm_conn_id))
        settings = BatchSettings(
            concurrency=self.concurrency or client.config.max_concurrency,
            chunk_size=self.chunk_size,
            skip_existing=self.skip_existing,
            embed=self.embed,
            progress_interval_seconds=self.progress_interval_seconds,
        )
        # Erased conversations are never enriched again (sinks/erasure.py): their items are held back.
        digests = await asyncio.to_thread(
            stored_digests, partial(psycopg.connect, store_conninfo(self)), schema=self.schema
        )
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
        )
        error: BaseException | None = None
        try:
            await runner.run(items)
            if self.index_mode == "deferred":
                store.build_index(concurrently=True)
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
            audit.append([record])
            head = publish_head(audit)
        manifest = stats.manifest(
            sink_table=f"{self.schema}.{self.table}",
            asset_uri=store.asset_uri,
            run_key=f"{ti.dag_id}/{ti.run_id}/{ti.task_id}/{ti.map_index}/try{ti.try_number}",
            client=client.stats.snapshot(client),
            task_audit=record.model_dump(mode="json"),
            audit_head=head.to_dict() if head else None,
            skipped_erased=self._erased.skipped if self._erased is not None else 0,
        )
        self.log.info("batch manifest: %s", manifest)
        ti.xcom_push(key="return_value", value=manifest)
        if client.config.analytics_webhook_url:
            delivered = await client.publish_analytics({"event": "genesys_llm.batch", **manifest})
            self.log.info("analytics webhook %s", "delivered" if delivered else "failed (task not affected)")
        return manifest
