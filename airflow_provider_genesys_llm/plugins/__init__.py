"""The Genesys LLM page in Airflow's UI: the plugin (plugin.py), its read-only API (api.py, queries.py) and its
``[genesys_llm]`` settings (settings.py)."""
