"""The emulator's control API is open only on loopback; beyond it, it needs a token, or no start.

Traffic goes only to loopback addresses: the one server bound beyond loopback listens on 0.0.0.0
and is reached through 127.0.0.1.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from genesys_llm_emulator import EmulatorServer
from genesys_llm_emulator.control import (
    CONTROL_TOKEN_ENV,
    CONTROL_TOKEN_HEADER,
    ControlTokenRequired,
    check_control_binding,
    is_loopback,
)

EMULATOR_ROOT = Path(__file__).resolve().parents[1] / "emulator"
TOKEN = "ctl-7f3a9c1e55d04b2a"
CONTROL_CALLS = [
    ("GET", "/_emulator/counters"),
    ("POST", "/_emulator/reset"),
    ("POST", "/_emulator/config"),
    ("POST", "/_emulator/faults"),
    ("POST", "/_emulator/expire_tokens"),
]


@pytest.mark.parametrize(
    "host", ["127.0.0.1", "127.0.0.2", "127.255.255.254", "::1", "[::1]", "localhost", "LOCALHOST"]
)
def test_loopback_hosts_need_no_token(host: str) -> None:
    assert is_loopback(host)
    check_control_binding(host, None)


@pytest.mark.parametrize(
    "host", ["0.0.0.0", "::", "10.1.2.3", "192.168.0.10", "::ffff:10.0.0.1", "emulator.internal", "localhost.evil", ""]
)
def test_other_hosts_refuse_an_open_control_api(host: str) -> None:
    assert not is_loopback(host)
    for missing in (None, ""):
        with pytest.raises(ControlTokenRequired, match=CONTROL_TOKEN_ENV) as refused:
            check_control_binding(host, missing)
        assert repr(host) in str(refused.value)
    check_control_binding(host, TOKEN)


def test_a_server_for_all_interfaces_does_not_start_without_a_token() -> None:
    with pytest.raises(ControlTokenRequired):
        EmulatorServer(host="0.0.0.0")


def _control(client: httpx.Client, method: str, path: str, token: str | None) -> httpx.Response:
    headers = {} if token is None else {CONTROL_TOKEN_HEADER: token}
    body = {"kind": "http_error", "endpoint": "status", "status": 503} if path.endswith("faults") else {}
    return client.request(method, path, headers=headers, json=body if method == "POST" else None)


def test_all_interfaces_with_a_token_every_control_call_needs_it() -> None:
    with EmulatorServer(host="0.0.0.0", control_token=TOKEN) as server:
        with httpx.Client(base_url=f"http://127.0.0.1:{server.port}", timeout=10) as client:
            for method, path in CONTROL_CALLS:
                for wrong in (None, "", TOKEN[:-1], TOKEN + "x", TOKEN.upper()):
                    refused = _control(client, method, path, wrong)
                    assert refused.status_code == 401, (path, wrong)
                    assert TOKEN not in refused.text and CONTROL_TOKEN_HEADER in refused.json()["error"]
            assert server.counters()["control"] == 0, "a refused call must not reach the control actions"
            for method, path in CONTROL_CALLS:
                assert _control(client, method, path, TOKEN).status_code == 200, path
            # The gateway itself is not behind the control token.
            oauth = client.post("/oauth/token", auth=("id", "secret"), data={"grant_type": "client_credentials"})
            assert oauth.status_code == 200


def test_a_token_given_on_loopback_is_required_there_too() -> None:
    with EmulatorServer(control_token=TOKEN) as server, httpx.Client(base_url=server.base_url, timeout=10) as client:
        assert client.get("/_emulator/counters").status_code == 401
        assert client.get("/_emulator/counters", headers={CONTROL_TOKEN_HEADER: TOKEN}).status_code == 200


def test_the_loopback_default_stays_open(emulator: EmulatorServer) -> None:
    with httpx.Client(base_url=emulator.base_url, timeout=10) as client:
        assert client.get("/_emulator/counters").status_code == 200


def _command_line(*args: str, token_env: str | None) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if k != CONTROL_TOKEN_ENV}
    environment["PYTHONPATH"] = str(EMULATOR_ROOT)  # the emulator alone, without the provider
    if token_env is not None:
        environment[CONTROL_TOKEN_ENV] = token_env
    return subprocess.run(
        [sys.executable, "-m", "genesys_llm_emulator", *args],
        env=environment,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_command_line_refuses_all_interfaces_without_a_token() -> None:
    done = _command_line("--host", "0.0.0.0", "--port", "0", token_env=None)
    assert done.returncode == 2
    assert CONTROL_TOKEN_ENV in done.stderr and "listening" not in done.stdout


def test_command_line_help_does_not_show_the_token_from_the_environment() -> None:
    done = _command_line("--help", token_env=TOKEN)
    assert done.returncode == 0 and "--control-token" in done.stdout and TOKEN not in done.stdout


def test_command_line_takes_the_token_from_the_environment() -> None:
    environment = {**os.environ, "PYTHONPATH": str(EMULATOR_ROOT), CONTROL_TOKEN_ENV: TOKEN}
    command = [sys.executable, "-m", "genesys_llm_emulator", "--host", "0.0.0.0", "--port", "0"]
    with subprocess.Popen(
        command, env=environment, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    ) as process:
        try:
            assert process.stdout is not None
            line = process.stdout.readline().strip()
            assert line.startswith("emulator listening on http://0.0.0.0:"), line
            port = line.rsplit(":", 1)[1]
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
                assert client.get("/_emulator/counters").status_code == 401
                assert client.get("/_emulator/counters", headers={CONTROL_TOKEN_HEADER: TOKEN}).status_code == 200
        finally:
            process.terminate()
            process.wait(timeout=15)
