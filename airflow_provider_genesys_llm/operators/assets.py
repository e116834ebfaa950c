"""Asset events for the tables the batch and transcripts operators write.

A downstream DAG schedules on the results table with ``schedule=[results_asset("transcript_insights")]``
and reads what changed from the event's ``extra`` (rows written and skipped, model, prompt, tokens,
cost when prices are configured, the audit chain's head).

The URI is ``x-genesys-llm://<postgres_conn_id>/<schema>/<table>``. It names the connection id, not the
host: a DAG file is parsed where the connection may not resolve (and must not be looked up), and
Airflow 3 passes ``x-`` schemes through without a scheme-specific normaliser. A table name that
is templated is only known at run time; such operators declare the alias ``genesys_llm_results``
and attach the event to the rendered table's asset through it.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Coroutine, Mapping
from typing import Any, TypeVar
from urllib.parse import quote

from airflow.sdk import Asset, AssetAlias

from ..plugins.settings import SettingsError, load_settings

log = logging.getLogger(__name__)

SCHEME = "x-genesys-llm"
RESULTS_ALIAS = "genesys_llm_results"
#: Attribute where the operators keep the last run's asset extra, for OpenLineage's completion hook.
SUMMARY_ATTRIBUTE = "_genesys_llm_summary"


def results_asset(table: str, schema: str = "public", postgres_conn_id: str = "genesys_pgvector") -> Asset:
    """The asset of a table written by the provider's operators (same arguments as the operators)."""
    path = "/".join(quote(part, safe="") for part in (schema, table))
    return Asset(uri=f"{SCHEME}://{quote(postgres_conn_id, safe='')}/{path}", group="genesys_llm")


def _templated(*values: str) -> bool:
    return any("{{" in value or "{%" in value for value in values)


def declare_results_outlet(operator: Any) -> None:
    """Add the operator's table asset (or, for a templated table, the alias) to its outlets."""
    names = (operator.table, operator.schema, operator.postgres_conn_id)
    outlet = AssetAlias(RESULTS_ALIAS) if _templated(*names) else results_asset(*names)
    operator.outlets = [*operator.outlets, outlet]


def _cost(model: str | None, tokens: Mapping[str, int]) -> float | None:
    try:
        return load_settings().cost(model, tokens.get("prompt", 0), tokens.get("completion", 0))
    except SettingsError as exc:
        log.warning("no cost in the asset event: %s", exc)
        return None


def batch_extra(operator: Any, manifest: Mapping[str, Any]) -> dict[str, Any]:
    """What a downstream DAG needs to know about a batch run; counts and ids only, never texts."""
    counts = manifest.get("counts", {})
    tokens = manifest.get("tokens", {})
    model = (manifest.get("task_audit") or {}).get("model") or operator.model
    return {
        "table": f"{operator.schema}.{operator.table}",
        "rows_written": counts.get("rows_written", 0),
        "rows_skipped": counts.get("skipped_existing", 0),
        "rows_failed": counts.get("failed", 0) + counts.get("invalid", 0),
        "model": model,
        "prompt_id": operator.prompt_id,
        "prompt_version": manifest.get("prompt_version"),
        "tokens": dict(tokens),
        "cost": _cost(model, tokens),
        # The head this task left on the audit chain: a witness kept outside the database
        # (governance/witness.py); the plugin's "verify" checks the chain against these.
        "audit_head": manifest.get("audit_head"),
    }


def transcripts_extra(operator: Any, summary: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "table": f"{operator.schema}.{operator.table}",
        "rows_written": summary.get("rows_written", 0),
        "conversations": summary.get("conversations", 0),
        "transcripts": summary.get("transcripts", 0),
        "without_transcript": summary.get("without_transcript", 0),
        "job_id": summary.get("job_id"),
    }


_R = TypeVar("_R")
Extra = Callable[[Any, Mapping[str, Any]], dict[str, Any]]


def emits_results_asset(
    extra: Extra,
) -> Callable[[Callable[[Any, Any], Coroutine[Any, Any, _R]]], Callable[[Any, Any], Coroutine[Any, Any, _R]]]:
    """Decorate an operator's ``aexecute``: on success, attach ``extra(operator, returned)`` to its table's
    asset event."""

    def decorate(
        aexecute: Callable[[Any, Any], Coroutine[Any, Any, _R]],
    ) -> Callable[[Any, Any], Coroutine[Any, Any, _R]]:
        @functools.wraps(aexecute)
        async def wrapper(self: Any, context: Any) -> _R:
            returned = await aexecute(self, context)
            if isinstance(returned, Mapping) and returned.get("dry_run"):
                return returned  # a plan wrote nothing: no event, so nothing downstream runs on it
            details = extra(self, returned if isinstance(returned, Mapping) else {})
            setattr(self, SUMMARY_ATTRIBUTE, details)
            events = context.get("outlet_events")
            if events is None:  # called outside a task run (no outlets to report to)
                return returned
            if any(isinstance(outlet, AssetAlias) and outlet.name == RESULTS_ALIAS for outlet in self.outlets):
                events[AssetAlias(RESULTS_ALIAS)].add(
                    results_asset(self.table, self.schema, self.postgres_conn_id), extra=details
                )
            else:
                events[results_asset(self.table, self.schema, self.postgres_conn_id)].extra.update(details)
            return returned

        return wrapper

    return decorate
