"""Start the emulator in its own process for a benchmark, so its CPU is not counted as the client's."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class EmulatorProcess:
    def __init__(self, port: int) -> None:
        self.base_url = f"http://127.0.0.1:{port}"
        self.ws_url = f"ws://127.0.0.1:{port}"

    def configure(self, **fields: object) -> None:
        httpx.post(self.base_url + "/_emulator/config", json=fields).raise_for_status()

    def reset(self) -> None:
        httpx.post(self.base_url + "/_emulator/reset", json={}).raise_for_status()

    def counters(self) -> dict:
        return httpx.get(self.base_url + "/_emulator/counters").json()


@contextmanager
def emulator_process() -> Iterator[EmulatorProcess]:
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "genesys_llm_emulator", "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        if "listening" not in line:
            raise RuntimeError(f"emulator did not start: {line!r}")
        yield EmulatorProcess(port)
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
        time.sleep(0.1)
