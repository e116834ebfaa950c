"""Erasure: every trace of a conversation gone from every table, in one transaction, for good."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from batch_items import TEST_ID_KEY, TEST_ID_KEY_TEXT
from psycopg import sql
from test_client import make_config
from test_transcripts import fulfilled_job

from airflow_provider_genesys_llm.batch.landing import land_transcripts
from airflow_provider_genesys_llm.client import GatewayClient
from airflow_provider_genesys_llm.client.transcripts import TranscriptSource
from airflow_provider_genesys_llm.erasure import main as cli
from airflow_provider_genesys_llm.governance.chain import AuditChainStore, verify_chain
from airflow_provider_genesys_llm.governance.masking import PiiMasker
from airflow_provider_genesys_llm.sinks.erasure import (
    ErasureError,
    ErasureTargets,
    TombstoneList,
    erase,
    id_digest,
    prefixes,
    stored_digests,
)
from airflow_provider_genesys_llm.sinks.pgvector import FailureRow, PgVectorStore, ResultRow
from airflow_provider_genesys_llm.sinks.transcripts import TranscriptStore
from genesys_llm_emulator.generator import embed

DAY = datetime(2026, 11, 3, tzinfo=UTC)
RESULTS = "insights"


# -- pure parts ------------------------------------------------------------------------------


def test_an_id_covers_itself_and_what_is_below_it_never_a_longer_sibling() -> None:
    assert prefixes("a:b:c") == ["a", "a:b", "a:b:c"]
    tombstones = TombstoneList(TEST_ID_KEY, [id_digest(TEST_ID_KEY, "conv-1"), id_digest(TEST_ID_KEY, "conv-2:m:t")])
    assert tombstones.is_erased("conv-1") and tombstones.is_erased("conv-1:comm:tr")
    assert not tombstones.is_erased("conv-10:comm:tr") and not tombstones.is_erased("conv-")
    assert tombstones.is_erased("conv-2:m:t") and not tombstones.is_erased("conv-2:m:u")
    assert not TombstoneList(
        TEST_ID_KEY.__class__("another-deployment-key-0123456789"), [id_digest(TEST_ID_KEY, "conv-1")]
    ).is_erased("conv-1")


def test_filter_items_drops_erased_items_and_counts_them() -> None:
    tombstones = TombstoneList(TEST_ID_KEY, [id_digest(TEST_ID_KEY, "c1")])
    items = [
        {"id": "c1:a:b", "text": "x"},
        {"id": "c2:a:b", "text": "y"},
        "not an item",
        {"text": "no id"},
        {"id": "c1"},
    ]
    assert list(tombstones.filter_items(iter(items))) == [items[1], "not an item", {"text": "no id"}]
    assert tombstones.skipped == 2


@pytest.mark.parametrize("ids", [[], [""], [" c1"], ["c1", None]])
def test_bad_ids_are_refused_before_anything_happens(ids, pg_connect) -> None:
    with pytest.raises(ValueError, match="id|ids"):
        erase(pg_connect, ids, TEST_ID_KEY, targets=ErasureTargets(schema=pg_connect.schema))
    with pg_connect() as conn:
        assert (
            conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = %s", (pg_connect.schema,)).fetchone()[0]
            == 0
        )


# -- against Postgres ------------------------------------------------------------------------


@pytest.fixture
async def landed(emulator, pg_connect) -> dict[str, list[dict[str, str]]]:
    """A day of emulator transcripts landed (masked) and "enriched" into a results table with a
    failure or two; returns the stored transcripts by conversation id."""
    store = TranscriptStore(pg_connect, schema=pg_connect.schema)
    store.ensure_schema()
    async with GatewayClient(make_config(emulator)) as client:
        source = TranscriptSource(client)
        job_id = await fulfilled_job(source, DAY, DAY + timedelta(days=1))
        stats = await land_transcripts(source, job_id, store, masker=PiiMasker())
    assert stats.transcripts > 10
    by_conversation: dict[str, list[dict[str, str]]] = {}
    with pg_connect() as conn:
        for row in conn.execute(
            "SELECT conversation_id, communication_id, transcript_id, text FROM genesys_transcripts"
        ):
            key = ":".join(row[:3])
            by_conversation.setdefault(row[0], []).append({"key": key, "text": row[3]})
    with PgVectorStore(pg_connect, table=RESULTS, schema=pg_connect.schema, dimension=384) as results:
        results.ensure_schema()
        rows = [
            ResultRow(
                id=f"r-{position}",
                content=json.dumps({"summary": item["text"]}),
                embedding=embed(item["text"], 384),
                source_id=item["key"],
                metadata={"conversation": item["key"].split(":")[0]},
            )
            for position, item in enumerate(i for items in by_conversation.values() for i in items)
        ]
        results.upsert(rows)
        first, second = list(by_conversation.values())[:2]
        results.record_failures(
            [
                FailureRow(
                    id="f-1", source_id=first[0]["key"], error_class="GatewayTimeoutError", message=first[0]["text"]
                ),
                FailureRow(id="f-2", source_id=second[0]["key"], error_class="GatewayTimeoutError", message="timeout"),
            ]
        )
    AuditChainStore(pg_connect, schema=pg_connect.schema).ensure_schema()
    return by_conversation


def traces(connect, schema: str, needles: list[str]) -> dict[str, int]:
    """For every table of ``schema``: how many rows hold any of ``needles`` in any column (each
    column read as its own text: a text column verbatim, a JSON column as JSON text)."""
    found = {}
    with connect() as conn:
        columns: dict[str, list[str]] = {}
        for table, column in conn.execute(
            "SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = %s", (schema,)
        ):
            columns.setdefault(table, []).append(column)
        for table, names in columns.items():
            row_text = sql.SQL(" || chr(31) || ").join(
                sql.SQL("coalesce({}::text, '')").format(sql.Identifier(name)) for name in names
            )
            statement = sql.SQL(
                "SELECT count(*) FROM {} WHERE EXISTS (SELECT 1 FROM unnest(%s::text[]) AS n WHERE strpos({}, n) > 0)"
            ).format(sql.Identifier(schema, table), row_text)
            found[table] = conn.execute(statement, (needles,)).fetchone()[0]
    return found


def needles_of(items: list[dict[str, str]]) -> list[str]:
    """What identifies a conversation: its ids, each transcript's key, and each whole text as the
    landing table and a failure message hold it (verbatim) and as a JSON answer quotes it (escaped)."""
    needles = {part for item in items for part in item["key"].split(":")}
    needles |= {item["key"] for item in items}
    needles |= {item["text"] for item in items} | {json.dumps(item["text"])[1:-1] for item in items}
    return sorted(needles)


def unfound(connect, schema: str, needles: list[str]) -> list[str]:
    """The needles no table holds: a scan that finds nothing must be able to find something."""
    return [needle for needle in needles if not any(traces(connect, schema, [needle]).values())]


def table_counts(connect, schema: str) -> dict[str, int]:
    with connect() as conn:
        tables = [row[0] for row in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = %s", (schema,))]
        return {
            t: conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(schema, t))).fetchone()[0]
            for t in tables
        }


async def test_erasure_removes_every_trace_in_one_transaction_and_landing_does_not_restore_it(
    landed, emulator, pg_connect
) -> None:
    schema = pg_connect.schema
    erased_id, kept_id = list(landed)[:2]
    needles = needles_of(landed[erased_id])
    assert unfound(pg_connect, schema, needles) == []
    before = traces(pg_connect, schema, needles)
    assert before["genesys_transcripts"] >= 1 and before[RESULTS] >= 1 and before[f"{RESULTS}_failures"] == 1
    counts = table_counts(pg_connect, schema)

    report = erase(
        pg_connect,
        [erased_id],
        TEST_ID_KEY,
        targets=ErasureTargets(schema=schema),
        masker=PiiMasker(),
        audit_fields={"owner": "privacy-team"},
    )

    assert not any(traces(pg_connect, schema, needles).values()), "a trace of the erased conversation is left"
    erased_rows = len(landed[erased_id])
    assert report.deleted == {
        f"{schema}.genesys_transcripts": erased_rows,
        f"{schema}.{RESULTS}": erased_rows,
        f"{schema}.{RESULTS}_failures": 1,
    }
    after = table_counts(pg_connect, schema)
    assert after["genesys_transcripts"] == counts["genesys_transcripts"] - erased_rows
    assert traces(pg_connect, schema, needles_of(landed[kept_id]))["genesys_transcripts"] >= 1  # others untouched
    assert stored_digests(pg_connect, schema=schema) == [id_digest(TEST_ID_KEY, erased_id)]
    with pg_connect() as conn:
        [record] = [row[0] for row in conn.execute("SELECT record FROM genesys_llm_audit")]
    assert record["parameters"]["operation"] == "erasure" and record["owner"] == "privacy-team"
    assert record["parameters"]["id_hmacs"] == id_digest(TEST_ID_KEY, erased_id)
    assert record["parameters"][f"deleted:{schema}.genesys_transcripts"] == erased_rows
    assert report.audit_seq == 1 and verify_chain(pg_connect, schema=schema).ok

    # A backfill of the same interval: the erased conversation is not even downloaded again.
    store = TranscriptStore(pg_connect, schema=schema)
    async with GatewayClient(make_config(emulator)) as client:
        source = TranscriptSource(client)
        job_id = await fulfilled_job(source, DAY, DAY + timedelta(days=1))
        urls_before = emulator.counters()["transcript_urls_issued"]
        tombstones = TombstoneList.load(pg_connect, TEST_ID_KEY, schema=schema)
        stats = await land_transcripts(source, job_id, store, masker=PiiMasker(), tombstones=tombstones)
    assert stats.skipped_erased == 1 and stats.summary()["skipped_erased"] == 1 and stats.rows_written == 0
    assert emulator.counters()["transcript_urls_issued"] - urls_before == stats.transcripts  # none for the erased one
    assert not any(traces(pg_connect, schema, needles).values())
    # ... and an enrichment of those rows is filtered the same way.
    with pg_connect() as conn:
        items = [{"id": row[0]} for row in conn.execute("SELECT conversation_id FROM genesys_transcripts")]
    filtered = TombstoneList.load(pg_connect, TEST_ID_KEY, schema=schema)
    assert (
        len(list(filtered.filter_items(items + [{"id": f"{erased_id}:x:y"}]))) == len(items) and filtered.skipped == 1
    )

    again = erase(pg_connect, [erased_id], TEST_ID_KEY, targets=ErasureTargets(schema=schema), vacuum=False)
    assert sum(again.deleted.values()) == 0 and again.audit_seq == 2  # idempotent, and recorded again


async def test_a_failure_midway_erases_nothing_and_records_nothing(landed, pg_connect) -> None:
    schema = pg_connect.schema
    erased_id = list(landed)[0]
    with pg_connect() as conn:  # a results table whose rows cannot be deleted, after the transcripts table
        conn.execute(sql.SQL("CREATE TABLE {} (id text, source_id text)").format(sql.Identifier(schema, "zz_locked")))
        conn.execute(
            sql.SQL("INSERT INTO {} VALUES ('x', %s)").format(sql.Identifier(schema, "zz_locked")),
            (landed[erased_id][0]["key"],),
        )
        conn.execute(
            "CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'locked'; END $$"
        )
        conn.execute(
            sql.SQL("CREATE TRIGGER refuse BEFORE DELETE ON {} FOR EACH ROW EXECUTE FUNCTION refuse()").format(
                sql.Identifier(schema, "zz_locked")
            )
        )
    counts = table_counts(pg_connect, schema)
    targets = ErasureTargets(schema=schema, results_tables=(RESULTS, "zz_locked"))
    with pytest.raises(ErasureError, match=f"at results on {schema}.zz_locked, nothing was deleted: locked"):
        erase(pg_connect, [erased_id], TEST_ID_KEY, targets=targets)
    assert table_counts(pg_connect, schema) == {**counts, "genesys_erasure_tombstones": 0}
    assert verify_chain(pg_connect, schema=schema).rows_checked == 0


def test_cli_erases_from_a_file_and_checks(landed, pg_connect, pg_server, tmp_path: Path, monkeypatch, capsys) -> None:
    schema = pg_connect.schema
    erased = list(landed)[:2]
    ids_file = tmp_path / "request.txt"
    ids_file.write_text("\n".join(erased) + "\n\n")
    monkeypatch.setenv("AIRFLOW_VAR_GENESYS_LLM_ID_KEY", TEST_ID_KEY_TEXT)
    common = ["--conninfo", pg_server.conninfo, "--schema", schema, "--ids-file", str(ids_file)]
    assert cli(["check", *common]) == 1
    assert json.loads(capsys.readouterr().out) == {"ids": 2, "erased": 0, "not_erased": 2}
    assert cli(["erase", *common]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["ids"] == 2 and summary["by_table"][f"{schema}.genesys_transcripts"] == sum(
        len(landed[i]) for i in erased
    )
    assert not any(traces(pg_connect, schema, needles_of(landed[erased[0]] + landed[erased[1]])).values())
    assert cli(["check", *common]) == 0
    assert cli(["check", "--conninfo", pg_server.conninfo, "--schema", schema, list(landed)[2]]) == 1
    capsys.readouterr()

    monkeypatch.delenv("AIRFLOW_VAR_GENESYS_LLM_ID_KEY")
    assert cli(["erase", *common]) == 2
    assert "AIRFLOW_VAR_GENESYS_LLM_ID_KEY" in capsys.readouterr().err


def test_sql_matching_takes_whole_id_parts_never_a_longer_sibling(pg_connect) -> None:
    schema = pg_connect.schema
    source_ids = ["conv-1", "conv-1:a:b", "conv-10:a:b", "conv-1x", "xconv-1", "conv-2:a:b", "conv-2:ab", None, "a%:b"]
    with PgVectorStore(pg_connect, table=RESULTS, schema=schema, dimension=3, index="none") as store:
        store.ensure_schema()
        store.upsert(
            [
                ResultRow(id=f"r{n}", content="{}", embedding=[1.0, 0.0, 0.0], source_id=s)
                for n, s in enumerate(source_ids)
            ]
        )
    report = erase(
        pg_connect, ["conv-1", "conv-2:a", "a_"], TEST_ID_KEY, targets=ErasureTargets(schema=schema), vacuum=False
    )
    with pg_connect() as conn:
        left = sorted(
            row[0] or ""
            for row in conn.execute(sql.SQL("SELECT source_id FROM {}").format(sql.Identifier(schema, RESULTS)))
        )
    assert left == sorted(["conv-10:a:b", "conv-1x", "xconv-1", "conv-2:ab", "", "a%:b"])
    assert report.deleted[f"{schema}.{RESULTS}"] == 3


def test_an_id_that_masking_alters_never_deletes_other_rows_that_share_its_placeholder(pg_connect) -> None:
    """A phone-number-like id is stored masked as ``[REDACTED:PHONE]``, like every other such id:
    erasing it must not take the other conversations' rows along; the report says why."""
    schema = pg_connect.schema
    phone_id, masked = "415-555-0132", PiiMasker().mask("415-555-0132").text
    assert masked != phone_id
    with PgVectorStore(pg_connect, table=RESULTS, schema=schema, dimension=3, index="none") as store:
        store.ensure_schema()
        rows = [f"{masked}:a:b", f"{masked}:c:d", f"{phone_id}:e:f"]
        store.upsert(
            [ResultRow(id=f"r{n}", content="{}", embedding=[1.0, 0.0, 0.0], source_id=s) for n, s in enumerate(rows)]
        )
    report = erase(pg_connect, [phone_id], TEST_ID_KEY, targets=ErasureTargets(schema=schema), masker=PiiMasker())
    assert report.deleted[f"{schema}.{RESULTS}"] == 1 and report.summary()["ids_altered_by_masking"] == 1
    with pg_connect() as conn:
        [record] = [row[0] for row in conn.execute("SELECT record FROM genesys_llm_audit")]
    assert record["parameters"]["ids_altered_by_masking"] == 1 and phone_id not in json.dumps(record)
