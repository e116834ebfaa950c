"""Airflow-free batch engine: items in, validated completions out, results to a sink in chunks.

The names below are the engine's entry points (the runner, its settings and its statistics, and
the item readers); the operators and scripts use these, and the modules hold the rest.
"""

from .items import InvalidItem, iter_jsonl, iter_query
from .output_schema import OutputSchema, OutputSchemaError
from .runner import (
    BATCH_FATAL_ERRORS,
    BatchRunner,
    BatchSettings,
    BatchTimeoutError,
    Embedder,
    ResultSink,
    RunContext,
)
from .stats import BatchStats

__all__ = [
    "BATCH_FATAL_ERRORS",
    "BatchRunner",
    "BatchSettings",
    "BatchStats",
    "BatchTimeoutError",
    "Embedder",
    "InvalidItem",
    "OutputSchema",
    "OutputSchemaError",
    "ResultSink",
    "RunContext",
    "iter_jsonl",
    "iter_query",
]
