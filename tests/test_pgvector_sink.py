"""PgVectorStore against a real Postgres with pgvector (pgserver); no mocks."""

from __future__ import annotations

import dataclasses
import math
import random
import time
import traceback
from array import array
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest
from fixtures_postgres import PgConnect, PgServer, export_airflow_connection
from pgvector import Vector
from pgvector.psycopg import register_vector

from airflow_provider_genesys_llm.hooks.postgres import pgvector_store_from_airflow
from airflow_provider_genesys_llm.sinks import FailureRow, PgVectorStore, PgVectorStoreError, ResultRow
from airflow_provider_genesys_llm.sinks import pgvector as sink


@pytest.fixture
def store(pg_connect: PgConnect) -> Iterator[PgVectorStore]:
    with PgVectorStore(pg_connect, table="results", schema=pg_connect.schema, dimension=3) as store:
        store.ensure_schema()
        yield store


def rows(count: int) -> list[ResultRow]:
    return [
        ResultRow(id=f"r{i}", content=f"answer {i}", embedding=[1.0, float(i), 0.5], model="m1", source_id=f"s{i}")
        for i in range(count)
    ]


def query(pg_connect: PgConnect, statement: str, *params: object) -> list[tuple[object, ...]]:
    with pg_connect() as conn:
        return conn.execute(statement, params).fetchall()


def hnsw_indexes(pg_connect: PgConnect) -> list[tuple[object, ...]]:
    return query(
        pg_connect,
        "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = %s AND indexdef LIKE '%%USING hnsw%%'",
        pg_connect.schema,
    )


def test_ensure_schema_is_idempotent(store: PgVectorStore, pg_connect: PgConnect) -> None:
    store.ensure_schema()
    store.ensure_schema()

    tables = query(pg_connect, "SELECT tablename FROM pg_tables WHERE schemaname = %s ORDER BY 1", pg_connect.schema)
    assert tables == [("results",), ("results_failures",)]
    [(name, definition)] = hnsw_indexes(pg_connect)
    assert name == "results_embedding_hnsw"
    assert "vector_cosine_ops" in str(definition)


def test_ensure_schema_rejects_another_dimension(store: PgVectorStore, pg_connect: PgConnect) -> None:
    with PgVectorStore(pg_connect, table="results", schema=pg_connect.schema, dimension=4) as other:
        with pytest.raises(ValueError, match="already exists with 3-dimensional embeddings, not 4"):
            other.ensure_schema()


def test_upserting_the_same_rows_again_writes_nothing(store: PgVectorStore, pg_connect: PgConnect) -> None:
    batch = rows(50)

    assert store.upsert(batch) == 50
    before = query(pg_connect, "SELECT id, updated_at FROM results ORDER BY id")
    assert store.upsert(batch) == 0

    assert store.count() == 50
    assert query(pg_connect, "SELECT id, updated_at FROM results ORDER BY id") == before


def test_changed_content_updates_the_row_and_updated_at(store: PgVectorStore, pg_connect: PgConnect) -> None:
    batch = rows(3)
    store.upsert(batch)
    [(created, updated)] = query(pg_connect, "SELECT created_at, updated_at FROM results WHERE id = 'r1'")

    changed = dataclasses.replace(batch[1], content="a better answer", content_hash="")
    assert store.upsert([batch[0], changed, batch[2]]) == 1

    [(content, created_after, updated_after)] = query(
        pg_connect, "SELECT content, created_at, updated_at FROM results WHERE id = 'r1'"
    )
    assert content == "a better answer"
    assert created_after == created
    assert updated_after > updated


def test_duplicate_ids_in_one_batch_keep_the_last(store: PgVectorStore, pg_connect: PgConnect) -> None:
    first, last = ResultRow("r", "first", [1.0, 0.0, 0.0]), ResultRow("r", "last", [0.0, 1.0, 0.0])

    assert store.upsert([first, last]) == 1
    assert query(pg_connect, "SELECT content FROM results") == [("last",)]


def test_content_hash_is_computed_unless_given() -> None:
    row = ResultRow("r", "text", [1.0], model="m", prompt_id="p", temperature=0.2)

    assert row.content_hash == sink.content_hash("text", "m", "p", 0.2)
    assert row.content_hash != sink.content_hash("text", "m", "p", 0.3)
    assert ResultRow("r", "text", [1.0], content_hash="mine").content_hash == "mine"


def test_copy_columns_follow_the_row_fields() -> None:
    assert list(sink._RESULT_COPY_TYPES) == [f.name for f in dataclasses.fields(ResultRow)]


def test_a_vector_round_trips_exactly(pg_connect: PgConnect) -> None:
    values = array("f", (random.Random(7).uniform(-1, 1) for _ in range(384))).tolist()  # float32-exact

    assert sink._encode_vector(values, 384) == Vector(values).to_binary()
    with PgVectorStore(pg_connect, table="wide", schema=pg_connect.schema, dimension=384, index="none") as store:
        store.ensure_schema()
        inputs = [values, tuple(values), array("f", values), Vector(values)]
        store.upsert([ResultRow(f"r{i}", "text", embedding) for i, embedding in enumerate(inputs)])
    with pg_connect() as conn:
        register_vector(conn)
        stored = conn.cursor(binary=True).execute("SELECT embedding FROM wide ORDER BY id").fetchall()
    assert [vector.to_list() for (vector,) in stored] == [values] * len(inputs)


def test_a_wrong_dimension_is_rejected_with_its_position(store: PgVectorStore) -> None:
    bad = [*rows(2), ResultRow("bad", "text", [1.0, 2.0])]

    with pytest.raises(ValueError, match=r"upsert into .*results: row 2 of 3: .*2 dimensions, the table stores 3"):
        store.upsert(bad)
    assert store.count() == 0


def test_a_json_value_jsonb_refuses_is_rejected_with_its_position(store: PgVectorStore) -> None:
    bad = ResultRow("bad", "text", [1.0, 0.0, 0.0], timings={"total_ms": math.nan})

    with pytest.raises(ValueError, match=r"row 1 of 2: Out of range float values"):
        store.upsert([*rows(1), bad])


def test_an_id_stored_concurrently_after_the_lookup_is_merged(store: PgVectorStore, pg_connect: PgConnect) -> None:
    with pg_connect() as other, pg_connect() as observer:
        other.execute(
            "INSERT INTO results (id, content, embedding, content_hash) VALUES ('r0', 'theirs', '[0,0,1]', 'theirs')"
        )  # not committed yet: the store's lookup misses r0, then its COPY waits for r0's key
        with ThreadPoolExecutor(1) as pool:
            upsert = pool.submit(store.upsert, rows(3))
            deadline = time.monotonic() + 30
            while not observer.execute("SELECT 1 FROM pg_stat_activity WHERE wait_event_type = 'Lock'").fetchone():
                assert time.monotonic() < deadline, "the upsert never waited for the concurrent insert"
                time.sleep(0.05)
            other.commit()

            assert upsert.result(timeout=30) == 3
    assert query(pg_connect, "SELECT id, content FROM results ORDER BY id") == [
        ("r0", "answer 0"),
        ("r1", "answer 1"),
        ("r2", "answer 2"),
    ]


def test_existing_ids_in_batches(store: PgVectorStore, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sink, "_ID_BATCH", 3)
    store.upsert(rows(10))

    assert store.existing_ids(["r1", "r9", "nope", "r1", "r5", "r7", "other"]) == {"r1", "r5", "r7", "r9"}
    assert store.existing_ids([]) == set()


def test_failures_are_recorded_and_resolved_by_a_success(store: PgVectorStore, pg_connect: PgConnect) -> None:
    store.record_failures(
        [FailureRow("r0", "GatewayTimeoutError", "timed out", attempts=3), FailureRow("r1", "Boom", "boom")]
    )
    store.record_failures([FailureRow("r1", "GatewayRateLimitError", "slow down", attempts=2)])

    failures = "SELECT id, error_class, attempts, resolved FROM results_failures ORDER BY id"
    assert query(pg_connect, failures) == [
        ("r0", "GatewayTimeoutError", 3, False),
        ("r1", "GatewayRateLimitError", 2, False),
    ]
    store.upsert(rows(1))
    assert query(pg_connect, failures) == [
        ("r0", "GatewayTimeoutError", 3, True),
        ("r1", "GatewayRateLimitError", 2, False),
    ]


def test_similarity_search_finds_the_nearest_and_honours_filters(store: PgVectorStore) -> None:
    store.upsert(
        [
            ResultRow("x", "along x", [1.0, 0.0, 0.0], model="a", metadata={"lang": "en"}),
            ResultRow("near-x", "almost x", [0.9, 0.1, 0.0], model="b"),
            ResultRow("y", "along y", [0.0, 1.0, 0.0], model="b"),
        ]
    )

    nearest = store.similarity_search([2.0, 0.0, 0.0], k=2)
    assert [m.id for m in nearest] == ["x", "near-x"]
    assert nearest[0].distance == pytest.approx(0.0, abs=1e-6)
    assert (nearest[0].content, nearest[0].metadata) == ("along x", {"lang": "en"})

    filtered = store.similarity_search([1.0, 0.0, 0.0], k=5, filters={"model": "b"})
    assert [m.id for m in filtered] == ["near-x", "y"]
    assert store.similarity_search([1.0, 0.0, 0.0], filters={"source_id": None, "model": "a"})[0].id == "x"


def test_an_unknown_filter_column_is_rejected(store: PgVectorStore) -> None:
    with pytest.raises(ValueError, match=r"cannot filter .*results on \['content; DROP', 'nope'\]"):
        store.similarity_search([1.0, 0.0, 0.0], filters={"nope": 1, "content; DROP": 2, "model": "a"})


def test_deferred_mode_builds_the_index_at_the_end(pg_connect: PgConnect) -> None:
    with PgVectorStore(pg_connect, table="bulk", schema=pg_connect.schema, dimension=3, index="deferred") as store:
        store.ensure_schema()
        store.upsert(rows(20))
        assert hnsw_indexes(pg_connect) == []

        store.build_index()
        store.build_index()
        [(name, definition)] = hnsw_indexes(pg_connect)
        assert name == "bulk_embedding_hnsw"
        assert "USING hnsw (embedding vector_cosine_ops)" in str(definition)
        assert store.similarity_search([1.0, 19.0, 0.5], k=1)[0].id == "r19"

        store.drop_index()
        assert hnsw_indexes(pg_connect) == []


def test_build_index_replaces_an_invalid_index(pg_connect: PgConnect) -> None:
    with PgVectorStore(pg_connect, table="bulk", schema=pg_connect.schema, dimension=3, index="deferred") as store:
        store.ensure_schema()
        store.build_index(concurrently=False)
        with pg_connect() as conn:  # what a failed CREATE INDEX CONCURRENTLY leaves behind
            conn.execute("UPDATE pg_index SET indisvalid = false WHERE indexrelid = 'bulk_embedding_hnsw'::regclass")

        store.build_index()

    assert query(pg_connect, "SELECT indisvalid FROM pg_index WHERE indexrelid = 'bulk_embedding_hnsw'::regclass") == [
        (True,)
    ]


def test_odd_identifiers_are_quoted(pg_connect: PgConnect) -> None:
    table = 'Results-2026 "final"; drop'
    with PgVectorStore(pg_connect, table=table, schema=pg_connect.schema, dimension=3) as store:
        store.ensure_schema()
        assert store.upsert(rows(5)) == 5
        store.record_failures([FailureRow("r9", "Boom", "boom")])
        assert store.count() == 5
        assert store.existing_ids(["r0", "r9"]) == {"r0"}
        assert store.similarity_search([1.0, 4.0, 0.5], k=1)[0].id == "r4"
        store.build_index()
        assert store.asset_uri.endswith(f"/{pg_connect.schema}/Results-2026%20%22final%22%3B%20drop")

    names = query(pg_connect, "SELECT tablename FROM pg_tables WHERE schemaname = %s ORDER BY 1", pg_connect.schema)
    assert names == [(table,), (table + "_failures",)]


def test_errors_name_the_table_and_never_carry_row_contents(store: PgVectorStore, pg_connect: PgConnect) -> None:
    with pg_connect() as conn:
        conn.execute("ALTER TABLE results ADD CONSTRAINT no_secrets CHECK (content NOT LIKE '%%SECRET%%')")
    secret = ResultRow("r", "the SECRET answer", [1.0, 0.0, 0.0])

    with pytest.raises(PgVectorStoreError) as caught:
        store.upsert([secret])

    error = caught.value
    assert str(error).startswith(f"upsert on {pg_connect.schema}.results failed: CheckViolation")
    assert error.sqlstate == "23514"
    assert "SECRET" not in "".join(traceback.format_exception(error))
    assert store.upsert([dataclasses.replace(secret, content="fine")]) == 1  # the store is still usable


def test_options_are_checked_early() -> None:
    def connect() -> psycopg.Connection[tuple[object, ...]]:
        raise AssertionError("must not connect")

    with pytest.raises(ValueError, match="HNSW index on more than 2000"):
        PgVectorStore(connect, table="t", dimension=3072)
    with pytest.raises(ValueError, match="table must be 1 to 48 bytes"):
        PgVectorStore(connect, table="t" * 49, dimension=3)
    assert PgVectorStore(connect, table="t", dimension=3).upsert([]) == 0


def test_asset_uri_of_a_socket_connection(store: PgVectorStore, pg_server: PgServer, pg_connect: PgConnect) -> None:
    assert store.asset_uri == f"postgres://localhost:{pg_server.port}/{pg_server.dbname}/{pg_connect.schema}/results"


def test_from_airflow_uses_the_env_connection(
    pg_server: PgServer, pg_connect: PgConnect, monkeypatch: pytest.MonkeyPatch
) -> None:
    export_airflow_connection(monkeypatch, "pgvector_test", pg_server)

    with pgvector_store_from_airflow("pgvector_test", table="results", schema=pg_connect.schema, dimension=3) as store:
        assert store.asset_uri == (
            f"postgres://localhost:{pg_server.port}/{pg_server.dbname}/{pg_connect.schema}/results"
        )
        store.ensure_schema()
        assert store.upsert(rows(4)) == 4
        assert store.count() == 4

    assert query(pg_connect, "SELECT count(*) FROM results") == [(4,)]


def test_rows_awaiting_their_embedding_are_kept_completed_and_never_searched(
    store: PgVectorStore, pg_connect: PgConnect
) -> None:
    paid = [ResultRow(f"p{i}", f"paid answer {i}", None, source_id=f"s{i}") for i in range(3)]
    assert store.upsert([*rows(2), *paid]) == 5
    assert store.upsert(paid) == 0  # stored already: nothing rewritten

    assert store.awaiting_embedding(["p0", "p1", "p2", "r0", "missing"]) == {
        "p0": "paid answer 0",
        "p1": "paid answer 1",
        "p2": "paid answer 2",
    }
    assert store.existing_ids(["p0", "r0"]) == {"p0", "r0"}
    assert {m.id for m in store.similarity_search([1.0, 0.0, 0.5], k=10)} == {"r0", "r1"}

    assert store.set_embeddings([("p0", [0.0, 0.0, 1.0]), ("p1", [0.0, 1.0, 0.0]), ("r0", [9.0, 9.0, 9.0])]) == 2
    assert store.set_embeddings([("p0", [1.0, 1.0, 1.0])]) == 0  # a stored vector is never replaced
    assert store.awaiting_embedding(["p0", "p1", "p2"]) == {"p2": "paid answer 2"}
    assert store.similarity_search([0.0, 0.0, 1.0], k=1)[0].id == "p0"
    assert query(pg_connect, "SELECT embedding::text FROM results WHERE id = 'r0'") == [("[1,0,0.5]",)]

    embedded = dataclasses.replace(paid[2], embedding=[0.5, 0.5, 0.0])
    assert store.upsert([embedded]) == 1  # a complete row replaces the one awaiting its vector
    assert store.awaiting_embedding(["p2"]) == {}


def test_a_vector_of_the_wrong_size_changes_nothing(store: PgVectorStore) -> None:
    store.upsert([ResultRow("p", "paid", None)])

    with pytest.raises(sink.SchemaMismatchError, match=r"vector 1 of 2: the embedding has 2 dimensions"):
        store.set_embeddings([("p", [1.0, 0.0, 0.0]), ("p", [1.0, 0.0])])
    assert store.awaiting_embedding(["p"]) == {"p": "paid"}
    assert not sink.SchemaMismatchError.transient


def test_a_table_created_before_the_awaiting_state_is_migrated(pg_connect: PgConnect) -> None:
    with pg_connect() as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        conn.execute(
            "CREATE TABLE legacy (id text PRIMARY KEY, source_id text, content text, embedding vector(3) NOT NULL, "
            "model text, prompt_id text, temperature double precision, finish_reason text, usage jsonb, "
            "timings jsonb, request_id text, correlation_id text, dag_id text, task_id text, run_id text, "
            "content_hash text NOT NULL, metadata jsonb, created_at timestamptz NOT NULL DEFAULT now(), "
            "updated_at timestamptz NOT NULL DEFAULT now())"
        )
    with PgVectorStore(pg_connect, table="legacy", schema=pg_connect.schema, dimension=3, index="none") as store:
        store.ensure_schema()
        assert store.upsert([ResultRow("p", "paid", None)]) == 1
    assert query(pg_connect, "SELECT count(*) FROM legacy WHERE embedding IS NULL") == [(1,)]


def test_a_schema_qualified_table_name_is_refused_before_connecting() -> None:
    def connect() -> psycopg.Connection[tuple[object, ...]]:
        raise AssertionError("must not connect")

    with pytest.raises(ValueError, match=r"pass schema='analytics', table='insights'"):
        PgVectorStore(connect, table="analytics.insights", dimension=3)


def test_store_errors_say_whether_a_retry_can_help(store: PgVectorStore, pg_connect: PgConnect) -> None:
    with pg_connect() as conn:
        conn.execute("ALTER TABLE results ADD CONSTRAINT short CHECK (length(content) < 5)")
    with pytest.raises(PgVectorStoreError) as refused:
        store.upsert([ResultRow("r", "too long", None)])
    assert (refused.value.sqlstate, refused.value.transient) == ("23514", False)

    with pg_connect() as conn:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE pid <> pg_backend_pid() "
            "AND datname = current_database() AND backend_type = 'client backend'"
        )
    with pytest.raises(PgVectorStoreError) as dropped:
        store.upsert([ResultRow("r", "ok", None)])
    assert dropped.value.transient
    assert store.upsert([ResultRow("r", "ok", None)]) == 1  # the store reconnects
