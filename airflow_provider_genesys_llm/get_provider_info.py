"""Provider metadata for Airflow's provider manager.

Airflow calls this while loading its own configuration, so it must not import Airflow
(importing ``airflow.sdk`` here caused a circular import; see
docs/operations.md#get_provider_info-must-not-import-airflow).

The UI plugin is not listed under a ``plugins`` key here: Airflow 3.3 loads provider-info plugins only
when ``[core] lazy_discover_providers`` is ``False`` (default ``True``). It is registered with the
``airflow.plugins`` entry point instead (pyproject.toml), which every Airflow component loads; listing
it in both places would load it twice where lazy discovery is off. Its settings are the ``config``
section below, so ``airflow config list`` documents them.
"""

from __future__ import annotations

from typing import Any

_NULLABLE_STRING = {"type": ["string", "null"]}


def _option(description: str, default: str | None, example: str | None = None) -> dict[str, Any]:
    return {
        "description": description,
        "version_added": "0.1.0",
        "type": "string",
        "example": example,
        "default": default,
    }


#: ``[genesys_llm]``: what the UI plugin reads (plugins/settings.py holds the same defaults).
_PLUGIN_CONFIG = {
    "genesys_llm": {
        "description": "The Genesys LLM page in Airflow's UI, and cost in the operators' asset events.",
        "options": {
            "postgres_conn_id": _option("Postgres connection with the results and audit tables.", "genesys_pgvector"),
            "results_tables": _option("Comma-separated [schema.]table names the page may read.", "transcript_insights"),
            "audit_table": _option("The audit hash chain table.", "genesys_llm_audit"),
            "search_conn_id": _option("genesys_llm connection that embeds search queries.", "genesys_llm_default"),
            "prices": _option(
                "JSON prices per model; without it no cost is shown.",
                None,
                '{"genesys-llm-v2": {"prompt_per_1k": 0.5, "completion_per_1k": 1.5}}',
            ),
            "currency": _option("Label printed next to costs.", "USD"),
        },
    }
}


def get_provider_info() -> dict[str, Any]:
    return {
        "package-name": "airflow-provider-genesys-llm",
        "name": "Genesys Cloud LLM Gateway",
        "description": "Run Genesys Cloud LLM Gateway completions as scheduled, auditable pipeline steps.",
        "versions": ["0.1.0"],
        "integrations": [
            {
                "integration-name": "Genesys Cloud LLM Gateway",
                "external-doc-url": "https://developer.genesys.cloud/",
                "tags": ["service"],
            }
        ],
        "operators": [
            {
                "integration-name": "Genesys Cloud LLM Gateway",
                "python-modules": [
                    "airflow_provider_genesys_llm.operators.completion",
                    "airflow_provider_genesys_llm.operators.batch",
                    "airflow_provider_genesys_llm.operators.transcripts",
                    "airflow_provider_genesys_llm.operators.erasure",
                ],
            }
        ],
        "sensors": [
            {
                "integration-name": "Genesys Cloud LLM Gateway",
                "python-modules": [
                    "airflow_provider_genesys_llm.sensors.gateway",
                    "airflow_provider_genesys_llm.sensors.conversation_job",
                ],
            }
        ],
        "triggers": [
            {
                "integration-name": "Genesys Cloud LLM Gateway",
                "python-modules": [
                    "airflow_provider_genesys_llm.triggers.gateway",
                    "airflow_provider_genesys_llm.triggers.conversation_job",
                ],
            }
        ],
        "config": _PLUGIN_CONFIG,
        "task-decorators": [
            {
                "class-name": "airflow_provider_genesys_llm.decorators.genesys_llm.genesys_llm_task",
                "name": "genesys_llm",
            }
        ],
        "notifications": ["airflow_provider_genesys_llm.callbacks.audit.GenesysAuditNotifier"],
        "hooks": [
            {
                "integration-name": "Genesys Cloud LLM Gateway",
                "python-modules": ["airflow_provider_genesys_llm.hooks.genesys_llm"],
            }
        ],
        "connection-types": [
            {
                "hook-class-name": "airflow_provider_genesys_llm.hooks.genesys_llm.GenesysLLMHook",
                "hook-name": "Genesys Cloud LLM Gateway",
                "connection-type": "genesys_llm",
                "conn-fields": {
                    "region": {
                        "label": "Region",
                        "description": "Genesys Cloud domain (mypurecloud.com) or SDK region key (us_east_1)",
                        "schema": _NULLABLE_STRING,
                    },
                    "api_base_url": {"label": "API base URL (overrides region)", "schema": _NULLABLE_STRING},
                    "login_base_url": {"label": "Login (OAuth) base URL", "schema": _NULLABLE_STRING},
                    "stream_base_url": {"label": "WebSocket base URL", "schema": _NULLABLE_STRING},
                    "scopes": {
                        "label": "OAuth scopes",
                        "description": "Space-separated; empty asks for all four gateway scopes",
                        "schema": _NULLABLE_STRING,
                    },
                    "transport": {
                        "label": "Transport",
                        "schema": {
                            "type": ["string", "null"],
                            "enum": ["websocket", "sse", None],
                            "default": "websocket",
                        },
                    },
                    "model": {
                        "label": "Default model",
                        "schema": {"type": ["string", "null"], "default": "genesys-llm-v2"},
                    },
                    "max_concurrency": {
                        "label": "Max concurrent streams",
                        "schema": {"type": ["integer", "null"], "default": 10},
                    },
                    "requests_per_minute": {
                        "label": "Requests per minute",
                        "schema": {"type": ["number", "null"], "default": 300},
                    },
                    "timeout_seconds": {
                        "label": "Timeout per attempt (s)",
                        "schema": {"type": ["number", "null"], "default": 300},
                    },
                    "verify_ssl": {
                        "label": "Verify TLS certificates",
                        "schema": {"type": ["boolean", "null"], "default": True},
                    },
                },
                "ui-field-behaviour": {
                    "hidden-fields": ["schema", "port", "host"],
                    "relabeling": {"login": "Client ID", "password": "Client Secret"},
                    "placeholders": {
                        "login": "OAuth client id (client credentials grant)",
                        "region": "mypurecloud.com",
                        "extra": '{"model_limits": {"genesys-llm-v2": {"max_tokens": 4096, "context_tokens": 8192}}}',
                    },
                },
            }
        ],
    }
