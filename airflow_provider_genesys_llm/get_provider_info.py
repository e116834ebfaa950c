"""Provider metadata for Airflow's provider manager.

Airflow calls this while loading its own configuration, so it must not import Airflow
(importing ``airflow.sdk`` here caused a circular import; see
docs/operations.md#get_provider_info-must-not-import-airflow).
"""

from __future__ import annotations

from typing import Any

_NULLABLE_STRING = {"type": ["string", "null"]}


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
                        "schema": {"type": ["string", "null"], "enum": ["websocket", "sse", None], "default": "websocket"},
                    },
                    "model": {"label": "Default model", "schema": {"type": ["string", "null"], "default": "genesys-llm-v2"}},
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
                    "verify_ssl": {"label": "Verify TLS certificates", "schema": {"type": ["boolean", "null"], "default": True}},
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
