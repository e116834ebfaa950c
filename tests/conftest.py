"""Shared fixtures: one gateway emulator for the whole session, reset before each test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from airflow_provider_genesys_llm.emulator import EmulatorServer

pytest_plugins = ["fixtures_postgres"]


@pytest.fixture(scope="session")
def emulator_server() -> Iterator[EmulatorServer]:
    """The emulator on a free loopback port, started once per test session."""
    with EmulatorServer() as server:
        yield server


@pytest.fixture
def emulator(emulator_server: EmulatorServer) -> EmulatorServer:
    """The session's emulator with faults, counters and config overrides cleared for this test
    (issued tokens survive, as they would on a real gateway)."""
    emulator_server.reset()
    return emulator_server
