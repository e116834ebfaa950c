"""The UI plugin in a real browser: Airflow's API server with the plugin, the demo DAG's data in the
embedded Postgres, headless Debian Chromium driven by Playwright (the system browser; no download).

What the page shows is checked against the tables themselves, so a wrong query, a wrong
aggregation or a chart without data fails here.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from airflow_runner import airflow_env, dags_test
from ui_server import CHROMIUM, CHROMIUM_ARGS, ApiServer, api_server

ROOT = Path(__file__).resolve().parent.parent
DEMO_DAGS = ROOT / "dags_examples"
RUN_DATE = "2026-11-23"
TABLE = "transcript_insights"
PRICES = {"genesys-llm-v2": {"prompt_per_1k": 0.5, "completion_per_1k": 1.5}}
#: Screenshots land here (CI keeps the folder as the test's artifacts).
ARTIFACTS = Path(os.environ.get("GENESYS_TEST_ARTIFACTS", ROOT / ".test-artifacts"))
WAIT_MS = 30_000
SEARCH = "/genesys-llm/api/search"

#: On a developer machine without the browser the test skips (`make chromium` installs it); in CI
#: (.ci/run installs it) a missing browser is a failure, not a skip.
needs_chromium = pytest.mark.skipif(
    not Path(CHROMIUM).exists() and not os.environ.get("CI"), reason="Debian chromium is not installed: make chromium"
)


@pytest.fixture(scope="module")
def demo_run(airflow_home, emulator_server, pg_server) -> dict[str, str]:
    """The demo DAG on one day, twice: a first run with one item failing at the gateway, then a second
    run that skips the 29 stored items and resolves the failure. Returns the Airflow env and both run ids."""
    emulator_server.reset()
    emulator_server.add_fault(endpoint="ws", kind="stream_error", code="invalid_request", count=1)
    env = airflow_env(airflow_home, DEMO_DAGS, emulator_server, pg_server)
    for _ in range(2):
        done = dags_test(env, "genesys_llm_demo", RUN_DATE)
        assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    emulator_server.reset()
    with psycopg.connect(pg_server.conninfo) as conn:
        runs = conn.execute(
            f"SELECT run_id FROM {TABLE} WHERE source_id LIKE %s GROUP BY run_id ORDER BY min(created_at)",
            (f"{RUN_DATE}-conv-%",),
        ).fetchall()
    assert len(runs) == 2, runs
    return {**env, "RUN_ID": runs[0][0], "SECOND_RUN_ID": runs[1][0]}


@pytest.fixture(scope="module")
def server(demo_run, tmp_path_factory) -> Iterator[ApiServer]:
    env = {key: value for key, value in demo_run.items() if not key.endswith("RUN_ID")}
    env["AIRFLOW__GENESYS_LLM__PRICES"] = json.dumps(PRICES)
    with api_server(env, tmp_path_factory.mktemp("api-server")) as running:
        yield running


@pytest.fixture
def browser_page(tmp_path, request) -> Iterator[object]:
    """A page in a fresh Chromium profile; its last state is saved as a screenshot whatever the outcome."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"),
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1400, "height": 1100},
        )
        try:
            page = context.new_page()
            page.set_default_timeout(WAIT_MS)
            errors: list[str] = []
            page.on("pageerror", lambda error: errors.append(str(error)))
            page.on("console", lambda message: message.type == "error" and errors.append(message.text))
            yield page
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / f"{request.node.name}-last.png"), full_page=True)
            assert errors == [], f"the page reported errors: {errors}"
        finally:
            context.close()


def login(page, server: ApiServer, path: str = "/genesys-llm/") -> None:
    """Open ``path``; the plugin sends an anonymous browser to Airflow's login page, which sends it back."""
    page.goto(server.base_url + path)
    page.wait_for_url("**/auth/login**")
    page.get_by_label("Username").fill(server.user)
    page.get_by_label("Password").fill(server.password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"**{path}")


def db_figures(conninfo: str, run_id: str) -> dict[str, object]:
    with psycopg.connect(conninfo) as conn:
        completions, prompt, completion = conn.execute(
            f"SELECT count(*), sum((usage->>'prompt_tokens')::int), sum((usage->>'completion_tokens')::int) "
            f"FROM {TABLE} WHERE dag_id = 'genesys_llm_demo' AND run_id = %s",
            (run_id,),
        ).fetchone()
        failures = conn.execute(
            f"SELECT error_class, count(*), count(*) FILTER (WHERE resolved) FROM {TABLE}_failures "
            "WHERE dag_id = 'genesys_llm_demo' AND run_id = %s GROUP BY error_class",
            (run_id,),
        ).fetchall()
        head = conn.execute("SELECT seq FROM genesys_llm_audit_head").fetchone()
    return {
        "completions": completions,
        "prompt": prompt,
        "completion": completion,
        "failures": {error_class: (count, resolved) for error_class, count, resolved in failures},
        "head_seq": head[0],
    }


def skipped_in_asset_events(airflow_home: str, run_id: str) -> int:
    """Items skipped as already stored, from the batch operator's asset events in Airflow's database."""
    with sqlite3.connect(Path(airflow_home, "airflow.db")) as db:
        extras = db.execute(
            "SELECT extra FROM asset_event WHERE source_dag_id = 'genesys_llm_demo' AND source_run_id = ?", (run_id,)
        ).fetchall()
    return sum(json.loads(extra)["rows_skipped"] for (extra,) in extras)


def fmt(number: float) -> str:
    return f"{number:,}"


@pytest.mark.browser
@needs_chromium
def test_page_shows_the_tables_figures_charts_audit_and_search(server, demo_run, pg_server, browser_page, monkeypatch):
    page = browser_page
    run_id = demo_run["RUN_ID"]
    login(page, server)
    page.wait_for_selector("body[data-loaded=true]")
    page.select_option("#dag", "genesys_llm_demo")
    page.select_option("#run", run_id)
    expected = db_figures(pg_server.conninfo, run_id)
    completions = page.get_by_test_id("completions")
    page.wait_for_selector("body[data-loaded=true]")  # set when the selected run's figures are in
    assert completions.text_content() == fmt(expected["completions"])
    assert expected["completions"] == 29 and expected["failures"] == {"GatewayBadRequestError": (1, 1)}
    assert page.get_by_test_id("prompt-tokens").text_content() == fmt(expected["prompt"])
    assert page.get_by_test_id("completion-tokens").text_content() == fmt(expected["completion"])
    cost = expected["prompt"] / 1000 * 0.5 + expected["completion"] / 1000 * 1.5
    assert page.get_by_test_id("cost").text_content() == f"{cost:,.4f}".rstrip("0").rstrip(".") + " USD"
    assert page.get_by_test_id("failed").text_content() == "0"  # the second run resolved it
    failures = page.locator("[data-testid=failures] tbody tr").first.locator("td").all_text_contents()
    assert failures[:3] == ["GatewayBadRequestError", "1", "1"] and "invalid_request" in failures[3]
    assert page.get_by_test_id("skipped").text_content() == "0"

    # A real chart with data points: the histogram's bars add up to the completions.
    bars = page.evaluate("() => Chart.getChart(document.getElementById('latency-chart')).data.datasets[0].data")
    assert len(bars) == 20 and sum(bars) == expected["completions"]
    ttft_bars = page.evaluate("() => Chart.getChart(document.getElementById('ttft-chart')).data.datasets[0].data")
    assert sum(ttft_bars) == expected["completions"]
    trend = page.evaluate("() => Chart.getChart(document.getElementById('trend-chart')).data.datasets.length")
    assert trend >= 1

    # Audit: the head the page shows is the table's, and verification runs on demand.
    assert page.get_by_test_id("audit-head").text_content().startswith(f"seq {expected['head_seq']} ")
    assert page.locator("[data-testid=audit-records] tbody tr").count() > 0
    page.click("#verify")
    page.wait_for_function(
        "() => document.querySelector('[data-testid=verify-result]').textContent.startsWith('chain')"
    )
    verdict = page.get_by_test_id("verify-result").text_content()
    assert re.fullmatch(r"chain OK \(\d+ rows, [1-9]\d* witnessed heads\)", verdict), verdict
    ARTIFACTS.mkdir(parents=True, exist_ok=True)

    # The second run: it stored the retried item and skipped the 29 already stored.
    second = demo_run["SECOND_RUN_ID"]
    page.select_option("#run", second)
    page.wait_for_selector("body[data-loaded=true]")
    assert page.get_by_test_id("completions").text_content() == "1"
    skipped = skipped_in_asset_events(demo_run["AIRFLOW_HOME"], second)
    assert skipped == 29 and page.get_by_test_id("skipped").text_content() == fmt(skipped)
    assert db_figures(pg_server.conninfo, second)["completions"] == 1

    # Search: the page's first match is the table's nearest row to the same query embedding.
    # A customer's e-mail typed into the box: masked before it is embedded, and never in a URL or a log.
    email = "dana.whitfield@example.com"
    query = f"customer {email} was charged twice and wants a refund"
    page.fill("#query", query)
    page.click("#search-form button")
    first = page.locator("[data-testid=search-results] tbody tr").first
    first.wait_for()
    cells = first.locator("td").all_text_contents()
    nearest_sources, expected_distance = nearest(pg_server.conninfo, monkeypatch, demo_run, query)
    assert cells[1] in nearest_sources, (cells, nearest_sources)
    assert abs(float(cells[2]) - expected_distance) < 1e-3
    assert "cosine distance" in page.locator("[data-testid=search-results] thead").text_content()
    assert email not in server.log_path.read_text(errors="replace")
    page.screenshot(path=str(ARTIFACTS / "ui-plugin-page.png"), full_page=True)

    # The same page inside Airflow's own UI: the plugin's nav entry opens it at /plugin/genesys-llm.
    page.goto(server.base_url + "/plugin/genesys-llm")
    frame = page.frame_locator("iframe")
    frame.locator("body[data-loaded=true]").wait_for()
    frame.locator("#dag").select_option("genesys_llm_demo")
    frame.locator("#run").select_option(run_id)
    expect_text = fmt(expected["completions"])
    page.wait_for_function(
        "text => [...document.querySelectorAll('iframe')].some(f => f.contentDocument?.querySelector("
        "'[data-testid=completions]')?.textContent === text)",
        arg=expect_text,
    )
    page.screenshot(path=str(ARTIFACTS / "ui-plugin.png"))
    if os.environ.get("GENESYS_UPDATE_DOCS_IMG"):
        shutil.copy(ARTIFACTS / "ui-plugin.png", ROOT / "docs" / "img" / "ui-plugin.png")


def nearest(conninfo: str, monkeypatch: pytest.MonkeyPatch, env: dict[str, str], query: str) -> tuple[set[str], float]:
    """The source ids nearest to ``query`` and their distance, computed here from the same connection's
    embeddings endpoint."""
    from pgvector import Vector
    from pgvector.psycopg import register_vector

    from airflow_provider_genesys_llm.hooks.genesys_llm import GenesysLLMHook

    monkeypatch.setenv("AIRFLOW_CONN_GENESYS_LLM_DEFAULT", env["AIRFLOW_CONN_GENESYS_LLM_DEFAULT"])
    hook = GenesysLLMHook()
    try:
        vector = hook.embed([query])[0]
    finally:
        hook.close()
    with psycopg.connect(conninfo) as conn:
        register_vector(conn)
        # Rows with the same summary have the same embedding: every row at the smallest distance is a
        # correct first match.
        rows = conn.execute(
            f"WITH d AS (SELECT source_id, embedding <=> %s AS distance FROM {TABLE}) "
            "SELECT source_id, distance FROM d WHERE distance <= (SELECT min(distance) FROM d) + 1e-9",
            (Vector(vector),),
        ).fetchall()
    return {source_id for source_id, _ in rows}, rows[0][1]


def get(server: ApiServer, path: str, token: str | None = None, body: dict | None = None) -> tuple[int, dict]:
    """GET ``path``, or POST ``body`` as JSON to it; returns the status and the JSON answer."""
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(server.base_url + path, data=data, headers={"Content-Type": "application/json"})
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read() or b"{}")


def token_for(server: ApiServer) -> str:
    body = json.dumps({"username": server.user, "password": server.password}).encode()
    request = urllib.request.Request(
        server.base_url + "/auth/token", data=body, headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=30) as answer:
        return json.loads(answer.read())["access_token"]


def test_api_refuses_anonymous_forged_and_out_of_bounds_requests(server):
    for path in (
        "/genesys-llm/api/summary?dag_id=genesys_llm_demo",
        "/genesys-llm/api/audit/verify",
        "/genesys-llm/api/runs",
    ):
        assert get(server, path)[0] == 401, path
        assert get(server, path, token="forged.jwt.token")[0] in (401, 403), path
    assert get(server, SEARCH, body={"q": "refund"})[0] == 401
    with urllib.request.urlopen(server.base_url + "/genesys-llm/", timeout=30) as answer:  # sent to the login page
        assert "/auth/login" in answer.url

    token = token_for(server)
    status, body = get(server, "/genesys-llm/api/summary?dag_id=genesys_llm_demo", token)
    assert status == 200 and body["completions"] >= 29
    for table in ("pg_catalog.pg_authid", "transcript_insights;DROP%20TABLE%20transcript_insights", "public.x"):
        status, body = get(server, f"/genesys-llm/api/summary?dag_id=genesys_llm_demo&table={table}", token)
        assert status == 400 and "results_tables" in body["detail"], (table, body)
    status, body = get(server, "/genesys-llm/api/summary?dag_id=not_a_dag_here", token)
    assert status == 404
    assert get(server, "/genesys-llm/api/audit?dag_id=not_a_dag_here", token)[0] == 404
    for body in ({"q": "x" * 2001}, {"q": ""}, {"q": "refund", "k": 51}, {"q": "refund", "sql": "DROP TABLE x"}):
        assert get(server, SEARCH, token, body)[0] == 422, body
    assert get(server, "/genesys-llm/api/trends?days=0", token)[0] == 422


def test_read_only_connections_refuse_writes(pg_server):
    from airflow_provider_genesys_llm.plugins.queries import read_only_connect

    connect = read_only_connect(pg_server.conninfo)
    with pytest.raises(psycopg.errors.ReadOnlySqlTransaction), connect() as conn:
        conn.execute("CREATE TABLE written_by_the_page (id int)")


@pytest.mark.parametrize(
    "text", ["pg_catalog.pg_authid.x", "public.bad-name", "x;drop", "", "a" * 64, 'public."quoted"']
)
def test_table_names_outside_plain_identifiers_are_refused(text):
    from airflow_provider_genesys_llm.plugins.settings import SettingsError, TableName

    with pytest.raises(SettingsError, match="results_tables"):
        TableName.parse(text)


def test_only_configured_tables_are_served_and_prices_are_checked(monkeypatch):
    from airflow_provider_genesys_llm.plugins.settings import SettingsError, load_settings

    monkeypatch.setenv("AIRFLOW__GENESYS_LLM__RESULTS_TABLES", "transcript_insights, analytics.summaries")
    monkeypatch.setenv("AIRFLOW__GENESYS_LLM__PRICES", json.dumps(PRICES))
    settings = load_settings()
    assert str(settings.table("summaries")) == "analytics.summaries"
    assert str(settings.table("public.transcript_insights")) == "public.transcript_insights"
    with pytest.raises(SettingsError, match="not in"):
        settings.table("public.summaries")
    assert settings.cost("genesys-llm-v2", 1000, 2000) == 3.5
    assert settings.cost("unpriced-model", 1000, 2000) is None  # no guessed price
    monkeypatch.setenv("AIRFLOW__GENESYS_LLM__PRICES", '{"genesys-llm-v2": {"prompt": 1}}')
    with pytest.raises(SettingsError, match="prices must be JSON like"):
        load_settings()
