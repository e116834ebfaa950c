"""Landing table for Genesys Cloud transcripts, keyed by (conversation, communication, transcript).

Re-landing an interval is idempotent: rows whose content did not change are not rewritten, so a
backfill re-run costs reads only.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from typing import Any

import psycopg
from psycopg import sql
from psycopg.types.json import Jsonb

from ..client.transcripts import TranscriptRecord
from ..governance.store_errors import StoreError, wrapped_errors

_COLUMNS = (
    "conversation_id",
    "communication_id",
    "transcript_id",
    "language",
    "conversation_start",
    "text",
    "raw",
    "content_hash",
)


class TranscriptStoreError(StoreError):
    """A database operation of the transcript store failed; the message never quotes a transcript."""


class TranscriptStore:
    """The landing table; psycopg errors become ``TranscriptStoreError``."""

    def __init__(
        self,
        connect: Callable[[], psycopg.Connection[Any]],
        *,
        table: str = "genesys_transcripts",
        schema: str = "public",
    ) -> None:
        self._connect = connect
        self.table = table
        self.schema = schema
        self._name = sql.Identifier(schema, table)
        self._label = f"{schema}.{table}"

    def ensure_schema(self) -> None:
        with wrapped_errors(TranscriptStoreError, "ensure_schema", self._label), self._connect() as conn:
            conn.execute(
                sql.SQL(
                    "CREATE TABLE IF NOT EXISTS {} ("
                    " conversation_id text NOT NULL, communication_id text NOT NULL, transcript_id text NOT NULL,"
                    " language text, conversation_start timestamptz, text text NOT NULL, raw jsonb NOT NULL,"
                    " content_hash text NOT NULL, landed_at timestamptz NOT NULL DEFAULT now(),"
                    " updated_at timestamptz NOT NULL DEFAULT now(),"
                    " PRIMARY KEY (conversation_id, communication_id, transcript_id))"
                ).format(self._name)
            )
            conn.execute(
                sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} (conversation_start)").format(
                    sql.Identifier(f"{self.table}_start_idx"), self._name
                )
            )

    def upsert(self, records: Sequence[TranscriptRecord]) -> int:
        """Insert or update in one transaction; returns rows inserted or changed."""
        if not records:
            return 0
        statement = sql.SQL(
            "INSERT INTO {table} ({columns}) VALUES ({values}) "
            "ON CONFLICT (conversation_id, communication_id, transcript_id) DO UPDATE SET "
            "language = EXCLUDED.language, conversation_start = EXCLUDED.conversation_start, text = EXCLUDED.text, "
            "raw = EXCLUDED.raw, content_hash = EXCLUDED.content_hash, updated_at = now() "
            "WHERE {table}.content_hash IS DISTINCT FROM EXCLUDED.content_hash"
        ).format(
            table=self._name,
            columns=sql.SQL(", ").join(map(sql.Identifier, _COLUMNS)),
            values=sql.SQL(", ").join(sql.Placeholder() * len(_COLUMNS)),
        )
        rows = [_values(record) for record in records]
        with (
            wrapped_errors(TranscriptStoreError, "upsert", self._label),
            self._connect() as conn,
            conn.cursor() as cursor,
        ):
            cursor.executemany(statement, rows, returning=False)
            return max(cursor.rowcount, 0)

    def count(self) -> int:
        with wrapped_errors(TranscriptStoreError, "count", self._label), self._connect() as conn:
            row = conn.execute(sql.SQL("SELECT count(*) FROM {}").format(self._name)).fetchone()
            return int(row[0]) if row else 0


def _values(record: TranscriptRecord) -> tuple[object, ...]:
    raw = json.dumps(record.raw, sort_keys=True, separators=(",", ":"))
    digest = hashlib.sha256((record.text + "\0" + raw).encode()).hexdigest()
    return (
        record.conversation_id,
        record.communication_id,
        record.transcript_id,
        record.language,
        record.conversation_start,
        record.text,
        Jsonb(record.raw),
        digest,
    )
