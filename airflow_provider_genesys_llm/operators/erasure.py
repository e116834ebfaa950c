"""``GenesysErasureOperator``: an erasure request (GDPR article 17, CCPA) as a task."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import Any

from airflow.sdk import BaseOperator, Context

from ..callbacks.audit import record_context
from ..governance.chain import DEFAULT_TABLE as DEFAULT_AUDIT_TABLE
from ..hooks.genesys_llm import GenesysLLMHook
from ..hooks.id_key import ID_KEY_VARIABLE
from ..sinks.erasure import DEFAULT_TOMBSTONES_TABLE, DEFAULT_TRANSCRIPTS_TABLE, ErasureTargets

_ID_SEPARATORS = re.compile(r"[\s,]+")


def parse_ids(value: str | Iterable[str]) -> list[str]:
    """Ids from a list, or from one string separated by commas or whitespace (a Variable, a param)."""
    if isinstance(value, str):
        return [part for part in _ID_SEPARATORS.split(value) if part]
    return list(value)


class GenesysErasureOperator(BaseOperator):
    """Delete everything derived from conversations, in one transaction, and make it stick.

    Landed transcripts, results (answers, embeddings, metadata) and failures of the given
    conversation ids or source ids are deleted; a tombstone (keyed hash) of each id keeps a later
    landing or enrichment from bringing them back; one audit record holds only the keyed hashes
    and the counts. The ids never reach the rendered-template store (it keeps a count), the log
    or XCom (the counts per table). Ids passed in a DAG run's conf stay in Airflow's metadata:
    prefer a Variable or a file the task reads.

    :param ids: conversation ids or source ids (``conversation:communication:transcript``; an id
        erases rows whose source id is it or starts with it and ``:``): a list, or a string
        separated by commas or whitespace (e.g. ``"{{ var.value.erasure_request }}"``), templated.
        Required.
    :param postgres_conn_id: Airflow ``postgres`` connection of the pipeline's tables. Required:
        erasure never guesses which database holds personal data.
    :param schema: schema of every table below. Default ``"public"``.
    :param transcripts_table: the landing table of ``GenesysTranscriptsToPostgresOperator``.
        Default ``"genesys_transcripts"``; ``None`` when transcripts are not landed.
    :param results_tables: results tables of the batch operator (each with its ``_failures``
        table). Default ``None``: every results table found in ``schema``; name them to leave
        other tables alone.
    :param tombstones_table: the tombstone table (keyed hashes of erased ids) checked before landing
        and before enrichment, created if missing. Default ``"genesys_erasure_tombstones"``.
    :param audit_table: the audit chain the erasure record (keyed hashes and counts only) is
        appended to. Default ``"genesys_llm_audit"``.
    :param vacuum: ``VACUUM`` the tables after the commit, so deleted rows leave the table files
        instead of waiting for autovacuum. Default ``True``; ``False`` for very large tables
        vacuumed on a schedule of their own.
    :param genesys_llm_conn_id: the hook the erasure runs through; no gateway call is made and
        nothing is read from it. Ids that masking alters (stored as shared placeholders, so left
        alone and counted in the report) are found with the default PII masker: ids that only the
        pipeline's ``extra_pii_patterns`` alter are not counted. Default ``"genesys_llm_default"``.
    :param id_key_variable: Airflow Variable holding the deployment's id key (the one the pipeline
        used, or the tombstones would not match). Default ``"genesys_llm_id_key"``.
    """

    template_fields: Sequence[str] = ("ids",)

    def __init__(
        self,
        *,
        ids: str | Sequence[str],
        postgres_conn_id: str,
        schema: str = "public",
        transcripts_table: str | None = DEFAULT_TRANSCRIPTS_TABLE,
        results_tables: Sequence[str] | None = None,
        tombstones_table: str = DEFAULT_TOMBSTONES_TABLE,
        audit_table: str = DEFAULT_AUDIT_TABLE,
        vacuum: bool = True,
        genesys_llm_conn_id: str = GenesysLLMHook.default_conn_name,
        id_key_variable: str = ID_KEY_VARIABLE,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.ids = ids
        self.postgres_conn_id = postgres_conn_id
        self.targets = ErasureTargets(
            schema=schema,
            transcripts_table=transcripts_table,
            results_tables=tuple(results_tables) if results_tables is not None else None,
            tombstones_table=tombstones_table,
            audit_table=audit_table,
        )
        self.vacuum = vacuum
        self.genesys_llm_conn_id = genesys_llm_conn_id
        self.id_key_variable = id_key_variable
        self._erasure_ids: list[str] | None = None

    def _do_render_template_fields(
        self, parent: Any, template_fields: Iterable[str], context: Any, jinja_env: Any, seen_oids: set[int]
    ) -> None:
        """Keep the rendered ids private and leave only their count for Airflow to store."""
        super()._do_render_template_fields(parent, template_fields, context, jinja_env, seen_oids)
        if parent is self and self._erasure_ids is None:
            self._erasure_ids = parse_ids(self.ids)
            self.ids = f"{len(self._erasure_ids)} id(s), not stored"

    def execute(self, context: Context) -> dict[str, Any]:
        ids = self._erasure_ids if self._erasure_ids is not None else parse_ids(self.ids)
        hook = GenesysLLMHook(self.genesys_llm_conn_id)
        report = hook.erase_conversations(
            ids,
            postgres_conn_id=self.postgres_conn_id,
            targets=self.targets,
            id_key_variable=self.id_key_variable,
            audit_fields=record_context(context, owner=self.owner, conn_id=self.postgres_conn_id),
            vacuum=self.vacuum,
        )
        summary = report.summary()
        self.log.info(
            "erased %d id(s): %d row(s) deleted, audit seq %s", report.ids, summary["rows_deleted"], report.audit_seq
        )
        return summary
