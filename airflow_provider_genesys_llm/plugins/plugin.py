"""``GenesysLLMPlugin``: the provider's page in Airflow's UI and the read-only API behind it.

Registered with the ``airflow.plugins`` entry point (pyproject.toml), so installing the provider is
enough. Airflow 3.3 loads the ``plugins`` key of provider info only when ``[core]
lazy_discover_providers`` is ``False`` (it defaults to ``True``), and registering the plugin both ways
would load it twice there ("already registered" import error); see get_provider_info.py.

Every Airflow process loads plugins, task processes included, so this module stays light: the
FastAPI app (FastAPI and Airflow's API security, ~0.8 s to import) is built on the first request the
API server routes to it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from airflow.plugins_manager import AirflowPlugin

URL_PREFIX = "/genesys-llm"

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]


class _LazyApp:
    """An ASGI app that builds the real one on its first call."""

    def __init__(self) -> None:
        self._app: Any = None

    async def __call__(
        self, scope: Scope, receive: Callable[[], Awaitable[Message]], send: Callable[[Message], Awaitable[None]]
    ) -> None:
        if self._app is None:
            from .api import create_app

            self._app = create_app()
        await self._app(scope, receive, send)


class GenesysLLMPlugin(AirflowPlugin):
    """Adds "Genesys LLM" to Airflow's navigation: completions, cost, latency, failures, audit and search."""

    name = "genesys_llm"
    fastapi_apps = [{"app": _LazyApp(), "url_prefix": URL_PREFIX, "name": "Genesys LLM"}]
    external_views = [
        {
            "name": "Genesys LLM",
            "href": f"{URL_PREFIX}/",
            "destination": "nav",
            "category": "browse",
            "url_route": "genesys-llm",
        }
    ]
