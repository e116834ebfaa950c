"""``GenesysLLMPlugin``: the provider's page in Airflow's UI and the read-only API behind it.

Registered with the ``airflow.plugins`` entry point (pyproject.toml), so installing the provider is
enough. Airflow 3.3 loads the ``plugins`` key of provider info only when ``[core]
lazy_discover_providers`` is ``False`` (it defaults to ``True``), and registering the plugin both ways
would load it twice there ("already registered" import error); see get_provider_info.py.
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from .api import create_app

URL_PREFIX = "/genesys-llm"


class GenesysLLMPlugin(AirflowPlugin):
    """Adds "Genesys LLM" to Airflow's navigation: completions, cost, latency, failures, audit and search."""

    name = "genesys_llm"
    fastapi_apps = [{"app": create_app(), "url_prefix": URL_PREFIX, "name": "Genesys LLM"}]
    external_views = [
        {
            "name": "Genesys LLM",
            "href": f"{URL_PREFIX}/",
            "destination": "nav",
            "category": "browse",
            "url_route": "genesys-llm",
        }
    ]
