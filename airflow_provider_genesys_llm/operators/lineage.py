"""OpenLineage for the batch and transcripts operators (``get_openlineage_facets_on_complete``).

The OpenLineage provider calls the operator's method after a successful run. Each event carries:

* the input dataset: the JSONL file (namespace ``file``), the tables a ``sql`` source reads
  (parsed with openlineage-sql, namespace of ``source_conn_id``; unqualified names are read as
  ``public``), or Genesys Cloud's conversation transcripts for the transcripts operator; inline
  ``items`` have no dataset;
* the output dataset: the Postgres table, named as OpenLineage names Postgres tables
  (``postgres://host:port``, ``database.schema.table``);
* the run facet ``genesysLlm``: model, prompt, token usage, cost (when prices are configured) and
  item counts, taken from the run's asset extra (see ``assets.py``), never texts.

The OpenLineage packages are imported only inside these functions: the operators work without them.
"""

from __future__ import annotations

import functools
import os
import re
from typing import Any

from airflow.sdk import BaseHook

from .assets import SUMMARY_ATTRIBUTE

FACET_NAME = "genesysLlm"
_FACET_FIELDS = (
    "model",
    "prompt_id",
    "prompt_version",
    "tokens",
    "cost",
    "currency",
    "rows_written",
    "rows_skipped",
    "rows_failed",
    "conversations",
    "transcripts",
)


@functools.cache
def _facet_class() -> type:
    import attr
    from openlineage.client.generated.base import RunFacet

    @attr.define
    class GenesysLlmRunFacet(RunFacet):
        """What the run asked of the gateway and what it stored: counts, tokens and cost."""

        model: str | None = None
        prompt_id: str | None = None
        prompt_version: str | None = None
        tokens: dict[str, int] | None = None
        cost: float | None = None
        currency: str | None = None
        rows_written: int | None = None
        rows_skipped: int | None = None
        rows_failed: int | None = None
        conversations: int | None = None
        transcripts: int | None = None

    return GenesysLlmRunFacet


def postgres_dataset(conn_id: str, schema: str, table: str) -> Any:
    """``postgres://host:port`` and ``database.schema.table``; a Unix-socket host is written ``localhost``."""
    from airflow.providers.common.compat.openlineage.facet import Dataset

    conn = BaseHook.get_connection(conn_id)
    host = conn.host or "localhost"
    host = "localhost" if host.startswith(("/", "@")) else host
    return Dataset(
        namespace=f"postgres://{host}:{conn.port or 5432}", name=f"{conn.schema or 'postgres'}.{schema}.{table}"
    )


#: psycopg's placeholders (``%s``, ``%(name)s``) stand for values, never for tables; the SQL parser
#: refuses them, so they are read as ``NULL`` for lineage only.
_PLACEHOLDER = re.compile(r"%\(\w+\)s|%s")


def _sql_inputs(conn_id: str, query: str) -> list[Any]:
    from openlineage_sql import parse

    parsed = parse([_PLACEHOLDER.sub("NULL", query).replace("%%", "%")], dialect="postgres")
    if parsed is None:
        return []
    return [postgres_dataset(conn_id, t.schema or "public", t.name) for t in parsed.in_tables]


def _lineage(inputs: list[Any], outputs: list[Any], summary: dict[str, Any], currency: str | None) -> Any:
    from airflow.providers.openlineage.extractors import OperatorLineage

    values = {key: summary.get(key) for key in _FACET_FIELDS if summary.get(key) is not None}
    if values.get("cost") is not None:
        values["currency"] = currency
    return OperatorLineage(inputs=inputs, outputs=outputs, run_facets={FACET_NAME: _facet_class()(**values)})


def _currency() -> str | None:
    from ..plugins.settings import SettingsError, load_settings

    try:
        return load_settings().currency
    except SettingsError:
        return None


def batch_lineage(operator: Any, task_instance: Any = None) -> Any:
    """``get_openlineage_facets_on_complete`` of the batch operator."""
    inputs: list[Any] = []
    if operator.jsonl_path is not None:
        from airflow.providers.common.compat.openlineage.facet import Dataset

        inputs = [Dataset(namespace="file", name=os.path.abspath(operator.jsonl_path))]
    elif operator.sql is not None:
        inputs = _sql_inputs(operator.source_conn_id, operator.sql)
    output = postgres_dataset(operator.postgres_conn_id, operator.schema, operator.table)
    return _lineage(inputs, [output], getattr(operator, SUMMARY_ATTRIBUTE, {}), _currency())


def transcripts_lineage(operator: Any, task_instance: Any = None) -> Any:
    """``get_openlineage_facets_on_complete`` of the transcripts operator."""
    from airflow.providers.common.compat.openlineage.facet import Dataset

    source = Dataset(namespace=f"genesys-cloud://{operator.genesys_llm_conn_id}", name="conversations.transcripts")
    output = postgres_dataset(operator.postgres_conn_id, operator.schema, operator.table)
    return _lineage([source], [output], getattr(operator, SUMMARY_ATTRIBUTE, {}), None)
