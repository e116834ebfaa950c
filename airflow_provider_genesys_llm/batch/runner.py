"""Run a batch of completions into a sink with bounded concurrency and bounded memory.

Items are read lazily in windows; each window is validated, checked against the sink (resume:
finished ids are never sent again), and fed to a fixed pool of workers through a bounded
queue. Results are embedded and written in chunks, one transaction each, so at most
``chunk_size + concurrency`` results are ever held. A worker that triggers a flush waits for it,
which is the back-pressure that keeps a slow database from filling memory.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import islice
from typing import Any, Protocol

from ..client import CompletionRequest, CompletionResult, GatewayClient, GatewayError
from ..governance.audit import AuditLog, AuditRecord
from ..governance.completion import completion_audit_record
from ..governance.keys import IdKey
from ..governance.masking import PiiDetectedError
from ..governance.policy import Governance, GovernedOutput
from ..sinks.pgvector import FailureRow, ResultRow
from .items import InvalidItem, PlannedCompletion, check_items_source, plan_item
from .stats import BatchStats

log = logging.getLogger(__name__)


class ResultSink(Protocol):
    def existing_ids(self, ids: Iterable[str]) -> set[str]: ...

    def upsert(self, rows: Sequence[ResultRow]) -> int: ...

    def record_failures(self, rows: Sequence[FailureRow]) -> None: ...


class AuditSink(Protocol):
    def append(self, records: Sequence[AuditRecord]) -> list[int]: ...


class CompletionObserver(Protocol):
    """Told about every completion as it ends (metrics); must be cheap and must not raise."""

    def succeeded(self, result: CompletionResult) -> None: ...

    def failed(self, model: str, transport: str, error_class: str, attempts: int) -> None: ...


Embedder = Callable[[Sequence[str]], Awaitable[list[list[float]]]]


@dataclass(frozen=True)
class RunContext:
    """Where the rows come from, stamped on every row, failure and audit record."""

    dag_id: str | None = None
    task_id: str | None = None
    run_id: str | None = None
    map_index: int | None = None
    try_number: int | None = None
    owner: str | None = None
    conn_id: str | None = None


@dataclass(frozen=True)
class BatchSettings:
    concurrency: int = 8
    chunk_size: int = 500
    window: int = 1000
    skip_existing: bool = True
    embed: str = "completion"  # "completion", "source" or "json:<field>"
    progress_interval_seconds: float = 30.0

    def __post_init__(self) -> None:
        if self.concurrency < 1 or self.chunk_size < 1 or self.window < 1:
            raise ValueError("concurrency, chunk_size and window must be at least 1")
        if not (self.embed in ("completion", "source") or self.embed.startswith("json:")):
            raise ValueError(f"embed must be 'completion', 'source' or 'json:<field>', got {self.embed!r}")


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
    ) -> None:
        self._client = client
        self._sink = sink
        self._embed = embedder
        self._id_key = id_key
        self._settings = settings
        self._context = context
        self._defaults = dict(request_defaults or {})
        self._total_hint = total_hint
        self._governance = governance or Governance()
        self._audit = audit
        self._observer = observer
        self.stats = BatchStats()
        self._audits: list[AuditRecord] = []
        self._results: list[tuple[PlannedCompletion, CompletionResult, GovernedOutput]] = []
        self._failures: list[FailureRow] = []
        self._flush_lock = asyncio.Lock()
        # The sink holds one database connection and is not thread-safe: one thread does all its I/O.
        self._sink_thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="genesys-llm-sink")
        self._started = 0.0
        self._last_progress = 0.0

    async def run(self, items: Iterable[Any]) -> BatchStats:
        """Process every item; results already stored stay stored even if this raises."""
        items = check_items_source(items)
        settings = self._settings
        self._started = self._last_progress = time.monotonic()
        queue: asyncio.Queue[PlannedCompletion | None] = asyncio.Queue(maxsize=settings.concurrency * 2)
        workers = [asyncio.create_task(self._work(queue)) for _ in range(settings.concurrency)]
        try:
            for window in _windows(items, settings.window):
                for planned in await self._plan(window):
                    await queue.put(planned)
            for _ in workers:
                await queue.put(None)
            await asyncio.gather(*workers)
        finally:
            for worker in workers:
                worker.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
            try:
                await self._flush()
            finally:
                self._sink_thread.shutdown(wait=True)
            self._progress(force=True)
        return self.stats

    async def _in_sink_thread(self, function: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._sink_thread, function, *args)

    async def _plan(self, window: list[tuple[int, Any]]) -> list[PlannedCompletion]:
        planned: list[PlannedCompletion] = []
        for position, raw in window:
            outcome = plan_item(raw, position, self._client.config, self._defaults, self._id_key)
            if isinstance(outcome, InvalidItem):
                self._note_invalid(outcome)
            else:
                planned.extend(outcome)
        if self._settings.skip_existing and planned:
            existing = await self._in_sink_thread(self._sink.existing_ids, [p.result_id for p in planned])
            if existing:
                self.stats.skipped_existing += sum(1 for p in planned if p.result_id in existing)
                planned = [p for p in planned if p.result_id not in existing]
        return planned

    async def _work(self, queue: asyncio.Queue[PlannedCompletion | None]) -> None:
        while (planned := await queue.get()) is not None:
            await self._complete(planned)
            if max(len(self._results), len(self._failures)) >= self._settings.chunk_size:
                await self._flush()
            self._progress()

    async def _complete(self, planned: PlannedCompletion) -> None:
        """One item: mask the prompt, complete, govern the output; any gateway or policy failure stays with the item."""
        request, prompt_counts = self._governance.mask_request(planned.request)
        try:
            result = await self._client.complete(request)
            governed = self._governance.govern_output(result.text)
        except (GatewayError, PiiDetectedError) as exc:
            attempts = getattr(exc, "attempts", None) or 1
            counts = dict(prompt_counts)
            if isinstance(exc, PiiDetectedError):
                attempts = 1
                for kind, found in exc.counts.items():
                    counts[kind] = counts.get(kind, 0) + found
            self._record_failure(planned, request, type(exc).__name__, self._masked(str(exc)), attempts, counts)
            return
        self._account(result, prompt_counts, governed)
        self._results.append((planned, result, governed))
        self._audit_record(planned, request, result=result, status="success",
                           masking=_merge(prompt_counts, governed.masking_counts), filters=governed.filters_applied)
        if self._observer is not None:
            self._observer.succeeded(result)

    def _record_failure(
        self, planned: PlannedCompletion, request: CompletionRequest, error_class: str, message: str,
        attempts: int, masking: dict[str, int],
    ) -> None:
        self.stats.failed += 1
        self.stats.attempts += attempts
        self.stats.note_failure(self._masked(planned.source_id))
        self._failures.append(self._failure_row(planned.result_id, planned.source_id, error_class, message, attempts))
        self._audit_record(planned, request, status="failed", error_class=error_class, attempts=attempts, masking=masking)
        if self._observer is not None:
            self._observer.failed(request.model, request.transport, error_class, attempts)

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
    ) -> None:
        record = completion_audit_record(
            request, key=self._id_key, context=dataclasses.asdict(self._context), status=status,  # type: ignore[arg-type]
            result=result, error_class=error_class, attempts=attempts, masking=masking, filters=filters,
        )
        self.stats.note_audit(record.audit_id)
        log.info("%s", AuditLog.to_log_line(record))
        if self._audit is not None:
            self._audits.append(record)

    def _account(self, result: CompletionResult, prompt_counts: dict[str, int], governed: GovernedOutput) -> None:
        stats = self.stats
        stats.note_masking(prompt_counts, governed.masking_counts, governed.filters_applied)
        stats.succeeded += 1
        stats.attempts += result.attempts
        stats.prompt_tokens += result.usage.prompt_tokens
        stats.completion_tokens += result.usage.completion_tokens
        stats.latency_ms.add(result.total_ms)
        if result.ttft_ms is not None:
            stats.ttft_ms.add(result.ttft_ms)

    async def _flush(self) -> None:
        async with self._flush_lock:
            results, self._results = self._results, []
            failures, self._failures = self._failures, []
            audits, self._audits = self._audits, []
            if results:
                vectors = await self._embed([self._embedding_text(p, g) for p, _, g in results])
                rows = [self._result_row(p, r, g, v) for (p, r, g), v in zip(results, vectors, strict=True)]
                self.stats.rows_written += await self._in_sink_thread(self._sink.upsert, rows)
            if failures:
                await self._in_sink_thread(self._sink.record_failures, failures)
            if audits and self._audit is not None:
                await self._in_sink_thread(self._audit.append, audits)

    def _embedding_text(self, planned: PlannedCompletion, governed: GovernedOutput) -> str:
        choice = self._settings.embed
        if choice == "source":
            return self._governance.mask_text(planned.source_text)[0]
        if choice.startswith("json:"):
            try:
                value = json.loads(governed.text)[choice[5:]]
                return value if isinstance(value, str) else json.dumps(value)
            except (ValueError, KeyError, TypeError):
                self.stats.embedding_fallbacks += 1
        return governed.text

    def _result_row(
        self, planned: PlannedCompletion, result: CompletionResult, governed: GovernedOutput, vector: list[float]
    ) -> ResultRow:
        return ResultRow(
            id=planned.result_id,
            source_id=self._masked(planned.source_id),
            content=governed.text,
            embedding=vector,
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
            metadata={
                **self._masked_metadata(planned.metadata),
                "masking_counts": governed.masking_counts,
                "filters_applied": list(governed.filters_applied),
            },
        )

    def _note_invalid(self, invalid: InvalidItem) -> None:
        self.stats.invalid += 1
        self.stats.note_failure(self._masked(invalid.source_id))
        self._failures.append(
            self._failure_row(invalid.result_id, invalid.source_id, invalid.error_class, self._masked(invalid.reason), 0)
        )

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

        return walk(dict(metadata))

    def _failure_row(self, result_id: str, source_id: str, error_class: str, message: str, attempts: int) -> FailureRow:
        return FailureRow(
            id=result_id,
            source_id=self._masked(source_id),
            error_class=error_class,
            message=message[:1000],
            attempts=attempts,
            dag_id=self._context.dag_id,
            task_id=self._context.task_id,
            run_id=self._context.run_id,
        )

    def _progress(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_progress < self._settings.progress_interval_seconds:
            return
        self._last_progress = now
        stats = self.stats
        elapsed = max(now - self._started, 1e-9)
        rate = (stats.succeeded + stats.failed) / elapsed
        total = self._total_hint
        if total:
            remaining = max(total - stats.processed, 0)
            eta = f"{remaining / rate:.0f}s" if rate > 0 else "unknown"
            done = f"{stats.processed}/{total}"
        else:
            done, eta = str(stats.processed), "unknown (lazy source)"
        log.info(
            "batch progress: %s items done (%d succeeded, %d failed, %d invalid, %d skipped), %.1f completions/s, ETA %s",
            done, stats.succeeded, stats.failed, stats.invalid, stats.skipped_existing, rate, eta,
        )


__all__ = ["BatchRunner", "BatchSettings", "Embedder", "ResultSink", "RunContext"]


def _merge(first: Mapping[str, int], second: Mapping[str, int]) -> dict[str, int]:
    merged = dict(first)
    for kind, count in second.items():
        merged[kind] = merged.get(kind, 0) + count
    return merged
