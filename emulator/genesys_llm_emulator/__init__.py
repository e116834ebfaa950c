"""A local Genesys Cloud LLM Gateway: OAuth, WebSocket and SSE completions, embeddings, status.

An independent implementation of the wire contract (`docs/protocol.md`, protocol sections 1-9), with
fault injection and counters, for testing and benchmarking the provider's client without a
Genesys Cloud tenant. Start it in-process (`EmulatorServer`), or as a process with
`python -m genesys_llm_emulator`.
"""

from .app import create_app
from .config import EmulatorConfig
from .server import EmulatorServer

__all__ = ["EmulatorConfig", "EmulatorServer", "create_app"]
