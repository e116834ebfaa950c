"""Read-only queries behind the UI page, on the provider's own tables.

Every connection is opened read-only (``default_transaction_read_only``) with a statement timeout,
so the page can neither change a table nor hold a query open. Table names come only from the
``[genesys_llm]`` settings (``TableName`` identifiers), never from a request. Every query is
restricted to the DAG ids the user may read.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from ..governance.masking import PiiMasker
from .settings import Settings, TableName

STATEMENT_TIMEOUT_MS = 15_000
HISTOGRAM_BINS = 20
MESSAGES_PER_CLASS = 3
AUDIT_ROWS = 20
Connect = Callable[[], psycopg.Connection[Any]]


def read_only_connect(conninfo: str, *, dict_rows: bool = True) -> Connect:
    """A factory of read-only connections with a statement timeout (and dict rows, unless told otherwise:
    ``verify_chain`` reads tuples)."""
    options = f"-c default_transaction_read_only=on -c statement_timeout={STATEMENT_TIMEOUT_MS}"
    factory: dict[str, Any] = {"row_factory": dict_row} if dict_rows else {}

    def connect() -> psycopg.Connection[Any]:
        return psycopg.connect(conninfo, options=options, connect_timeout=10, **factory)

    return connect


def _ident(table: TableName, suffix: str = "") -> sql.Identifier:
    return sql.Identifier(table.schema, table.table + suffix)


def _scope(run_id: str | None) -> tuple[sql.Composable, list[Any]]:
    """``dag_id = %s`` and, for one run, ``run_id = %s``."""
    if run_id is None:
        return sql.SQL("dag_id = %s"), []
    return sql.SQL("dag_id = %s AND run_id = %s"), [run_id]


def runs(connect: Connect, table: TableName, dag_ids: Sequence[str], limit: int = 50) -> list[dict[str, Any]]:
    """The latest DAG runs that wrote results or failures to ``table``."""
    query = sql.SQL(
        "SELECT dag_id, run_id, sum(ok)::int AS completions, sum(bad)::int AS failures, max(at) AS last_at FROM ("
        " SELECT dag_id, run_id, 1 AS ok, 0 AS bad, created_at AS at FROM {results}"
        " UNION ALL SELECT dag_id, run_id, 0, 1, failed_at FROM {failures}) AS rows"
        " WHERE dag_id = ANY(%s) GROUP BY dag_id, run_id ORDER BY last_at DESC LIMIT %s"
    )
    return _fetch(connect, table, query, (list(dag_ids), limit))


def summary(connect: Connect, table: TableName, dag_id: str, run_id: str | None, settings: Settings) -> dict[str, Any]:
    """Completions, tokens, cost, latency and TTFT percentiles and histograms, throughput and failures."""
    scope, extra = _scope(run_id)
    params = [dag_id, *extra]
    results = _ident(table)
    totals_sql = sql.SQL(
        "SELECT count(*)::int AS completions,"
        " coalesce(sum((usage->>'prompt_tokens')::bigint), 0)::bigint AS prompt_tokens,"
        " coalesce(sum((usage->>'completion_tokens')::bigint), 0)::bigint AS completion_tokens,"
        " percentile_cont(0.5) WITHIN GROUP (ORDER BY (timings->>'total_ms')::float8) AS latency_p50,"
        " percentile_cont(0.95) WITHIN GROUP (ORDER BY (timings->>'total_ms')::float8) AS latency_p95,"
        " percentile_cont(0.5) WITHIN GROUP (ORDER BY (timings->>'ttft_ms')::float8) AS ttft_p50,"
        " percentile_cont(0.95) WITHIN GROUP (ORDER BY (timings->>'ttft_ms')::float8) AS ttft_p95,"
        " percentile_cont(0.5) WITHIN GROUP (ORDER BY (timings->>'tokens_per_second')::float8)"
        " AS tokens_per_second_p50,"
        " avg((timings->>'tokens_per_second')::float8) AS tokens_per_second_avg"
        " FROM {results} WHERE {scope}"
    ).format(results=results, scope=scope)
    models_sql = sql.SQL(
        "SELECT model, count(*)::int AS completions,"
        " coalesce(sum((usage->>'prompt_tokens')::bigint), 0)::bigint AS prompt_tokens,"
        " coalesce(sum((usage->>'completion_tokens')::bigint), 0)::bigint AS completion_tokens"
        " FROM {results} WHERE {scope} GROUP BY model ORDER BY model"
    ).format(results=results, scope=scope)
    failures_sql = sql.SQL(
        "SELECT error_class, count(*)::int AS count, count(*) FILTER (WHERE resolved)::int AS resolved,"
        " (array_agg(message ORDER BY failed_at DESC))[1:%s] AS messages"
        " FROM {failures} WHERE {scope} GROUP BY error_class ORDER BY count DESC, error_class"
    ).format(failures=_ident(table, "_failures"), scope=scope)
    with connect() as conn:
        totals = _jsonable(conn.execute(totals_sql, params).fetchone() or {})
        models = [_jsonable(row) for row in conn.execute(models_sql, params)]
        failures = [_jsonable(row) for row in conn.execute(failures_sql, [MESSAGES_PER_CLASS, *params])]
        latency = _histogram(conn, results, "total_ms", scope, params)
        ttft = _histogram(conn, results, "ttft_ms", scope, params)
    masker = PiiMasker()
    for failure in failures:
        failure["messages"] = [masker.mask(text).text for text in failure["messages"] or [] if text]
    costs = [settings.cost(m["model"], m["prompt_tokens"], m["completion_tokens"]) for m in models]
    for model, cost in zip(models, costs, strict=True):
        model["cost"] = cost
    priced = bool(models) and all(cost is not None for cost in costs)
    return {
        **totals,
        "total_tokens": totals.get("prompt_tokens", 0) + totals.get("completion_tokens", 0),
        "cost": round(sum(c for c in costs if c is not None), 6) if priced else None,
        "currency": settings.currency if priced else None,
        "models": models,
        "failures": failures,
        "failed": sum(f["count"] - f["resolved"] for f in failures),
        "latency_histogram": latency,
        "ttft_histogram": ttft,
    }


def _histogram(
    conn: psycopg.Connection[dict[str, Any]],
    results: sql.Identifier,
    key: str,
    scope: sql.Composable,
    params: list[Any],
) -> dict[str, Any]:
    """``HISTOGRAM_BINS`` equal-width bins between the smallest and largest value, empty bins included."""
    query = sql.SQL(
        "WITH v AS (SELECT (timings->>{key})::float8 AS x FROM {results} WHERE {scope} AND timings ? {key}),"
        " b AS (SELECT min(x) AS lo, max(x) AS hi FROM v)"
        " SELECT lo, hi, width_bucket(x, lo, hi + 1e-9, {bins}) AS bin, count(*)::int AS n"
        " FROM v, b WHERE x IS NOT NULL GROUP BY lo, hi, bin ORDER BY bin"
    ).format(key=sql.Literal(key), results=results, scope=scope, bins=sql.Literal(HISTOGRAM_BINS))
    rows = conn.execute(query, params).fetchall()
    if not rows:
        return {"edges": [], "counts": []}
    lo, hi = float(rows[0]["lo"]), float(rows[0]["hi"])
    width = (hi - lo) / HISTOGRAM_BINS or 1.0
    counts = [0] * HISTOGRAM_BINS
    for row in rows:
        counts[min(max(row["bin"], 1), HISTOGRAM_BINS) - 1] += row["n"]
    return {"edges": [round(lo + width * i, 3) for i in range(HISTOGRAM_BINS + 1)], "counts": counts}


def trends(connect: Connect, table: TableName, dag_ids: Sequence[str], days: int) -> list[dict[str, Any]]:
    """Per day, DAG and model: completions, tokens, median latency, and failures on the same day."""
    query = sql.SQL(
        "WITH ok AS (SELECT (created_at AT TIME ZONE 'UTC')::date AS day, dag_id, coalesce(model, '') AS model,"
        "  count(*)::int AS completions,"
        "  coalesce(sum((usage->>'total_tokens')::bigint), 0)::bigint AS tokens,"
        "  percentile_cont(0.5) WITHIN GROUP (ORDER BY (timings->>'total_ms')::float8) AS latency_p50"
        "  FROM {results} WHERE created_at >= now() - make_interval(days => %s) AND dag_id = ANY(%s)"
        "  GROUP BY 1, 2, 3),"
        " bad AS (SELECT (failed_at AT TIME ZONE 'UTC')::date AS day, dag_id, count(*)::int AS failures"
        "  FROM {failures} WHERE failed_at >= now() - make_interval(days => %s) AND dag_id = ANY(%s) GROUP BY 1, 2)"
        " SELECT ok.*, coalesce(bad.failures, 0) AS failures FROM ok"
        " LEFT JOIN bad USING (day, dag_id) ORDER BY day, dag_id, model"
    )
    return _fetch(connect, table, query, (days, list(dag_ids), days, list(dag_ids)))


def audit(connect: Connect, table: TableName, dag_id: str, run_id: str | None) -> dict[str, Any]:
    """The chain's head and its latest records for a DAG (or one run); records hold no prompt or answer."""
    scope, extra = _scope(run_id)
    records_sql = sql.SQL(
        "SELECT seq, kind, status, created_at, record->>'task_id' AS task_id, record->>'model' AS model,"
        " record->>'error_class' AS error_class, record->'usage'->>'total_tokens' AS total_tokens,"
        " record->>'request_id' AS request_id, record_hash"
        " FROM {chain} WHERE {scope} ORDER BY seq DESC LIMIT %s"
    ).format(chain=_ident(table), scope=scope)
    head_sql = sql.SQL("SELECT seq, record_hash FROM {head}").format(head=_ident(table, "_head"))
    with connect() as conn:
        records = [_jsonable(row) for row in conn.execute(records_sql, [dag_id, *extra, AUDIT_ROWS])]
        head = conn.execute(head_sql).fetchone()
    return {"head": _jsonable(head) if head else None, "records": records}


def search(
    connect: Connect, table: TableName, vector: Sequence[float], dag_ids: Sequence[str], k: int
) -> list[dict[str, Any]]:
    """The ``k`` results nearest to ``vector`` by cosine distance (0 = same direction, 2 = opposite)."""
    from pgvector import Vector

    query = sql.SQL(
        "SELECT id, source_id, dag_id, run_id, model, left(content, 300) AS content,"
        " embedding <=> %s AS cosine_distance FROM {results} WHERE dag_id = ANY(%s)"
        " ORDER BY cosine_distance LIMIT %s"
    ).format(results=_ident(table))
    with connect() as conn:
        from pgvector.psycopg import register_vector

        register_vector(conn)
        return [_jsonable(row) for row in conn.execute(query, (Vector(list(vector)), list(dag_ids), k))]


def _fetch(connect: Connect, table: TableName, query: sql.SQL, params: Sequence[Any]) -> list[dict[str, Any]]:
    """Rows of ``query`` with ``{results}`` and ``{failures}`` naming ``table`` and its failures table."""
    statement = query.format(results=_ident(table), failures=_ident(table, "_failures"))
    with connect() as conn:
        return [_jsonable(row) for row in conn.execute(statement, params)]


def _jsonable(row: dict[str, Any]) -> dict[str, Any]:
    """Dates as ISO text, decimals as floats: what the browser's JSON needs."""
    out: dict[str, Any] = {}
    for key, value in row.items():
        if hasattr(value, "isoformat"):
            value = value.isoformat()
        elif type(value).__name__ == "Decimal":
            value = float(value)
        out[key] = value
    return out
