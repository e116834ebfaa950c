"""TaskFlow decorators of the provider (``@task.genesys_llm``), registered in ``get_provider_info``."""
