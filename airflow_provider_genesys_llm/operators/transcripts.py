"""``GenesysTranscriptsToPostgresOperator``: land an interval's transcripts, idempotently."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from airflow.sdk import BaseAsyncOperator, Context

from ..batch.landing import land_transcripts
from ..client.transcripts import TERMINAL_STATES, JobStatus, TranscriptSource
from ..exceptions import ConversationJobFailedError, ConversationJobTimeoutError, TranscriptDownloadError
from ..governance.masking import PiiMasker
from ..hooks.genesys_llm import GenesysLLMHook
from ..hooks.id_key import get_id_key
from ..hooks.polling import check_intervals, poll_until
from ..hooks.postgres import postgres_connect
from ..metrics import TRANSCRIPTS, count_outcomes  # issue 11: outcome metrics
from ..sinks.erasure import TombstoneList, stored_digests
from ..sinks.transcripts import TranscriptStore
from .assets import declare_results_outlet, emits_results_asset, transcripts_extra  # issue 11: asset events
from .lineage import transcripts_lineage  # issue 11: OpenLineage

#: Cap on the doubling wait between analytics-job checks.
MAX_JOB_POLL_INTERVAL = 60.0


class GenesysTranscriptsToPostgresOperator(BaseAsyncOperator):
    """Land every transcript of an interval into a Postgres table keyed by (conversation, communication, transcript).

    Give ``job_id`` (e.g. from ``GenesysConversationJobSensor``'s XCom) or let the operator submit
    and wait for the job itself. The interval defaults to the run's data interval and is cut at
    Genesys' ``dataAvailabilityDate``. With ``mask_pii`` (default) PII is redacted before it is
    stored; the transcript URLs are never stored or logged.

    A job the operator submits is checked ``poll_interval`` apart (doubling up to 60 s) for at
    most ``job_timeout`` seconds; then the task fails with ``ConversationJobTimeoutError``.
    Conversations erased with ``GenesysErasureOperator`` are never landed again. Returns (XCom)
    the counts: conversations, transcripts, rows written, skipped as erased.

    :param postgres_conn_id: Airflow ``postgres`` connection of the landing table.
        Default ``"postgres_default"``.
    :param table: the landing table, created if missing, templated. Re-landing an interval rewrites
        only rows whose content changed. Default ``"genesys_transcripts"``.
    :param schema: the table's schema (and of the erasure tombstones checked before landing); it
        must exist. Default ``"public"``.
    :param job_id: a conversation-details job that is already ``FULFILLED`` (for example
        ``GenesysConversationJobSensor``'s XCom), templated; it is read as is, without waiting.
        Default ``None``: the operator submits a job for the interval and waits for it.
    :param interval_start: start of the interval (inclusive) when the operator submits the job, a
        datetime or an ISO-8601 string, templated. Default ``None``: the run's
        ``data_interval_start``; set both bounds for a run without a data interval.
    :param interval_end: end of the interval (exclusive), as ``interval_start``; cut at Genesys'
        ``dataAvailabilityDate``, and nothing is landed when no data is available yet.
        Default ``None``: the run's ``data_interval_end``.
    :param mask_pii: redact PII in the transcript text and in every string of the raw document
        before they are stored. Default ``True``; ``False`` stores them as Genesys returns them,
        for a landing table inside the data's trust boundary.
    :param concurrency: transcripts downloaded at once (each pre-signed URL is fetched right after
        it is issued). Default 8; raise it for large intervals, lower it when the organisation's
        API rate limit is shared.
    :param poll_interval: seconds between checks of a submitted job, doubling up to 60 s; more
        than 0. Default 5.
    :param job_timeout: seconds a submitted job may take before the task fails with
        ``ConversationJobTimeoutError`` (a retry submits a new job); more than 0. Default 3600.
    :param genesys_llm_conn_id: the ``genesys_llm`` connection (credentials and region of the
        Genesys Cloud organisation). Default ``"genesys_llm_default"``.
    """

    template_fields: Sequence[str] = ("job_id", "interval_start", "interval_end", "table")

    def __init__(
        self,
        *,
        postgres_conn_id: str = "postgres_default",
        table: str = "genesys_transcripts",
        schema: str = "public",
        job_id: str | None = None,
        interval_start: str | datetime | None = None,
        interval_end: str | datetime | None = None,
        mask_pii: bool = True,
        concurrency: int = 8,
        poll_interval: float = 5.0,
        job_timeout: float = 3600.0,
        genesys_llm_conn_id: str = GenesysLLMHook.default_conn_name,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        check_intervals(poll_interval, max(poll_interval, MAX_JOB_POLL_INTERVAL))
        if job_timeout <= 0:
            raise ValueError(f"job_timeout must be more than 0 seconds, got {job_timeout}")
        self.postgres_conn_id = postgres_conn_id
        self.table = table
        self.schema = schema
        self.job_id = job_id
        self.interval_start = interval_start
        self.interval_end = interval_end
        self.mask_pii = mask_pii
        self.concurrency = concurrency
        self.poll_interval = poll_interval
        self.job_timeout = job_timeout
        self.genesys_llm_conn_id = genesys_llm_conn_id
        declare_results_outlet(self)  # issue 11

    get_openlineage_facets_on_complete = transcripts_lineage  # issue 11

    def _interval(self, context: Context) -> tuple[datetime, datetime]:
        start = self.interval_start or context["data_interval_start"]
        end = self.interval_end or context["data_interval_end"]
        if start is None or end is None:  # a run without a data interval (a manual run of an unscheduled DAG)
            raise ValueError("the run has no data interval: set interval_start and interval_end on the operator")
        return _as_datetime(start), _as_datetime(end)

    async def _job(self, source: TranscriptSource, context: Context) -> str | None:
        if self.job_id:
            return str(self.job_id)
        interval = await source.clamp(*self._interval(context))
        if interval is None:
            return None
        job_id = await source.submit_job(*interval)
        last: list[JobStatus] = []

        async def ended() -> JobStatus | None:
            last[:] = [await source.job_status(job_id)]
            return last[0] if last[0].state in TERMINAL_STATES else None

        status = await poll_until(
            ended,
            deadline=time.time() + self.job_timeout,
            poll_interval=self.poll_interval,
            max_poll_interval=max(self.poll_interval, MAX_JOB_POLL_INTERVAL),
        )
        if status is None:
            raise ConversationJobTimeoutError(
                f"analytics job {job_id} was not done within job_timeout={self.job_timeout:g} s (last state "
                f"{last[0].state}); a retry submits a new job, or raise job_timeout",
                transient=True,
            )
        if status.state != "FULFILLED":
            message = PiiMasker().mask(status.errorMessage).text if status.errorMessage else "no message"
            raise ConversationJobFailedError(
                f"analytics job {job_id} ended {status.state}: {message}; a retry submits a new job", transient=True
            )
        return job_id

    @count_outcomes(TRANSCRIPTS)  # issue 11
    @emits_results_asset(transcripts_extra)  # issue 11
    async def aexecute(self, context: Context) -> dict[str, Any]:
        # Connection and Variable lookups and the DDL block: none of them runs on the event loop (why: the
        # comment in GenesysLLMBatchCompletionOperator._run).
        hook = GenesysLLMHook(self.genesys_llm_conn_id)
        source = TranscriptSource(await hook.aget_async_client())
        connect = await asyncio.to_thread(postgres_connect, self.postgres_conn_id)
        store = TranscriptStore(connect, table=self.table, schema=self.schema)
        await asyncio.to_thread(store.ensure_schema)
        # Erased conversations are never landed again (sinks/erasure.py); no key needed until one was.
        digests = await asyncio.to_thread(stored_digests, connect, schema=self.schema)
        tombstones = TombstoneList(await asyncio.to_thread(get_id_key), digests) if digests else None
        try:
            job_id = await self._job(source, context)
            if job_id is None:
                self.log.info("no analytics data is available for this interval yet; nothing landed")
                return {"job_id": None, "conversations": 0, "transcripts": 0, "rows_written": 0}
            stats = await land_transcripts(
                source,
                job_id,
                store,
                masker=PiiMasker() if self.mask_pii else None,
                concurrency=self.concurrency,
                tombstones=tombstones,
            )
        finally:
            await hook.get_async_client().aclose()
        summary = {"job_id": job_id, "table": f"{self.schema}.{self.table}", **stats.summary()}
        self.log.info("landed transcripts: %s", summary)
        if stats.failed_downloads:
            await asyncio.to_thread(context["ti"].xcom_push, key="return_value", value=summary)  # a supervisor request
            raise TranscriptDownloadError(
                f"{stats.failed_downloads} transcripts could not be downloaded; everything else is stored, "
                "and a retry re-lands the interval idempotently",
                transient=True,
            )
        return summary


def _as_datetime(value: str | datetime) -> datetime:
    return value if isinstance(value, datetime) else datetime.fromisoformat(str(value).replace("Z", "+00:00"))
