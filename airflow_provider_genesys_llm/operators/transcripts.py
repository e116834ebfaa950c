"""``GenesysTranscriptsToPostgresOperator``: land an interval's transcripts, idempotently."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import datetime
from functools import partial
from typing import Any

import psycopg
from airflow.sdk import BaseAsyncOperator, BaseHook, Context

from ..batch.landing import land_transcripts
from ..client.transcripts import TERMINAL_STATES, TranscriptSource
from ..governance.masking import PiiMasker
from ..hooks.genesys_llm import GenesysLLMHook
from ..hooks.id_key import get_id_key
from ..sinks.erasure import TombstoneList, stored_digests
from ..sinks.pgvector import airflow_conninfo
from ..sinks.transcripts import TranscriptStore
from .assets import declare_results_outlet, emits_results_asset, transcripts_extra  # issue 11: asset events
from .lineage import transcripts_lineage  # issue 11: OpenLineage
from .metrics import TRANSCRIPTS, count_outcomes  # issue 11: outcome metrics


class ConversationJobFailedError(RuntimeError):
    """The analytics job ended FAILED, CANCELLED or EXPIRED."""


class GenesysTranscriptsToPostgresOperator(BaseAsyncOperator):
    """Land every transcript of an interval into a Postgres table keyed by (conversation, communication, transcript).

    Give ``job_id`` (e.g. from ``GenesysConversationJobSensor``'s XCom) or let the operator submit
    and wait for the job itself. The interval defaults to the run's data interval and is cut at
    Genesys' ``dataAvailabilityDate``. With ``mask_pii`` (default) PII is redacted before it is
    stored; the transcript URLs are never stored or logged.
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
        genesys_llm_conn_id: str = GenesysLLMHook.default_conn_name,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.postgres_conn_id = postgres_conn_id
        self.table = table
        self.schema = schema
        self.job_id = job_id
        self.interval_start = interval_start
        self.interval_end = interval_end
        self.mask_pii = mask_pii
        self.concurrency = concurrency
        self.poll_interval = poll_interval
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
        while (status := await source.job_status(job_id)).state not in TERMINAL_STATES:
            await asyncio.sleep(self.poll_interval)
        if status.state != "FULFILLED":
            message = PiiMasker().mask(status.errorMessage).text if status.errorMessage else "no message"
            raise ConversationJobFailedError(f"analytics job {job_id} ended {status.state}: {message}")
        return job_id

    @count_outcomes(TRANSCRIPTS)  # issue 11
    @emits_results_asset(transcripts_extra)  # issue 11
    async def aexecute(self, context: Context) -> dict[str, Any]:
        hook = GenesysLLMHook(self.genesys_llm_conn_id)
        source = hook.get_transcript_source()
        conninfo = airflow_conninfo(BaseHook.get_connection(self.postgres_conn_id))
        connect = partial(psycopg.connect, conninfo)
        store = TranscriptStore(connect, table=self.table, schema=self.schema)
        store.ensure_schema()
        # Erased conversations are never landed again (sinks/erasure.py); no key needed until one was.
        digests = await asyncio.to_thread(stored_digests, connect, schema=self.schema)
        tombstones = TombstoneList(get_id_key(), digests) if digests else None
        try:
            job_id = await self._job(source, context)
            if job_id is None:
                self.log.info("no analytics data is available for this interval yet; nothing landed")
                return {"job_id": None, "conversations": 0, "transcripts": 0, "rows_written": 0}
            stats = await land_transcripts(
                source, job_id, store, masker=PiiMasker() if self.mask_pii else None, concurrency=self.concurrency,
                tombstones=tombstones,
            )
        finally:
            await hook.get_async_client().aclose()
        summary = {"job_id": job_id, "table": f"{self.schema}.{self.table}", **stats.summary()}
        self.log.info("landed transcripts: %s", summary)
        if stats.failed_ids:
            context["ti"].xcom_push(key="return_value", value=summary)
            raise RuntimeError(
                f"{len(stats.failed_ids)} transcripts could not be downloaded; everything else is stored, "
                "and a retry re-lands the interval idempotently"
            )
        return summary


def _as_datetime(value: str | datetime) -> datetime:
    return value if isinstance(value, datetime) else datetime.fromisoformat(str(value).replace("Z", "+00:00"))
