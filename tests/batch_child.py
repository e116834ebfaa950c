"""A batch run in its own process, so a test can SIGKILL it mid-way (see test_batch.py)."""

from __future__ import annotations

import asyncio
import os

import psycopg
from batch_items import TEST_ID_KEY, make_items

from airflow_provider_genesys_llm.batch.runner import BatchRunner, BatchSettings
from airflow_provider_genesys_llm.client import GatewayClient, GatewayConfig
from airflow_provider_genesys_llm.sinks.pgvector import PgVectorStore


async def main() -> None:
    def connect() -> psycopg.Connection:
        return psycopg.connect(
            os.environ["BATCH_CONNINFO"], options=f"-c search_path={os.environ['BATCH_SCHEMA']},public"
        )

    store = PgVectorStore(connect, table="results", schema=os.environ["BATCH_SCHEMA"], dimension=384, index="none")
    store.ensure_schema()
    config = GatewayConfig(
        client_id="emulator-client",
        client_secret="emulator-secret",
        api_base_url=os.environ["BATCH_BASE_URL"],
        login_base_url=os.environ["BATCH_BASE_URL"],
        stream_base_url=os.environ["BATCH_WS_URL"],
        max_concurrency=4,
        requests_per_minute=1_000_000,
    )
    async with GatewayClient(config) as client:
        runner = BatchRunner(
            client,
            store,
            client.embed,
            id_key=TEST_ID_KEY,
            settings=BatchSettings(concurrency=4, chunk_size=20, window=50),
        )
        await runner.run(make_items(600))


asyncio.run(main())
