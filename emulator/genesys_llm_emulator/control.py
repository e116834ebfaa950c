"""The control API under `/_emulator/`: arm faults, patch config, read counters, reset.

It can make the emulator lie to every client (fail, stall, forget tokens), so it is only open
without a secret where nobody else can reach it: a server bound to a loopback address. Bound to
anything else (`0.0.0.0`, a LAN address, a host name) the emulator refuses to start without a
control token, and every control call must then carry it in the `X-Emulator-Control-Token`
header. Refusing to start (rather than starting with the control API switched off) was chosen
so a misconfigured shared emulator fails at once, not at the first test that arms a fault.
A token, once given, is required on loopback too.
"""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .state import EmulatorState
from .validation import decode_json

CONTROL_PREFIX = "/_emulator"
CONTROL_TOKEN_HEADER = "X-Emulator-Control-Token"
CONTROL_TOKEN_ENV = "GENESYS_EMULATOR_CONTROL_TOKEN"

ControlAction = Callable[[EmulatorState, Mapping[str, Any]], Any]


class ControlTokenRequired(ValueError):
    """The emulator was asked to listen beyond loopback with an open control API; it did not start."""


def is_loopback(host: str) -> bool:
    """True for `localhost` and loopback IP literals; any other name may resolve anywhere."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_control_binding(host: str, control_token: str | None) -> None:
    """Raise `ControlTokenRequired` when `host` is not loopback and no control token is set."""
    if control_token or is_loopback(host):
        return
    raise ControlTokenRequired(
        f"host {host!r} is not a loopback address, so the control API under {CONTROL_PREFIX}/ needs a "
        f"token: set {CONTROL_TOKEN_ENV} (or pass --control-token / control_token=), or bind to 127.0.0.1"
    )


def _reset(state: EmulatorState, body: Mapping[str, Any]) -> dict[str, bool]:
    state.reset(tokens=bool(body.get("tokens", False)))
    return {"reset": True}


def _configure(state: EmulatorState, body: Mapping[str, Any]) -> dict[str, list[str]]:
    state.configure(body)
    return {"updated": sorted(body)}


# name -> (HTTP method, action). Bodies are JSON objects (an empty body reads as `{}`).
CONTROL_ACTIONS: dict[str, tuple[str, ControlAction]] = {
    "counters": ("GET", lambda state, _: state.counters.snapshot()),
    "reset": ("POST", _reset),  # {"tokens": true} also forgets issued tokens
    "config": ("POST", _configure),  # config fields to change
    "faults": ("POST", lambda state, body: state.add_fault(body).as_dict()),  # one fault rule
    "expire_tokens": ("POST", lambda state, _: {"expired": state.expire_tokens()}),
}


def _authorized(request: Request, control_token: str | None) -> bool:
    if not control_token:
        return True
    presented = request.headers.get(CONTROL_TOKEN_HEADER, "")
    return hmac.compare_digest(presented.encode(), control_token.encode())


def control_endpoint(action: ControlAction, control_token: str | None) -> Callable[[Request], Awaitable[Response]]:
    """A control API endpoint: token-checked, counted apart from `total`, any ValueError becomes a 400."""

    async def endpoint(request: Request) -> Response:
        if not _authorized(request, control_token):
            # Neither the expected nor the presented token is echoed.
            message = f"the control API needs the {CONTROL_TOKEN_HEADER} header with this emulator's control token"
            return JSONResponse({"error": message}, status_code=401)
        state: EmulatorState = request.app.state.emulator
        state.counters.add("control")
        raw = await request.body()
        try:
            body = decode_json(raw) if raw.strip() else {}
            if not isinstance(body, dict):
                raise ValueError("the body must be a JSON object")
            result = action(state, body)
        except ValueError as exc:  # also InvalidRequest, from decode_json
            return JSONResponse({"error": str(exc)}, status_code=400)
        return JSONResponse(result)

    return endpoint


def control_routes(control_token: str | None) -> list[Route]:
    """One route per control action, each requiring `control_token` when it is set."""
    return [
        Route(f"{CONTROL_PREFIX}/{name}", control_endpoint(action, control_token), methods=[method])
        for name, (method, action) in CONTROL_ACTIONS.items()
    ]
