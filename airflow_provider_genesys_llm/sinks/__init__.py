"""Sinks that store completion results.

Nothing here imports Airflow at module level: ``PgVectorStore`` can be used, tested and benchmarked
with a plain psycopg connection, and ``PgVectorStore.from_airflow`` is the one Airflow entry point.
"""

from .pgvector import (
    FailureRow,
    Location,
    Match,
    PgVectorStore,
    PgVectorStoreError,
    ResultRow,
    SchemaMismatchError,
    content_hash,
)

__all__ = [
    "FailureRow",
    "Location",
    "Match",
    "PgVectorStore",
    "PgVectorStoreError",
    "ResultRow",
    "SchemaMismatchError",
    "content_hash",
]
