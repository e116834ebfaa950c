"""Sinks that store completion results.

Nothing here imports Airflow: ``PgVectorStore`` can be used, tested and benchmarked
with a plain psycopg connection; ``hooks.postgres`` builds one from an Airflow connection.
"""

from .output_columns import OutputColumnError
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
    "OutputColumnError",
    "PgVectorStore",
    "PgVectorStoreError",
    "ResultRow",
    "SchemaMismatchError",
    "content_hash",
]
