"""Client throughput and CPU per frame, WebSocket vs SSE, against the emulator in its own process.

CPU is the client process's ``time.process_time()`` (the emulator's CPU is not counted); each
client figure is printed beside the bare libraries (websockets + json, httpx lines + json, no
validation) measured against the same server in the same run, so the ratio survives a noisy
machine. Run: ``make bench`` or ``.venv/bin/python bench/stream_throughput.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path

import httpx
import websockets

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _emulator_process import EmulatorProcess, emulator_process  # noqa: E402

from airflow_provider_genesys_llm.client import GatewayClient, GatewayConfig  # noqa: E402

PROMPT = [{"role": "user", "content": "Summarise the call: the customer was double charged and wants a refund."}]
STREAM_PATH = "/api/v2/ai/llm/gateway/completions/stream"
CHAT_PATH = "/api/v2/ai/generations/chat/completions"


def gateway_config(emulator: EmulatorProcess, concurrency: int) -> GatewayConfig:
    return GatewayConfig(
        client_id="emulator-client",
        client_secret="emulator-secret",
        api_base_url=emulator.base_url,
        login_base_url=emulator.base_url,
        stream_base_url=emulator.ws_url,
        max_concurrency=concurrency,
        requests_per_minute=1_000_000,
    )


async def measure(work: Callable[[], Awaitable[int]]) -> tuple[int, float, float]:
    """(frames, client CPU seconds, wall seconds) of one piece of work."""
    cpu, wall = time.process_time(), time.perf_counter()
    frames = await work()
    return frames, time.process_time() - cpu, time.perf_counter() - wall


async def client_streams(client: GatewayClient, transport: str, streams: int, max_tokens: int) -> int:
    async def one() -> int:
        frames = 0
        async for _ in client.stream(client.request(messages=PROMPT, transport=transport, max_tokens=max_tokens)):
            frames += 1
        return frames

    return sum(await asyncio.gather(*(one() for _ in range(streams))))


async def bare_websocket_streams(emulator: EmulatorProcess, token: str, streams: int, max_tokens: int) -> int:
    async def one() -> int:
        frames = 0
        async with websockets.connect(
            emulator.ws_url + STREAM_PATH, additional_headers={"Authorization": f"Bearer {token}"}, compression=None
        ) as ws:
            await ws.send(json.dumps({"action": "init_stream", "protocol_version": "v2"}))
            await ws.recv()
            await ws.send(
                json.dumps(
                    {
                        "model": "genesys-llm-v2",
                        "messages": PROMPT,
                        "parameters": {"temperature": 0.7, "max_tokens": max_tokens},
                    }
                )
            )
            async for raw in ws:
                frame = json.loads(raw)
                frames += 1
                if frame.get("finish_reason"):
                    break
        return frames

    return sum(await asyncio.gather(*(one() for _ in range(streams))))


async def bare_sse_streams(emulator: EmulatorProcess, token: str, streams: int, max_tokens: int) -> int:
    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=streams)) as http:

        async def one() -> int:
            frames = 0
            body = {
                "messages": PROMPT,
                "params": {"model_id": "genesys-llm-v2", "temperature": 0.7, "max_tokens": max_tokens},
            }
            async with http.stream(
                "POST", emulator.base_url + CHAT_PATH, json=body, headers={"Authorization": f"Bearer {token}"}
            ) as response:
                async for line in response.aiter_lines():
                    if line.startswith("data: ") and line != "data: [DONE]":
                        json.loads(line[6:])
                        frames += 1
            return frames

        return sum(await asyncio.gather(*(one() for _ in range(streams))))


async def fetch_token(emulator: EmulatorProcess) -> str:
    async with httpx.AsyncClient() as http:
        answer = await http.post(
            emulator.base_url + "/oauth/token",
            auth=("emulator-client", "emulator-secret"),
            data={"grant_type": "client_credentials"},
        )
        return answer.json()["access_token"]


def row(label: str, frames: int, cpu: float, wall: float, reference: float | None = None) -> str:
    per_frame = cpu / frames * 1e6 if frames else float("nan")
    ratio = f"  {per_frame / reference:5.2f}x bare" if reference else ""
    return f"  {label:<34} {frames:>7} frames {per_frame:8.2f} us CPU/frame {frames / wall:10.0f} frames/s{ratio}"


def repeated(rounds: int, work: Callable[[], Awaitable[int]]) -> Callable[[], Awaitable[int]]:
    async def run() -> int:
        return sum([await work() for _ in range(rounds)])

    return run


async def frame_scenario(
    emulator: EmulatorProcess, name: str, delay: float, streams: int, tokens: int, rounds: int = 1
) -> list[str]:
    emulator.configure(token_delay=delay, completion_tokens=tokens)
    token = await fetch_token(emulator)
    lines = [
        f"{name}: {rounds} round(s) of {streams} concurrent stream(s) x {tokens} tokens,"
        f" token delay {delay * 1000:g} ms"
    ]
    bare = {
        "websocket": await measure(repeated(rounds, lambda: bare_websocket_streams(emulator, token, streams, tokens))),
        "sse": await measure(repeated(rounds, lambda: bare_sse_streams(emulator, token, streams, tokens))),
    }
    async with GatewayClient(gateway_config(emulator, max(streams, 1))) as client:
        await client_streams(client, "websocket", 1, 8)  # warm: token and one session
        for transport in ("websocket", "sse"):
            frames, cpu, wall = await measure(
                repeated(rounds, partial(client_streams, client, transport, streams, tokens))
            )
            b_frames, b_cpu, b_wall = bare[transport]
            reference = b_cpu / b_frames * 1e6
            lines.append(row(f"bare {transport} (parse only)", b_frames, b_cpu, b_wall))
            lines.append(row(f"client {transport}", frames, cpu, wall, reference))
    return lines


async def completions_scenario(emulator: EmulatorProcess, completions: int, concurrency: int) -> list[str]:
    emulator.configure(token_delay=0.0, completion_tokens=50)
    lines = [f"completions: {completions} x ~50 tokens at concurrency {concurrency}"]
    for transport in ("websocket", "sse"):
        emulator.reset()
        emulator.configure(token_delay=0.0, completion_tokens=50)
        from airflow_provider_genesys_llm.client.auth import TOKEN_CACHE

        TOKEN_CACHE.clear()
        async with GatewayClient(gateway_config(emulator, concurrency)) as client:

            async def run() -> int:
                semaphore = asyncio.Semaphore(concurrency)

                async def one() -> int:
                    async with semaphore:
                        result = await client.complete(
                            client.request(messages=PROMPT, transport=transport, max_tokens=64)  # noqa: B023 - awaited in this iteration
                        )
                        return result.usage.completion_tokens

                return sum(await asyncio.gather(*(one() for _ in range(completions))))

            tokens, cpu, wall = await measure(run)
            counters = emulator.counters()
            lines.append(
                f"  {transport:<9} {completions / wall:8.1f} completions/s"
                f"  {cpu / completions * 1e3:6.2f} ms CPU/completion"
                f"  {tokens} tokens  websocket connections {client.websocket_connections}"
                f" (emulator: {counters.get('ws_connections')})  token requests {client.token_requests}"
                f" (emulator: {counters.get('oauth')})"
            )
    return lines


async def main(args: argparse.Namespace) -> None:
    with emulator_process() as emulator:
        report = []
        report += await frame_scenario(emulator, "one long stream", 0.0, 1, args.long_tokens, args.long_rounds)
        report += await frame_scenario(emulator, "paced streams", 0.001, 64, args.paced_tokens)
        report += await completions_scenario(emulator, args.completions, 32)
    print("\n".join(report))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--long-rounds", type=int, default=5)
    parser.add_argument("--long-tokens", type=int, default=4000)
    parser.add_argument("--paced-tokens", type=int, default=200)
    parser.add_argument("--completions", type=int, default=1000)
    asyncio.run(main(parser.parse_args()))
