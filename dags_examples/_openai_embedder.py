"""An ``embedder`` for any OpenAI-compatible embeddings API, for users with their own endpoint.

``GenesysLLMBatchCompletionOperator(embedder=...)`` takes an async callable from a batch of texts
to their vectors; by default it is the gateway's embeddings endpoint. The texts it receives are
already governed (masked answers or masked source text), so nothing unmasked leaves for the
embeddings provider either. Usage::

    GenesysLLMBatchCompletionOperator(
        ...,
        embed="json:summary",
        embedder=OpenAIEmbedder("https://api.openai.com/v1", "text-embedding-3-small", api_key_env="OPENAI_API_KEY"),
    )

The results table's ``dimension`` must match the model's (1536 for ``text-embedding-3-small``),
and queries must be embedded by the same model.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import httpx


class EmbeddingsError(RuntimeError):
    """The embeddings API refused or answered out of contract; a retry of the task retries the batch."""


class OpenAIEmbedder:
    """``POST {base_url}/embeddings`` with ``{"model", "input": [...]}``, vectors back in input order.

    One ``httpx.AsyncClient`` per embedder (a new one per call costs ~19 ms), made on first use so
    it belongs to the event loop of the task that uses it. The key is read from the environment
    when first needed, never stored in the DAG.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key_env: str = "OPENAI_API_KEY",
        batch_size: int = 256,
        timeout: float = 60.0,
    ) -> None:
        self.url = base_url.rstrip("/") + "/embeddings"
        self.model = model
        self.api_key_env = api_key_env
        self.batch_size = batch_size
        self.timeout = timeout
        self._client: httpx.AsyncClient | None = None

    async def __call__(self, texts: Sequence[str]) -> list[list[float]]:
        vectors: list[list[float]] = []
        for start in range(0, len(texts), self.batch_size):
            vectors += await self._embed(list(texts[start : start + self.batch_size]))
        return vectors

    async def _embed(self, texts: list[str]) -> list[list[float]]:
        if self._client is None:
            key = os.environ.get(self.api_key_env)
            if not key:
                raise EmbeddingsError(f"environment variable {self.api_key_env} (the embeddings API key) is not set")
            self._client = httpx.AsyncClient(headers={"Authorization": f"Bearer {key}"}, timeout=self.timeout)
        response = await self._client.post(self.url, json={"model": self.model, "input": texts})
        if response.status_code != 200:  # the body is not shown: some APIs quote the input back
            raise EmbeddingsError(f"POST {self.url} answered {response.status_code} for {len(texts)} text(s)")
        data = sorted(response.json().get("data", []), key=lambda item: item["index"])
        if [item["index"] for item in data] != list(range(len(texts))):
            raise EmbeddingsError(f"POST {self.url} returned {len(data)} vector(s) for {len(texts)} text(s)")
        return [item["embedding"] for item in data]

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None
