"""`python -m genesys_llm_emulator`: the emulator as a process of its own.

For benchmarks and manual runs, where the client must not share an interpreter (or a GIL) with
the server. Prints `emulator listening on http://HOST:PORT` once it accepts connections, so a
parent process can wait for that line; runs until SIGINT or SIGTERM.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Sequence
from typing import Any

from .config import EmulatorConfig
from .control import CONTROL_TOKEN_ENV, CONTROL_TOKEN_HEADER
from .server import EmulatorServer


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="genesys-llm-emulator", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8099, help="0 picks a free port")
    parser.add_argument("--token-delay", type=float, default=0.0, help="seconds between streamed tokens")
    parser.add_argument("--completion-tokens", type=int, default=48, help="tokens per completion")
    parser.add_argument("--token-lifetime", type=int, default=86400, help="OAuth token expires_in, seconds")
    parser.add_argument(
        "--client",
        action="append",
        default=[],
        metavar="ID:SECRET",
        help="an OAuth client with all scopes; repeatable; replaces the default clients",
    )
    parser.add_argument("--embedding-dim", type=int, default=384)
    parser.add_argument(
        "--fault", action="append", default=[], metavar="JSON", help="a fault rule armed at startup; repeatable"
    )
    parser.add_argument("--status", default="available", help="available, degraded or unavailable")
    parser.add_argument(
        "--control-token",
        help=f"secret for the control API (header {CONTROL_TOKEN_HEADER}); required when --host is not loopback."
        f" Prefer the environment variable {CONTROL_TOKEN_ENV}: a command line is visible to other users",
    )
    return parser


def _config(args: argparse.Namespace) -> EmulatorConfig:
    changes: dict[str, Any] = {
        "token_delay": args.token_delay,
        "completion_tokens": args.completion_tokens,
        "token_lifetime": args.token_lifetime,
        "embedding_dim": args.embedding_dim,
        "status": args.status,
    }
    if args.client:
        pairs = [client.partition(":") for client in args.client]
        if any(not separator or not client_id for client_id, separator, _ in pairs):
            raise ValueError("--client must look like ID:SECRET")
        changes["clients"] = {client_id: secret for client_id, _, secret in pairs}
    return EmulatorConfig().patched(changes)


def _control_token(args: argparse.Namespace) -> str | None:
    """The flag wins over the environment; read after parsing so `--help` never shows the secret."""
    return args.control_token or os.environ.get(CONTROL_TOKEN_ENV) or None


def _json_object(text: str) -> dict[str, Any]:
    value = json.loads(text)
    if not isinstance(value, dict):
        raise ValueError(f"--fault must be a JSON object, got {text!r}")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        faults = [_json_object(text) for text in args.fault]
        server = EmulatorServer(
            _config(args), host=args.host, port=args.port, faults=faults, control_token=_control_token(args)
        )
    except ValueError as exc:  # a bad option value, fault rule or missing control token: a usage error
        parser.error(str(exc))
    try:
        server.serve_forever(on_ready=lambda: print(f"emulator listening on {server.base_url}", flush=True))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
