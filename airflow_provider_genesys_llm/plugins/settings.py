"""The ``[genesys_llm]`` section of Airflow's configuration, read by the UI plugin and the operators.

Keys (all optional; environment variables ``AIRFLOW__GENESYS_LLM__<KEY>`` work as usual):

``postgres_conn_id`` (``genesys_pgvector``)
    the Postgres connection holding the results, failures and audit tables.
``results_tables`` (``transcript_insights``)
    comma-separated ``[schema.]table`` names the page may read; nothing else is ever queried.
``audit_table`` (``genesys_llm_audit``)
    the audit hash chain.
``search_conn_id`` (``genesys_llm_default``)
    the ``genesys_llm`` connection whose embeddings endpoint turns a search query into a vector.
``prices``
    JSON, per model: ``{"genesys-llm-v2": {"prompt_per_1k": 0.5, "completion_per_1k": 1.5}}``. Without
    it no cost is shown or emitted: a guessed price would be worse than none.
``currency`` (``USD``)
    the label printed next to costs.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

SECTION = "genesys_llm"
DEFAULT_POSTGRES_CONN_ID = "genesys_pgvector"
DEFAULT_RESULTS_TABLES = "transcript_insights"
DEFAULT_AUDIT_TABLE = "genesys_llm_audit"
DEFAULT_SEARCH_CONN_ID = "genesys_llm_default"
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


class SettingsError(ValueError):
    """A ``[genesys_llm]`` option has a value the plugin cannot use; the message names the key and the fix."""


@dataclass(frozen=True)
class Price:
    prompt_per_1k: float
    completion_per_1k: float

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        return prompt_tokens / 1000 * self.prompt_per_1k + completion_tokens / 1000 * self.completion_per_1k


@dataclass(frozen=True)
class TableName:
    schema: str
    table: str

    @classmethod
    def parse(cls, text: str, key: str = "results_tables") -> TableName:
        schema, _, table = text.strip().rpartition(".")
        schema = schema or "public"
        for part in (schema, table):
            if not _IDENTIFIER.match(part):
                raise SettingsError(
                    f"[{SECTION}] {key}: {text.strip()!r} is not a [schema.]table name of plain identifiers"
                )
        return cls(schema, table)

    def __str__(self) -> str:
        return f"{self.schema}.{self.table}"


@dataclass(frozen=True)
class Settings:
    postgres_conn_id: str = DEFAULT_POSTGRES_CONN_ID
    results_tables: tuple[TableName, ...] = (TableName("public", DEFAULT_RESULTS_TABLES),)
    audit_table: TableName = TableName("public", DEFAULT_AUDIT_TABLE)
    search_conn_id: str = DEFAULT_SEARCH_CONN_ID
    prices: dict[str, Price] = field(default_factory=dict)
    currency: str = "USD"

    def table(self, name: str) -> TableName:
        """The configured table called ``name`` (``schema.table`` or ``table``); anything else is refused."""
        for table in self.results_tables:
            if name in (str(table), table.table):
                return table
        raise SettingsError(
            f"table {name[:80]!r} is not in [{SECTION}] results_tables ({', '.join(map(str, self.results_tables))})"
        )

    def cost(self, model: str | None, prompt_tokens: int, completion_tokens: int) -> float | None:
        price = self.prices.get(model or "")
        return None if price is None else round(price.cost(prompt_tokens, completion_tokens), 6)


def parse_prices(text: str | None) -> dict[str, Price]:
    if not text or not text.strip():
        return {}
    try:
        raw: Any = json.loads(text)
        return {str(model): Price(float(p["prompt_per_1k"]), float(p["completion_per_1k"])) for model, p in raw.items()}
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise SettingsError(
            f"[{SECTION}] prices must be JSON like "
            '{"genesys-llm-v2": {"prompt_per_1k": 0.5, "completion_per_1k": 1.5}}: '
            f"{type(exc).__name__}: {exc}"
        ) from None


def load_settings() -> Settings:
    """The current configuration (read on every call: tests and operators change it through the environment)."""
    from airflow.sdk import conf

    def get(key: str, default: str) -> str:
        return str(conf.get(SECTION, key, fallback=default) or default)

    tables = tuple(
        TableName.parse(name) for name in get("results_tables", DEFAULT_RESULTS_TABLES).split(",") if name.strip()
    )
    return Settings(
        postgres_conn_id=get("postgres_conn_id", DEFAULT_POSTGRES_CONN_ID),
        results_tables=tables,
        audit_table=TableName.parse(get("audit_table", DEFAULT_AUDIT_TABLE), "audit_table"),
        search_conn_id=get("search_conn_id", DEFAULT_SEARCH_CONN_ID),
        prices=parse_prices(conf.get(SECTION, "prices", fallback="")),
        currency=get("currency", "USD"),
    )
