"""Shared fixtures: one gateway emulator for the whole session, reset before each test."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

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


@pytest.fixture(scope="session")
def airflow_home(tmp_path_factory) -> Path:
    """One migrated metadata database for every DAG test of the session."""
    home = tmp_path_factory.mktemp("airflow-home")
    done = subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"],
        env={**os.environ, "AIRFLOW_HOME": str(home), "AIRFLOW__CORE__LOAD_EXAMPLES": "False"},
        capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return home
