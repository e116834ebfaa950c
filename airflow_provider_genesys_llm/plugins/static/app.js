// The Genesys LLM page: reads the plugin's read-only API (same origin, Airflow's session cookie)
// and draws with the vendored Chart.js. Text from the API is only ever set as textContent.
"use strict";

const $ = (id) => document.getElementById(id);
const charts = {};
const fmt = (value, digits = 0) =>
  value === null || value === undefined
    ? "–"
    : Number(value).toLocaleString("en-US", { maximumFractionDigits: digits });

// The summary cards, in page order: test id, label, and how the summary shows in it. The cards are
// built from this table and filled from it, so a card cannot be shown without a value or the reverse.
const CARDS = [
  ["completions", "completions", (s) => fmt(s.completions)],
  ["failed", "failed", (s) => fmt(s.failed)],
  ["skipped", "skipped as already stored", (s) => (s.skipped_existing === null ? "–" : fmt(s.skipped_existing))],
  ["prompt-tokens", "prompt tokens", (s) => fmt(s.prompt_tokens)],
  ["completion-tokens", "completion tokens", (s) => fmt(s.completion_tokens)],
  ["total-tokens", "total tokens", (s) => fmt(s.total_tokens)],
  ["cost", "cost", (s) => (s.cost === null ? "–" : `${fmt(s.cost, 4)} ${s.currency}`)],
  ["latency", "latency p50 / p95 (ms)", (s) => `${fmt(s.latency_p50, 1)} / ${fmt(s.latency_p95, 1)}`],
  ["ttft", "time to first token p50 / p95 (ms)", (s) => `${fmt(s.ttft_p50, 1)} / ${fmt(s.ttft_p95, 1)}`],
  ["tps", "tokens per second (median)", (s) => fmt(s.tokens_per_second_p50, 1)],
];

function buildCards() {
  for (const [testid, label] of CARDS) {
    const card = document.createElement("div");
    card.className = "card";
    card.id = `${testid}-card`;
    const name = document.createElement("span");
    name.className = "label";
    name.textContent = label;
    const value = document.createElement("span");
    value.className = "value";
    value.dataset.testid = testid;
    value.textContent = "–";
    card.append(name, value);
    $("cards").append(card);
  }
}

async function api(path, params = {}, payload = undefined) {
  const given = Object.entries(params).filter(([, v]) => v !== "" && v !== null && v !== undefined);
  const response = await fetch(`api/${path}?${new URLSearchParams(given)}`, {
    method: payload === undefined ? "GET" : "POST",
    credentials: "same-origin",
    headers: { Accept: "application/json", "Content-Type": "application/json" },
    body: payload === undefined ? undefined : JSON.stringify(payload),
  });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(`${path}: ${response.status} ${body.detail ?? ""}`);
  return body;
}

function setStatus(text) { $("status").textContent = text; }

function fillSelect(select, options, keep) {
  const previous = keep ? select.value : null;
  for (const [value, label] of options) {
    const option = document.createElement("option");
    option.value = value;
    option.textContent = label;
    select.append(option);
  }
  if (previous !== null && [...select.options].some((o) => o.value === previous)) select.value = previous;
}

function rows(tbody, data, cells) {
  tbody.replaceChildren(...data.map((item, index) => {
    const tr = document.createElement("tr");
    for (const [value, numeric] of cells(item, index)) {
      const td = document.createElement("td");
      td.textContent = value ?? "";
      if (numeric) td.className = "num";
      tr.append(td);
    }
    return tr;
  }));
}

function draw(id, type, labels, datasets) {
  charts[id]?.destroy();
  charts[id] = new Chart($(id), {
    type,
    data: { labels, datasets },
    options: { animation: false, responsive: true, plugins: { legend: { display: datasets.length > 1 } } },
  });
}

function histogram(id, hist, color) {
  const labels = hist.counts.map((_, i) => `${fmt(hist.edges[i])}–${fmt(hist.edges[i + 1])}`);
  draw(id, "bar", labels, [{ label: "completions", data: hist.counts, backgroundColor: color }]);
}

let runsByDag = new Map();

async function loadRuns() {
  const runs = await api("runs", { table: $("table").value });
  runsByDag = new Map();
  for (const run of runs) {
    if (!runsByDag.has(run.dag_id)) runsByDag.set(run.dag_id, []);
    runsByDag.get(run.dag_id).push(run);
  }
  $("dag").replaceChildren();
  fillSelect($("dag"), [...runsByDag.keys()].sort().map((d) => [d, d]), false);
  fillRuns();
}

function fillRuns() {
  $("run").replaceChildren();
  const runs = (runsByDag.get($("dag").value) ?? []).map((r) => [r.run_id, r.run_id]);
  fillSelect($("run"), [["", "all runs"], ...runs], false);
}

// Each refresh has a number; answers that arrive after a newer refresh started are dropped, so a slow
// answer for the previous choice never overwrites the current one.
let generation = 0;
const stale = (mine) => mine !== generation;

async function loadSummary(mine) {
  const dag = $("dag").value;
  if (!dag) { setStatus("No DAG has written to this table yet."); return; }
  const params = { table: $("table").value, dag_id: dag, run_id: $("run").value };
  const s = await api("summary", params);
  if (stale(mine)) return;
  $("cost-card").hidden = s.cost === null;
  for (const [testid, , show] of CARDS) {
    document.querySelector(`[data-testid="${testid}"]`).textContent = show(s);
  }
  histogram("latency-chart", s.latency_histogram, "#3b82f6");
  histogram("ttft-chart", s.ttft_histogram, "#10b981");
  rows(document.querySelector('[data-testid="failures"] tbody'), s.failures, (f) => [
    [f.error_class], [fmt(f.count), true], [fmt(f.resolved), true], [f.messages.join("\n")],
  ]);
  const audit = await api("audit", { dag_id: dag, run_id: $("run").value });
  if (stale(mine)) return;
  document.querySelector('[data-testid="audit-head"]').textContent =
    audit.head ? `seq ${audit.head.seq} · ${audit.head.record_hash}` : "no chain yet";
  rows(document.querySelector('[data-testid="audit-records"] tbody'), audit.records, (r) => [
    [r.seq, true], [r.kind], [r.status], [r.task_id], [r.model], [r.total_tokens, true], [r.error_class],
    [r.created_at],
  ]);
}

async function loadTrends() {
  const data = await api("trends", { table: $("table").value, days: $("days").value });
  const days = [...new Set(data.map((d) => d.day))].sort();
  const series = new Map();
  for (const d of data) {
    const key = `${d.dag_id} · ${d.model || "?"}`;
    if (!series.has(key)) series.set(key, new Map());
    series.get(key).set(d.day, d.completions);
  }
  const palette = ["#3b82f6", "#f59e0b", "#10b981", "#ef4444", "#8b5cf6", "#14b8a6"];
  draw("trend-chart", "bar", days, [...series].map(([label, byDay], i) => ({
    label,
    data: days.map((day) => byDay.get(day) ?? 0),
    backgroundColor: palette[i % palette.length],
    maxBarThickness: 48,
  })));
}

async function verify() {
  const out = document.querySelector('[data-testid="verify-result"]');
  out.textContent = "verifying…";
  try {
    const v = await api("audit/verify");
    const witnessed = `${fmt(v.witnesses_checked)} witnessed heads`;
    out.textContent = v.ok
      ? `chain OK (${fmt(v.rows_checked)} rows, ${witnessed})`
      : `BROKEN at seq ${v.first_bad_seq ?? "?"}: ${v.problem ?? `${v.witnesses_unreadable} unreadable heads`}`;
  } catch (error) { out.textContent = error.message; }
}

async function search(event) {
  event.preventDefault();
  const q = $("query").value.trim();
  if (!q) return;
  try {
    // POST: the query text stays out of URLs and the API server's access log.
    const result = await api("search", {}, { table: $("table").value, q, k: 5 });
    rows(document.querySelector('[data-testid="search-results"] tbody'), result.matches, (m, i) => [
      [i + 1, true], [m.source_id], [Number(m.cosine_distance).toFixed(4), true], [`${m.dag_id} / ${m.run_id}`],
      [m.content],
    ]);
    setStatus("");
  } catch (error) { setStatus(error.message); }
}

async function refresh(what) {
  const mine = ++generation;
  document.body.dataset.loaded = "false";
  try {
    if (what === "table") await loadRuns();
    if (what === "dag") fillRuns();
    await Promise.all([loadSummary(mine), loadTrends()]);
    if (!stale(mine)) document.body.dataset.loaded = "true";
  } catch (error) { setStatus(error.message); }
}

async function main() {
  buildCards();
  try {
    const config = await api("config");
    fillSelect($("table"), config.tables.map((t) => [t, t]), false);
  } catch (error) { setStatus(error.message); return; }
  $("table").addEventListener("change", () => refresh("table"));
  $("dag").addEventListener("change", () => refresh("dag"));
  $("run").addEventListener("change", () => refresh("run"));
  $("days").addEventListener("change", loadTrends);
  $("verify").addEventListener("click", verify);
  $("search-form").addEventListener("submit", search);
  await refresh("table");
}

document.addEventListener("DOMContentLoaded", main);
