"""Run a batch of completions into a sink with bounded concurrency, bounded memory and bounded waits.

Items are read lazily in windows; each window is validated, checked against the sink (resume:
finished ids are never sent again), and fed to a fixed pool of workers through a bounded
queue. Results are written in chunks, at most ``chunk_size + concurrency`` held at a time; a
worker that triggers a flush waits for it, which is the back-pressure that keeps a slow database
from filling memory.

Two promises shape the flush:

* Spend is never lost. A chunk's paid completions are first stored awaiting their embedding
  (masked text, usage, no vector) together with the chunk's failures and audit records; only
  then are they embedded and given their vectors. If embedding or the vector write fails, the
  next attempt finds those rows ``awaiting_embedding`` and embeds them without asking the
  gateway again.
* A batch is one supervised unit. The producer and the workers run as tasks; the first one to
  raise stops the others (cancelled, with a bounded grace), what is complete is stored, and the
  batch raises that error. Every sink call and every embedding call has a time limit.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from collections.abc import Awaitable, Callable, Collection, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from decimal import Decimal
from functools import partial
from itertools import islice
from typing import Any, Protocol

from ..client import CompletionRequest, CompletionResult, GatewayClient, GatewayError
from ..client.errors import (
    GatewayAuthError,
    GatewayCircuitOpenError,
    GatewayConnectionError,
    GatewayPermissionError,
)
from ..governance.audit import AuditLog, AuditRecord, Cost, RunContext
from ..governance.completion import GovernedCompletion, complete_governed, completion_audit_record
from ..governance.keys import IdKey
from ..governance.masking import PiiDetectedError
from ..governance.policy import Governance, GovernedOutput
from ..sinks.erasure import id_digest
from ..sinks.pgvector import FailureRow, ResultRow
from .fleet import BudgetDeferred, FleetControls
from .items import InvalidItem, PlannedCompletion, check_items_source, plan_item
from .output_schema import OutputSchema
from .prompt_version import PreviousVersions, Reenrich, check_version_options, judge_item
from .reask import DEFAULT_OUTPUT_RETRIES, OutputConversation, check_output_retries
from .stats import BatchStats

log = logging.getLogger(__name__)

#: ``error_class`` of an item whose answer stayed invalid under the output schema (failures, audit).
OUTPUT_VALIDATION_ERROR = "OutputValidationError"

#: A surrogate code point: never valid in text that UTF-8 (and so Postgres) can hold.
_SURROGATE = re.compile("[\ud800-\udfff]")

#: Gateway errors that are about the batch, not the item: every other item would fail the same
#: way (bad credentials, a missing scope, an unreachable gateway after the client's retries), so
#: they stop the batch instead of being recorded once per item.
BATCH_FATAL_ERRORS: tuple[type[GatewayError], ...] = (
    GatewayAuthError,
    GatewayPermissionError,
    GatewayConnectionError,
    GatewayCircuitOpenError,
)


class ResultSink(Protocol):
    def existing_ids(self, ids: Iterable[str]) -> set[str]: ...

    def awaiting_embedding(self, ids: Iterable[str]) -> dict[str, str]: ...

    def upsert(
        self, rows: Sequence[ResultRow], *, keep_versions: Mapping[str, Collection[str]] | None = None
    ) -> int: ...

    def stored_versions(self, source_keys: Iterable[str]) -> dict[str, set[str | None]]: ...

    def version_counts(self) -> dict[str, dict[str, Any]]: ...

    def set_embeddings(self, vectors: Sequence[tuple[str, Any]]) -> int: ...

    def record_failures(self, rows: Sequence[FailureRow]) -> None: ...


class AuditSink(Protocol):
    def append(self, records: Sequence[AuditRecord]) -> list[int]: ...


class CompletionObserver(Protocol):
    """Told about every completion as it ends (metrics); must be cheap and must not raise."""

    def succeeded(self, result: CompletionResult) -> None: ...

    def failed(self, model: str, transport: str, error_class: str, attempts: int) -> None: ...


Embedder = Callable[[Sequence[str]], Awaitable[list[list[float]]]]


class BatchTimeoutError(TimeoutError):
    """A sink or embedding call exceeded its time limit; a later attempt may succeed."""

    transient = True


@dataclass(frozen=True)
class BatchSettings:
    concurrency: int = 8
    chunk_size: int = 500
    window: int = 1000
    skip_existing: bool = True
    #: "completion", "source" or "json:<field>"; a JSON field that is missing (or an answer that is
    #: not JSON) falls back to the whole answer, counted in the manifest and marked in the row's metadata.
    embed: str = "completion"
    progress_interval_seconds: float = 30.0
    #: Limit of one database call (a chunk's write, a lookup); beyond it the batch fails.
    sink_timeout_seconds: float = 300.0
    #: Limit of one embedder call (a chunk's texts), retries included.
    embed_timeout_seconds: float = 300.0
    #: How long stopped workers get to finish cancelling before the batch gives up on them.
    cancel_grace_seconds: float = 10.0
    #: With ``skip_existing``: ``"outdated"`` sends again an item stored only at other prompt
    #: versions; ``"never"`` skips an item with any stored row, whatever its version.
    reenrich: Reenrich = "outdated"
    #: ``"replace"`` deletes an item's rows of other versions once its current row is stored.
    previous_versions: PreviousVersions = "keep"
    #: Human name stored with every row next to its prompt version (not part of the version).
    prompt_label: str | None = None
    #: Answers must be JSON objects valid under this schema; stored in the row's ``output`` jsonb.
    output_schema: OutputSchema | None = None
    #: Re-asks of an invalid answer (each a paid completion) before the item is a failure.
    output_retries: int = DEFAULT_OUTPUT_RETRIES

    def __post_init__(self) -> None:
        if self.concurrency < 1 or self.chunk_size < 1 or self.window < 1:
            raise ValueError("concurrency, chunk_size and window must be at least 1")
        if not (self.embed in ("completion", "source") or self.embed.startswith("json:")):
            raise ValueError(f"embed must be 'completion', 'source' or 'json:<field>', got {self.embed!r}")
        if min(self.sink_timeout_seconds, self.embed_timeout_seconds, self.cancel_grace_seconds) <= 0:
            raise ValueError("sink_timeout_seconds, embed_timeout_seconds and cancel_grace_seconds must be positive")
        check_version_options(self.reenrich, self.previous_versions, self.prompt_label)
        check_output_retries(self.output_retries)
        if self.output_schema is not None and self.embed.startswith("json:"):
            self.output_schema.require_field(self.embed[5:], f"embed={self.embed!r}")


def _windows(items: Iterable[Any], size: int) -> Iterator[list[tuple[int, Any]]]:
    numbered = enumerate(items)
    while window := list(islice(numbered, size)):
        yield window


class BatchRunner:
    def __init__(
        self,
        client: GatewayClient,
        sink: ResultSink,
        embedder: Embedder,
        *,
        id_key: IdKey,
        settings: BatchSettings = BatchSettings(),
        context: RunContext = RunContext(),
        request_defaults: Mapping[str, Any] | None = None,
        total_hint: int | None = None,
        governance: Governance | None = None,
        audit: AuditSink | None = None,
        observer: CompletionObserver | None = None,
        fleet: FleetControls | None = None,
        version_parameters: Mapping[str, Any] | None = None,
    ) -> None:
        """``version_parameters``: what else, beyond prompt, model and parameters, defines the prompt
        version and the result ids (an output schema, say; ``batch/prompt_version.py``)."""
        self._client = client
        self._sink = sink
        self._embed = embedder
        self._id_key = id_key
        self._settings = settings
        self._context = context
        self._defaults = dict(request_defaults or {})
        self._version_parameters = dict(version_parameters or {})
        #: ``previous_versions="replace"``: ``{source_key: versions to keep}`` of items whose rows of
        #: other versions go once their current row is stored (pending), or at the next write (ready).
        self._replace_pending: dict[str, frozenset[str]] = {}
        self._replace_ready: dict[str, frozenset[str]] = {}
        self._total_hint = total_hint
        self._governance = governance or Governance()
        self._audit = audit
        self._observer = observer
        self.stats = BatchStats()
        self._fleet = fleet or FleetControls()
        self.stats.note_cost(Decimal(0) if self._fleet.prices else None, self._fleet.currency)
        #: Items another delivery held when this batch planned them: claimed again, with a wait, at the end.
        self._parked: list[tuple[int, PlannedCompletion]] = []
        #: Result ids left unsent by a budget; their claims are given back at the next flush.
        self._deferred: list[str] = []
        self._audits: list[AuditRecord] = []
        #: Paid completions to store: the item, its result, the governed answer, the validated output.
        self._results: list[tuple[PlannedCompletion, CompletionResult, GovernedOutput, dict[str, Any] | None]] = []
        self._failures: list[FailureRow] = []
        #: (id, embedding text) of rows an earlier attempt stored awaiting their embedding.
        self._resumed: list[tuple[str, str]] = []
        #: Completions still to finish per item position, so progress counts items, not completions.
        self._open_items: dict[int, int] = {}
        self._flush_lock = asyncio.Lock()
        # The sink holds one database connection and is not thread-safe: one thread does all its I/O.
        self._sink_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="genesys-llm-sink")
        self._started = 0.0
        self._last_progress = 0.0

    async def run(self, items: Iterable[Any]) -> BatchStats:
        """Process every item; raise the first error of any worker, the embedder or the sink.

        Whatever happens, completions that were paid for are stored (awaiting their embedding if
        the batch stopped before it), unless the database itself refuses them.
        """
        items = check_items_source(items)
        settings = self._settings
        self._started = self._last_progress = time.monotonic()
        queue: asyncio.Queue[tuple[int, PlannedCompletion] | None] = asyncio.Queue(maxsize=settings.concurrency * 2)
        tasks = [asyncio.create_task(self._work(queue)) for _ in range(settings.concurrency)]
        tasks.append(asyncio.create_task(self._produce(items, queue, settings.concurrency)))
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
            failed = next((t for t in tasks if t.done() and not t.cancelled() and t.exception()), None)
            if failed is not None:
                raise failed.exception()  # type: ignore[misc]
            await self._flush()
            self.stats.versions = await self._in_sink_thread(self._sink.version_counts)
        except BaseException:
            await self._stop(tasks)
            await self._salvage()
            raise
        finally:
            self._sink_thread.shutdown(wait=False, cancel_futures=True)
            await self._fleet.aclose()
            self._progress(force=True)
            self._report()
        return self.stats

    async def _stop(self, tasks: list[asyncio.Task[None]]) -> None:
        """Cancel the batch's tasks and give them a bounded time to end."""
        for task in tasks:
            task.cancel()
        _, pending = await asyncio.wait(tasks, timeout=self._settings.cancel_grace_seconds)
        if pending:
            log.warning("%d batch tasks did not stop within %.0f s", len(pending), self._settings.cancel_grace_seconds)
        for task in tasks:
            if task.done() and not task.cancelled():
                task.exception()  # retrieved: the first error is the one raised

    async def _salvage(self) -> None:
        """After a failure: store what is complete (results awaiting embedding, failures, audit records).

        Bounded by the sink time limit; an error here is logged, not raised, so the batch fails
        with its first error.
        """
        try:
            rows, failures, audits, _ = self._take()
            await self._store(rows, failures, audits)
            await self._finish_claims(rows, failures)
        except Exception as exc:  # noqa: BLE001 - the original error is the one that matters
            log.error("storing the completed part of a failed batch failed too: %s", _describe(exc))

    async def _in_sink_thread(self, function: Callable[..., Any], *args: Any) -> Any:
        """Run ``function`` on the sink's thread within ``sink_timeout_seconds``.

        The call is submitted at once, before the first await: rows handed over here are written
        even if the awaiting task is cancelled meanwhile.
        """
        future = asyncio.get_running_loop().run_in_executor(self._sink_thread, function, *args)
        try:
            return await asyncio.wait_for(future, self._settings.sink_timeout_seconds)
        except TimeoutError:
            raise BatchTimeoutError(
                f"database call {getattr(function, '__name__', 'sink')} took over "
                f"{self._settings.sink_timeout_seconds:.0f} s (BatchSettings.sink_timeout_seconds)"
            ) from None

    async def _produce(
        self, items: Iterable[Any], queue: asyncio.Queue[tuple[int, PlannedCompletion] | None], workers: int
    ) -> None:
        for window in _windows(items, self._settings.window):
            for entry in await self._plan(window):
                await queue.put(entry)
            if self._chunk_full():
                await self._flush(only_if_full=True)  # invalid items and resumed rows are streamed out, never piled up
            self._progress()
        for entry in await self._claim_parked():
            await queue.put(entry)
        for _ in range(workers):
            await queue.put(None)

    async def _plan(self, window: list[tuple[int, Any]]) -> list[tuple[int, PlannedCompletion]]:
        planned: list[tuple[int, PlannedCompletion]] = []
        for position, raw in window:
            outcome = plan_item(
                raw, position, self._client.config, self._defaults, self._id_key, self._version_parameters
            )
            if isinstance(outcome, InvalidItem):
                self._note_invalid(outcome, position)
            else:
                planned.extend((position, p) for p in outcome)
                self._open_items[position] = len(outcome)
        if self._settings.skip_existing and planned:
            existing = await self._in_sink_thread(self._sink.existing_ids, [p.result_id for _, p in planned])
            planned = await self._compare_versions(planned, existing)
            if existing:
                awaiting = await self._in_sink_thread(self._sink.awaiting_embedding, existing)
                for position, p in planned:
                    if p.result_id in awaiting:
                        text = awaiting[p.result_id]
                        self._resumed.append((p.result_id, self._embedding_text(p, text, self._checked(text))[0]))
                        self.stats.embedded_earlier += 1
                        self.stats.awaiting_embedding += 1
                    elif p.result_id in existing:
                        self.stats.skipped_existing += 1
                    else:
                        continue
                    self._item_step(position)
                planned = [(position, p) for position, p in planned if p.result_id not in existing]
        return await self._claimed(planned)

    async def _compare_versions(
        self, planned: list[tuple[int, PlannedCompletion]], existing: set[str]
    ) -> list[tuple[int, PlannedCompletion]]:
        """Apply ``reenrich`` (one query for the window): drop the completions of items kept at an
        older version, count re-enriched items, and note what ``previous_versions="replace"`` deletes."""
        by_item: dict[int, list[PlannedCompletion]] = {}
        for position, p in planned:
            by_item.setdefault(position, []).append(p)
        keys = {position: self._source_key(group[0].source_id) for position, group in by_item.items()}
        stored = await self._in_sink_thread(self._sink.stored_versions, list(keys.values()))
        kept: set[int] = set()
        for position, group in by_item.items():
            current = frozenset(p.prompt_version for p in group)
            pending = any(p.result_id not in existing for p in group)
            outcome = judge_item(current, pending, stored.get(keys[position]), self._settings.reenrich)
            if outcome == "kept":
                kept.add(position)
                continue
            if outcome == "reenrich":
                self.stats.reenriched += 1
            if self._settings.previous_versions == "replace" and stored.get(keys[position], set()) - current:
                replace = self._replace_ready if outcome == "stored" else self._replace_pending
                replace[keys[position]] = current
        for position, p in planned:
            if position in kept and p.result_id not in existing:
                self.stats.skipped_other_version += 1
                self._item_step(position)
        return [(position, p) for position, p in planned if position not in kept or p.result_id in existing]

    def _source_key(self, source_id: str) -> str:
        """The keyed hash stored as ``source_key`` (the erasure's tombstone hash of the raw id)."""
        return id_digest(self._id_key, source_id)

    async def _claimed(self, planned: list[tuple[int, PlannedCompletion]]) -> list[tuple[int, PlannedCompletion]]:
        """The planned completions this batch may pay for: items another delivery finished count as
        stored, items it still holds are parked until the end of the input."""
        outcome = await self._fleet.claim([p.result_id for _, p in planned])
        if outcome is None:
            return planned
        done, busy = set(outcome.done), set(outcome.busy)
        self._parked += [(position, p) for position, p in planned if p.result_id in busy]
        for position, p in planned:
            if p.result_id in done:
                self.stats.skipped_existing += 1
                self._item_step(position)
        return [(position, p) for position, p in planned if p.result_id not in done | busy]

    async def _claim_parked(self) -> list[tuple[int, PlannedCompletion]]:
        """Wait (bounded by ``claim_wait_seconds``) for parked items: finished ones count as stored,
        expired claims come to this batch, items still held stay with their live owner."""
        parked, self._parked = self._parked, []
        if not parked:
            return []
        outcome = await self._fleet.claim([p.result_id for _, p in parked], wait=self._fleet.claim_wait_seconds)
        assert outcome is not None  # items are parked only when there are claims
        granted, done = set(outcome.granted), set(outcome.done)
        for position, p in parked:
            if p.result_id in granted:
                continue
            if p.result_id in done:
                self.stats.skipped_existing += 1
            else:
                self.stats.skipped_claimed += 1
            self._item_step(position)
        return [(position, p) for position, p in parked if p.result_id in granted]

    def _item_step(self, position: int) -> None:
        """One completion of the item at ``position`` has an outcome; count the item once all have."""
        left = self._open_items[position] - 1
        if left:
            self._open_items[position] = left
        else:
            del self._open_items[position]
            self.stats.items_done += 1

    async def _work(self, queue: asyncio.Queue[tuple[int, PlannedCompletion] | None]) -> None:
        while (entry := await queue.get()) is not None:
            position, planned = entry
            await self._complete(planned)
            self._item_step(position)
            if self._chunk_full():
                await self._flush(only_if_full=True)
            self._progress()

    def _chunk_full(self) -> bool:
        return max(len(self._results), len(self._failures), len(self._resumed)) >= self._settings.chunk_size

    async def _complete(self, planned: PlannedCompletion) -> None:
        """One item: mask the prompt, complete, govern the output and, with an output schema, re-ask
        an invalid answer at most ``output_retries`` times. Every answer is a paid completion, counted
        and audited; a gateway or policy failure stays with the item unless it is one of
        ``BATCH_FATAL_ERRORS``, an answer still invalid after the re-asks is the item's failure."""
        schema = self._settings.output_schema
        conversation = OutputConversation(schema, self._settings.output_retries, planned.request) if schema else None
        request = planned.request
        while True:
            paid = await self._ask(planned, request)
            if paid is None:
                return
            done, cost = paid
            result, governed, prompt_counts = done.result, done.output, done.prompt_masking
            self._account(result, prompt_counts, governed)
            self.stats.note_cost(cost, self._fleet.currency)
            reask = conversation.reasks if conversation else 0
            verdict = conversation.judge(governed.text) if conversation else None
            valid = verdict is None or verdict.output is not None
            self._audit_record(
                planned,
                done.sent,
                result=result,
                status="success" if valid else "failed",
                error_class=None if valid else OUTPUT_VALIDATION_ERROR,
                masking=done.masking_counts,
                filters=governed.filters_applied,
                cost=cost,
                output_check=None if verdict is None else ("valid" if valid else "invalid"),
                reask=reask,
            )
            if self._observer is not None:
                self._observer.succeeded(result)
            if verdict is None or verdict.output is not None:
                self.stats.succeeded += 1
                self.stats.output_valid += verdict is not None
                self._results.append((planned, result, governed, verdict.output if verdict else None))
                return
            if verdict.reask is None:
                assert verdict.reason is not None and conversation is not None
                self.stats.output_invalid += 1
                message = f"answer still invalid after {conversation.reasks} re-ask(s): {verdict.reason}"
                self._fail_item(planned, OUTPUT_VALIDATION_ERROR, self._masked(message), conversation.reasks + 1)
                return
            self.stats.output_reasked += 1
            request = verdict.reask

    async def _ask(
        self, planned: PlannedCompletion, request: CompletionRequest
    ) -> tuple[GovernedCompletion, Decimal | None] | None:
        """One paid completion of ``request``, governed (``complete_governed``) and priced by the fleet
        controls; None when a budget deferred it or it failed (recorded as the item's failure)."""
        costs: list[Decimal | None] = []

        async def send(sent: CompletionRequest) -> CompletionResult:
            result, cost = await self._fleet.complete(sent, self._client.complete)
            costs.append(cost)
            return result

        try:
            return await complete_governed(self._client, request, self._governance, send), costs[-1]
        except BudgetDeferred:
            self.stats.deferred_by_budget += 1
            self._deferred.append(planned.result_id)
        except BATCH_FATAL_ERRORS:
            raise
        except (GatewayError, PiiDetectedError) as exc:
            sent, prompt_counts = self._governance.mask_request(request)  # the request as it was sent
            attempts = getattr(exc, "attempts", None) or 1
            counts = dict(prompt_counts)
            if isinstance(exc, PiiDetectedError):
                attempts = 1
                for kind, found in exc.counts.items():
                    counts[kind] = counts.get(kind, 0) + found
            self._record_failure(planned, sent, type(exc).__name__, self._failure_message(exc), attempts, counts)
        return None

    def _record_failure(
        self,
        planned: PlannedCompletion,
        request: CompletionRequest,
        error_class: str,
        message: str,
        attempts: int,
        masking: dict[str, int],
    ) -> None:
        self.stats.attempts += attempts
        self._fail_item(planned, error_class, message, attempts)
        self._audit_record(
            planned, request, status="failed", error_class=error_class, attempts=attempts, masking=masking
        )
        if self._observer is not None:
            self._observer.failed(request.model, request.transport, error_class, attempts)

    def _fail_item(self, planned: PlannedCompletion, error_class: str, message: str, attempts: int) -> None:
        """The item's failure row; ``message`` is already masked."""
        self.stats.failed += 1
        self.stats.note_failure(self._masked(planned.source_id))
        self._replace_pending.pop(self._source_key(planned.source_id), None)  # old rows stay: nothing replaces them
        self._failures.append(
            self._failure_row(
                planned.result_id, planned.source_id, error_class, message, attempts, planned.prompt_version
            )
        )

    def _audit_record(
        self,
        planned: PlannedCompletion,
        request: CompletionRequest,
        *,
        status: str,
        result: CompletionResult | None = None,
        error_class: str | None = None,
        attempts: int | None = None,
        masking: dict[str, int] | None = None,
        filters: tuple[str, ...] = (),
        cost: Decimal | None = None,
        output_check: str | None = None,
        reask: int = 0,
    ) -> None:
        record = completion_audit_record(
            request,
            key=self._id_key,
            context=self._context.model_dump(),
            status=status,  # type: ignore[arg-type]
            result=result,
            error_class=error_class,
            attempts=attempts,
            masking=masking,
            filters=filters,
            output_check=output_check,
            reask=reask,
        )
        if cost is not None and self._fleet.currency is not None:
            record = record.model_copy(update={"cost": Cost(amount=cost, currency=self._fleet.currency)})
        self.stats.note_audit(record.audit_id)
        log.info("%s", AuditLog.to_log_line(record))
        if self._audit is not None:
            self._audits.append(record)

    def _account(self, result: CompletionResult, prompt_counts: dict[str, int], governed: GovernedOutput) -> None:
        stats = self.stats
        stats.note_masking(prompt_counts, governed.masking_counts, governed.filters_applied)
        stats.attempts += result.attempts
        stats.prompt_tokens += result.usage.prompt_tokens
        stats.completion_tokens += result.usage.completion_tokens
        stats.latency_ms.add(result.total_ms)
        if result.ttft_ms is not None:
            stats.ttft_ms.add(result.ttft_ms)

    def _take(self) -> tuple[list[ResultRow], list[FailureRow], list[AuditRecord], list[tuple[str, str]]]:
        """Hand over everything held: result rows (awaiting embedding), failures, audit records,
        and (id, embedding text) of every row to embed, the resumed ones included."""
        results, self._results = self._results, []
        failures, self._failures = self._failures, []
        audits, self._audits = self._audits, []
        to_embed, self._resumed = self._resumed, []
        rows = []
        for planned, result, governed, output in results:
            text, fallback = self._embedding_text(planned, governed.text, output)
            rows.append(self._result_row(planned, result, governed, fallback, output))
            to_embed.append((planned.result_id, text))
        return rows, failures, audits, to_embed

    async def _store(self, rows: list[ResultRow], failures: list[FailureRow], audits: list[AuditRecord]) -> None:
        """Store rows (awaiting their embedding), failures and audit records; raise the first error."""
        keep, self._replace_ready = self._replace_ready, {}
        for row in rows:
            if row.source_key in self._replace_pending:
                keep[row.source_key] = self._replace_pending.pop(row.source_key)
        written, errors = await self._in_sink_thread(self._persist, rows, failures, audits, keep)
        if written is not None:
            self.stats.rows_written += written
            self.stats.awaiting_embedding += len(rows)
        if errors:
            raise errors[0]

    def _persist(
        self,
        rows: list[ResultRow],
        failures: list[FailureRow],
        audits: list[AuditRecord],
        keep: dict[str, frozenset[str]],
    ) -> tuple[int | None, list[Exception]]:
        """The writes of ``_store`` (sink thread): rows written (None if refused) and the errors.
        ``keep``: the items whose rows of other prompt versions go in the rows' transaction.

        Each write is tried even if an earlier one failed, so a refused result table cannot keep
        the audit records of paid completions from the chain (nor the other way round).
        """
        errors: list[Exception] = []
        written: int | None = 0
        if rows or keep:
            try:
                written = self._sink.upsert(rows, keep_versions=keep) if keep else self._sink.upsert(rows)
            except Exception as exc:  # noqa: BLE001 - raised by _store after the other writes
                written = None
                errors.append(exc)
        later: list[Callable[[], object]] = []
        if failures:
            later.append(partial(self._sink.record_failures, failures))
        if audits:
            later.append(partial(self._append_audits, audits))
        for write in later:
            try:
                write()
            except Exception as exc:  # noqa: BLE001 - as above
                errors.append(exc)
        return written, errors

    def _append_audits(self, audits: list[AuditRecord]) -> None:
        if self._audit is not None:
            self._audit.append(audits)

    async def _flush(self, *, only_if_full: bool = False) -> None:
        """Store what is held, then embed it: a failure of the embedder or the vector write leaves
        the paid rows stored and awaiting their embedding.

        ``only_if_full``: skip if, by the time the lock is ours, another flush took the chunk (workers
        queue on the lock while a flush runs; without this each would write a sliver).
        """
        async with self._flush_lock:
            if only_if_full and not self._chunk_full():
                return
            rows, failures, audits, to_embed = self._take()
            await self._store(rows, failures, audits)
            await self._finish_claims(rows, failures)
            if not to_embed:
                return
            texts = [text for _, text in to_embed]
            try:
                vectors = await asyncio.wait_for(self._embed(texts), self._settings.embed_timeout_seconds)
            except TimeoutError:
                raise BatchTimeoutError(
                    f"embedding {len(texts)} texts took over {self._settings.embed_timeout_seconds:.0f} s "
                    "(BatchSettings.embed_timeout_seconds); the results are stored awaiting their embedding"
                ) from None
            pairs = [(row_id, vector) for (row_id, _), vector in zip(to_embed, vectors, strict=True)]
            embedded = await self._in_sink_thread(self._sink.set_embeddings, pairs)
            self.stats.embeddings_written += embedded
            self.stats.awaiting_embedding -= len(pairs)

    async def _finish_claims(self, rows: list[ResultRow], failures: list[FailureRow]) -> None:
        """Stored items are done for every later delivery; failed and deferred ones go back."""
        deferred, self._deferred = self._deferred, []
        lost = await self._fleet.finish_claims([row.id for row in rows], [f.id for f in failures] + deferred)
        self.stats.claims_lost += len(lost)

    def _checked(self, answer: str) -> dict[str, Any] | None:
        """The validated output of a stored answer (resumed rows), None without a schema."""
        schema = self._settings.output_schema
        return schema.check(answer).output if schema is not None else None

    def _embedding_text(
        self, planned: PlannedCompletion, answer: str, output: dict[str, Any] | None = None
    ) -> tuple[str, str | None]:
        """The text to embed and, when ``json:<field>`` fell back to the whole answer, why.

        With an output schema the field comes from the validated output (a fenced answer included)."""
        choice = self._settings.embed
        if choice == "source":
            return self._governance.mask_text(planned.source_text)[0], None
        if not choice.startswith("json:"):
            return answer, None
        try:
            document = output if output is not None else json.loads(answer)
        except (ValueError, RecursionError):
            return self._fallback(answer, "answer is not JSON")
        if not isinstance(document, dict) or choice[5:] not in document:
            return self._fallback(answer, f"answer has no field {choice[5:]!r}")
        value = document[choice[5:]]
        return (value if isinstance(value, str) else json.dumps(value)), None

    def _fallback(self, answer: str, reason: str) -> tuple[str, str]:
        self.stats.embedding_fallbacks += 1
        self.stats.embedding_fallback_reasons[reason] += 1
        return answer, reason

    def _result_row(
        self,
        planned: PlannedCompletion,
        result: CompletionResult,
        governed: GovernedOutput,
        fallback: str | None,
        output: dict[str, Any] | None,
    ) -> ResultRow:
        """The row of a paid completion, stored awaiting its embedding."""
        return ResultRow(
            id=planned.result_id,
            source_id=self._masked(planned.source_id),
            content=storable(governed.text),
            embedding=None,
            model=result.model,
            prompt_id=result.prompt_id,
            temperature=result.temperature,
            finish_reason=result.finish_reason,
            usage=result.usage.model_dump(),
            timings={
                "connect_ms": result.connect_ms,
                "ttft_ms": result.ttft_ms,
                "total_ms": result.total_ms,
                "tokens_per_second": result.tokens_per_second,
                "attempts": result.attempts,
            },
            request_id=result.request_id,
            correlation_id=result.correlation_id,
            dag_id=self._context.dag_id,
            task_id=self._context.task_id,
            run_id=self._context.run_id,
            source_key=self._source_key(planned.source_id),
            prompt_version=planned.prompt_version,
            prompt_label=self._settings.prompt_label,
            metadata={
                **self._masked_metadata(planned.metadata),
                "masking_counts": governed.masking_counts,
                "filters_applied": list(governed.filters_applied),
                **({"embedding_fallback": fallback} if fallback else {}),
            },
            output=output,
        )

    def _note_invalid(self, invalid: InvalidItem, position: int) -> None:
        reason = self._masked(invalid.reason)
        self.stats.note_invalid(position, invalid.code, reason)
        self.stats.note_failure(self._masked(invalid.source_id))
        self.stats.items_done += 1
        self._failures.append(self._failure_row(invalid.result_id, invalid.source_id, invalid.error_class, reason, 0))

    def _failure_message(self, exc: BaseException) -> str:
        """What the failures table says: the typed message, and the gateway's own words (which
        the client keeps out of the message because they may quote a customer) masked."""
        message = str(exc)
        if server_message := getattr(exc, "server_message", None):
            message = f"{message} (gateway said: {server_message})"
        return self._masked(message)

    def _masked(self, text: str) -> str:
        """Free text on its way to a row, a log or XCom: ids, reasons and error messages included."""
        return self._governance.mask_text(text)[0]

    def _masked_metadata(self, metadata: Mapping[str, Any]) -> dict[str, Any]:
        """Item metadata with every string (keys too) masked: DAG authors put customer fields there."""

        def walk(value: Any) -> Any:
            if isinstance(value, str):
                return self._masked(value)
            if isinstance(value, Mapping):
                return {walk(key): walk(item) for key, item in value.items()}
            if isinstance(value, (list, tuple)):
                return [walk(item) for item in value]
            return value

        return {walk(key): walk(item) for key, item in metadata.items()}

    def _failure_row(
        self,
        result_id: str,
        source_id: str,
        error_class: str,
        message: str,
        attempts: int,
        prompt_version: str | None = None,
    ) -> FailureRow:
        return FailureRow(
            id=result_id,
            source_id=self._masked(source_id),
            error_class=error_class,
            message=storable(message[:1000]),
            attempts=attempts,
            dag_id=self._context.dag_id,
            task_id=self._context.task_id,
            run_id=self._context.run_id,
            source_key=self._source_key(source_id),
            prompt_version=prompt_version,
            prompt_label=self._settings.prompt_label if prompt_version else None,
        )

    def _progress(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_progress < self._settings.progress_interval_seconds:
            return
        self._last_progress = now
        stats = self.stats
        elapsed = max(now - self._started, 1e-9)
        rate = (stats.succeeded + stats.failed) / elapsed
        # Items, not completions: a temperature matrix makes several completions of one item.
        total = max(self._total_hint or 0, stats.items_done)
        if self._total_hint:
            item_rate = stats.items_done / elapsed
            eta = f"{(total - stats.items_done) / item_rate:.0f}s" if item_rate > 0 else "unknown"
            done = f"{stats.items_done}/{total}"
        else:
            done, eta = str(stats.items_done), "unknown (lazy source)"
        log.info(
            "batch progress: %s items done (completions: %d succeeded, %d failed, %d stored before, "
            "%d embedded from an earlier attempt; %d invalid items), %.1f completions/s, ETA %s",
            done,
            stats.succeeded,
            stats.failed,
            stats.skipped_existing,
            stats.embedded_earlier,
            stats.invalid,
            rate,
            eta,
        )

    def _report(self) -> None:
        """Per-reason counts of invalid items and embedding fallbacks, with the first few reasons
        (position and reason only: never an item's text)."""
        stats = self.stats
        if stats.invalid:
            counts = ", ".join(f"{code}={count}" for code, count in stats.invalid_reasons.most_common())
            log.warning(
                "%d invalid items (not sent, recorded in the failures table): %s; first: %s",
                stats.invalid,
                counts,
                " | ".join(stats.invalid_examples),
            )
        if stats.embedding_fallbacks:
            log.warning(
                "%d results embedded their whole answer instead of %s: %s",
                stats.embedding_fallbacks,
                self._settings.embed,
                dict(stats.embedding_fallback_reasons),
            )


def storable(text: str) -> str:
    """``text`` with what Postgres text cannot hold (NUL, lone surrogates) replaced by U+FFFD.

    Used on what the gateway sends back (answers, error messages): it is paid for or needed as a
    record, so it is kept, made storable, rather than failing the chunk it is written with.
    """
    text = text.replace("\x00", "\ufffd")
    return text if text.isascii() else _SURROGATE.sub("\ufffd", text)


def _describe(exc: BaseException) -> str:
    """Class and first line of an error for the log (the message of a typed error names no row data)."""
    return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"


__all__ = [
    "BATCH_FATAL_ERRORS",
    "BatchRunner",
    "BatchSettings",
    "BatchTimeoutError",
    "Embedder",
    "ResultSink",
    "RunContext",
    "storable",
]
