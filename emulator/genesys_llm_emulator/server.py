"""Running the emulator for real: uvicorn on a (by default loopback) socket, in a thread or in the foreground.

Tests want a real server (real sockets, real WebSocket upgrades, real dropped connections)
that starts in well under a second and picks a free port, so `EmulatorServer` binds the socket
itself (port 0 = any free port), knows its URL before uvicorn starts, and runs uvicorn's loop in
a daemon thread. Its Python control methods run on that loop, so they never race a request.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from types import TracebackType
from typing import Any, TypeVar

import uvicorn

from .app import create_app
from .chat import StreamAborted
from .config import EmulatorConfig
from .control import check_control_binding
from .state import EmulatorState

_T = TypeVar("_T")
STARTUP_TIMEOUT = 10.0
SHUTDOWN_TIMEOUT = 10.0
CONTROL_CALL_TIMEOUT = 10.0


class _DeliberateAbortFilter(logging.Filter):
    """Hides uvicorn's traceback for a connection the emulator drops on purpose (a fault)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and isinstance(record.exc_info[1], StreamAborted))


def _silence_deliberate_aborts() -> None:
    logger = logging.getLogger("uvicorn.error")
    if not any(isinstance(existing, _DeliberateAbortFilter) for existing in logger.filters):
        logger.addFilter(_DeliberateAbortFilter())


class EmulatorServer:
    """The gateway emulator on a real socket; also a context manager (`with EmulatorServer() as s`)."""

    def __init__(
        self,
        config: EmulatorConfig | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        faults: Iterable[Mapping[str, Any]] = (),
        control_token: str | None = None,
    ) -> None:
        """Raises `ControlTokenRequired` for a non-loopback `host` without `control_token`."""
        check_control_binding(host, control_token)
        self.app = create_app(config, faults, control_token=control_token)
        self.state: EmulatorState = self.app.state.emulator
        self._host = host
        self._requested_port = port
        self._socket: socket.socket | None = None
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread_id: int | None = None

    # -- addresses ---------------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._socket is None:
            raise RuntimeError("the emulator is not running; call start() first")
        port: int = self._socket.getsockname()[1]
        return port

    @property
    def base_url(self) -> str:
        """`http://host:port`: login host and API host at once."""
        return f"http://{self._url_host}:{self.port}"

    @property
    def ws_url(self) -> str:
        """`ws://host:port`: the stream host."""
        return f"ws://{self._url_host}:{self.port}"

    @property
    def _url_host(self) -> str:
        return f"[{self._host}]" if ":" in self._host else self._host

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> EmulatorServer:
        """Serve in a background thread; returns once the socket accepts connections."""
        if self._thread is not None:
            raise RuntimeError("the emulator is already running")
        ready = threading.Event()
        self._prepare()
        self._thread = threading.Thread(target=self._run, args=(ready.set,), name="genesys-llm-emulator", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while not ready.wait(0.01):
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("the emulator did not start (see uvicorn's log above)")
        return self

    def serve_forever(self, on_ready: Callable[[], None] = lambda: None) -> None:
        """Serve in this thread until SIGINT/SIGTERM (uvicorn's own signal handling)."""
        self._prepare()
        self._run(on_ready)

    def stop(self) -> None:
        """Shut down (open WebSocket sessions get 1012) and wait for the thread to end."""
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(SHUTDOWN_TIMEOUT)
        self._thread = None
        self._server = None
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    def __enter__(self) -> EmulatorServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()

    def _prepare(self) -> None:
        family = socket.AF_INET6 if ":" in self._host else socket.AF_INET
        self._socket = socket.create_server((self._host, self._requested_port), family=family)
        config = uvicorn.Config(
            self.app,
            ws="websockets-sansio",
            ws_per_message_deflate=True,  # only for clients that ask for it
            lifespan="off",
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=2,
        )
        _silence_deliberate_aborts()
        self._server = uvicorn.Server(config)

    def _run(self, on_ready: Callable[[], None]) -> None:
        assert self._server is not None
        loop_factory = self._server.config.get_loop_factory()
        loop = loop_factory() if loop_factory is not None else asyncio.new_event_loop()
        try:
            loop.run_until_complete(self._serve(on_ready))
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()
            self._loop = None

    async def _serve(self, on_ready: Callable[[], None]) -> None:
        assert self._server is not None and self._socket is not None
        self._loop = asyncio.get_running_loop()
        self._loop_thread_id = threading.get_ident()
        serving = asyncio.ensure_future(self._server.serve(sockets=[self._socket]))
        while not self._server.started and not serving.done():
            await asyncio.sleep(0.005)
        if self._server.started:
            on_ready()
        await serving

    # -- control (the same operations as the HTTP control API, without HTTP) -----------------

    def counters(self) -> dict[str, Any]:
        """A snapshot of the counters (see `Counters.snapshot`)."""
        return self._on_loop(self.state.counters.snapshot)

    def received_payloads(self) -> list[str]:
        """The last completion and embeddings request payloads, as the emulator received them."""
        return self._on_loop(lambda: list(self.state.counters.payloads))

    def reset(self, *, tokens: bool = False) -> None:
        """Startup config and faults, zero counters; `tokens=True` also forgets issued tokens."""
        self._on_loop(lambda: self.state.reset(tokens=tokens))

    def configure(self, **fields: Any) -> None:
        """Change config fields, e.g. `configure(token_delay=0.01, status="degraded")`."""
        self._on_loop(lambda: self.state.configure(fields))

    def add_fault(self, **rule: Any) -> dict[str, Any]:
        """Arm a fault rule, e.g. `add_fault(endpoint="ws", kind="http_error", status=429)`."""
        return self._on_loop(lambda: self.state.add_fault(rule).as_dict())

    def expire_tokens(self) -> int:
        """Invalidate every issued token now; returns how many there were."""
        return self._on_loop(self.state.expire_tokens)

    def _on_loop(self, call: Callable[[], _T]) -> _T:
        """Run `call` on the server's event loop (directly when not running or already on it)."""
        loop = self._loop
        if loop is None or threading.get_ident() == self._loop_thread_id:
            return call()
        future: concurrent.futures.Future[_T] = concurrent.futures.Future()

        def run() -> None:
            try:
                future.set_result(call())
            except BaseException as exc:  # handed to the calling thread, which re-raises it
                future.set_exception(exc)

        loop.call_soon_threadsafe(run)
        return future.result(CONTROL_CALL_TIMEOUT)
