"""Apache Airflow provider for the Genesys Cloud LLM Gateway."""

__version__ = "0.1.0"
