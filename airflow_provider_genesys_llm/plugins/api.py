"""The plugin's FastAPI app: the page, its static files and a small read-only JSON API.

Mounted by Airflow's API server under ``/genesys-llm``. Authentication is Airflow's own: every API
call resolves the user from Airflow's JWT (the ``_token`` cookie the UI sets at login, or a bearer
token) and answers only for DAGs the auth manager lets that user read; the page redirects to
Airflow's login when there is no valid session.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

import psycopg
from airflow.api_fastapi.core_api.security import get_user
from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import FileResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field

from . import queries
from .settings import Settings, SettingsError, TableName, load_settings

STATIC = Path(__file__).with_name("static")
MAX_DAYS = 366
MAX_K = 50
MAX_QUERY_CHARS = 2000


class SearchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    q: str = Field(min_length=1, max_length=MAX_QUERY_CHARS)
    k: int = Field(default=5, ge=1, le=MAX_K)
    table: str | None = None


def _settings() -> Settings:
    try:
        return load_settings()
    except SettingsError as exc:
        raise HTTPException(status_code=500, detail=str(exc)) from None


#: Airflow's user (401/403 from Airflow's own checks when the token is missing, expired or invalid).
User = Annotated[Any, Depends(get_user)]
Config = Annotated[Settings, Depends(_settings)]


def _readable_dags(user: Any) -> set[str]:
    from airflow.api_fastapi.app import get_auth_manager

    return set(get_auth_manager().get_authorized_dag_ids(user=user, method="GET"))


def _check_dag(user: Any, dag_id: str) -> None:
    if dag_id not in _readable_dags(user):
        # The same answer for "no such DAG" and "not yours": the page must not reveal DAG ids.
        raise HTTPException(status_code=404, detail=f"no readable DAG {dag_id[:250]!r}")


def _table(settings: Settings, name: str | None) -> TableName:
    if name is None:
        return settings.results_tables[0]
    try:
        return settings.table(name)
    except SettingsError as exc:
        raise HTTPException(status_code=400, detail=str(exc)) from None


def _connect(settings: Settings, *, dict_rows: bool = True) -> queries.Connect:
    from airflow.models.connection import Connection

    from ..hooks.postgres import airflow_conninfo

    conn = Connection.get_connection_from_secrets(settings.postgres_conn_id)
    return queries.read_only_connect(airflow_conninfo(conn), dict_rows=dict_rows)


def _db_error(exc: psycopg.Error) -> HTTPException:
    """Postgres' primary message only: its DETAIL can quote a row."""
    primary = exc.diag.message_primary if exc.sqlstate else type(exc).__name__
    return HTTPException(status_code=503, detail=f"database query failed: {primary}")


#: Most asset events one request reads (newest first).
MAX_EVENTS = 10_000


def _asset_extras(
    settings: Settings, tables: Sequence[TableName], dag_id: str | None = None, run_id: str | None = None
) -> list[dict[str, Any]]:
    """The ``extra`` of the operators' asset events for ``tables``, newest first, from Airflow's database."""
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    from ..operators.assets import results_asset

    uris = [results_asset(table.table, table.schema, settings.postgres_conn_id).uri for table in tables]
    query = (
        select(AssetEvent.extra).join(AssetModel, AssetModel.id == AssetEvent.asset_id).where(AssetModel.uri.in_(uris))
    )
    if dag_id is not None:
        query = query.where(AssetEvent.source_dag_id == dag_id)
    if run_id is not None:
        query = query.where(AssetEvent.source_run_id == run_id)
    with create_session() as session:
        return [extra or {} for extra in session.scalars(query.order_by(AssetEvent.id.desc()).limit(MAX_EVENTS))]


def _skipped(settings: Settings, table: TableName, dag_id: str, run_id: str | None) -> int | None:
    """Items skipped as already stored, from the batch operator's asset events (``None``: no event yet)."""
    extras = _asset_extras(settings, [table], dag_id, run_id)
    return sum(int(extra.get("rows_skipped") or 0) for extra in extras) if extras else None


def _witnesses(settings: Settings) -> tuple[list[Any], int]:
    """Chain heads the tasks published in their asset events, and how many events carried an unreadable one."""
    from pydantic import ValidationError

    from ..governance.witness import ChainHead

    heads, unreadable = [], 0
    for extra in _asset_extras(settings, settings.results_tables):
        if extra.get("audit_head"):
            try:
                heads.append(ChainHead.model_validate(extra["audit_head"]))
            except ValidationError:
                unreadable += 1
    return heads, unreadable


def create_app() -> FastAPI:
    app = FastAPI(title="Genesys LLM", docs_url=None, redoc_url=None, openapi_url=None)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    async def page(request: Request) -> Response:
        try:
            await get_user(request, None, None)  # the session cookie; no bearer token on a page load
        except HTTPException:
            from airflow.api_fastapi.app import get_auth_manager

            return RedirectResponse(get_auth_manager().get_url_login(next_url=str(request.url)), status_code=303)
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-store"})

    @app.get("/api/config")
    def config(user: User, settings: Config) -> dict[str, Any]:
        return {
            "tables": [str(table) for table in settings.results_tables],
            "audit_table": str(settings.audit_table),
            "prices_configured": bool(settings.prices),
            "currency": settings.currency,
            "dags": sorted(_readable_dags(user)),
        }

    @app.get("/api/runs")
    def runs(user: User, settings: Config, table: str | None = None) -> list[dict[str, Any]]:
        try:
            return queries.runs(_connect(settings), _table(settings, table), sorted(_readable_dags(user)))
        except psycopg.Error as exc:
            raise _db_error(exc) from None

    @app.get("/api/summary")
    def summary(
        user: User, settings: Config, dag_id: str, run_id: str | None = None, table: str | None = None
    ) -> dict[str, Any]:
        _check_dag(user, dag_id)
        chosen = _table(settings, table)
        try:
            result = queries.summary(_connect(settings), chosen, dag_id, run_id, settings)
        except psycopg.Error as exc:
            raise _db_error(exc) from None
        result["skipped_existing"] = _skipped(settings, chosen, dag_id, run_id)
        return result

    @app.get("/api/trends")
    def trends(
        user: User, settings: Config, days: Annotated[int, Query(ge=1, le=MAX_DAYS)] = 14, table: str | None = None
    ) -> list[dict[str, Any]]:
        try:
            return queries.trends(_connect(settings), _table(settings, table), sorted(_readable_dags(user)), days)
        except psycopg.Error as exc:
            raise _db_error(exc) from None

    @app.get("/api/audit")
    def audit(user: User, settings: Config, dag_id: str, run_id: str | None = None) -> dict[str, Any]:
        _check_dag(user, dag_id)
        try:
            return queries.audit(_connect(settings), settings.audit_table, dag_id, run_id)
        except psycopg.Error as exc:
            raise _db_error(exc) from None

    @app.get("/api/audit/verify")
    def verify(user: User, settings: Config) -> dict[str, Any]:
        """Recompute the whole chain now (it reads every row: on demand only), checking it against the
        heads the tasks witnessed in their asset events, which the database role cannot rewrite."""
        from ..governance.chain import verify_chain

        witnesses, unreadable = _witnesses(settings)
        connect = _connect(settings, dict_rows=False)
        table = settings.audit_table
        try:
            outcome = verify_chain(connect, table=table.table, schema=table.schema, witnesses=witnesses)
        except psycopg.Error as exc:
            raise _db_error(exc) from None
        return {
            "ok": outcome.ok and not unreadable,
            "rows_checked": outcome.rows_checked,
            "witnesses_checked": outcome.witnesses_checked,
            "witnesses_unreadable": unreadable,
            "first_bad_seq": outcome.first_bad_seq,
            "problem": outcome.problem,
        }

    @app.post("/api/search")
    def search(user: User, settings: Config, request: SearchRequest) -> dict[str, Any]:
        """POST, not GET: the query is free text a user may type a customer's details into, and the API
        server's access log records query strings."""
        chosen = _table(settings, request.table)
        vector = _embed(settings, request.q)
        try:
            matches = queries.search(_connect(settings), chosen, vector, sorted(_readable_dags(user)), request.k)
        except psycopg.Error as exc:
            raise _db_error(exc) from None
        return {
            "table": str(chosen),
            "distance": "cosine distance (0 = same direction; lower is closer)",
            "matches": matches,
        }

    return app


def _embed(settings: Settings, text: str) -> Sequence[float]:
    """The query's embedding from the configured gateway; the hook masks PII before it is sent."""
    from ..client import GatewayError
    from ..hooks.genesys_llm import GenesysLLMHook

    hook = GenesysLLMHook(settings.search_conn_id)
    try:
        return hook.embed([text])[0]
    except GatewayError as exc:
        raise HTTPException(status_code=502, detail=f"embedding the query failed: {type(exc).__name__}") from None
    finally:
        hook.close()
