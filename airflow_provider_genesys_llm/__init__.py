"""Apache Airflow provider for the Genesys Cloud LLM Gateway.

The package itself exports nothing: the Airflow-free core lives in ``client``, ``batch``,
``governance`` and ``sinks``, and the Airflow parts in ``hooks``, ``operators``, ``sensors``,
``triggers`` and ``callbacks``. Importing it imports none of them (Airflow reads
``get_provider_info`` while it loads its own configuration).
"""

__version__ = "0.1.0"

__all__: list[str] = []
