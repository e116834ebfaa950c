"""Shared fixtures: one gateway emulator for the whole session, reset before each test; one
migrated Airflow metadata database; markers that let ``make test-fast`` leave out real Airflow
processes and the browser."""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from genesys_llm_emulator import EmulatorServer

pytest_plugins = ["fixtures_postgres"]

#: Bytecode for every process the tests start. These machines set PYTHONDONTWRITEBYTECODE, which
#: makes every `airflow` process compile Airflow from source (~15 s each); with it unset and one
#: shared cache, only the first process of a fresh clone pays
#: (docs/operations.md#airflow-recompiles-itself-when-bytecode-writing-is-off).
BYTECODE_CACHE = Path(__file__).resolve().parent.parent / ".pytest_cache" / "bytecode"
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
os.environ.setdefault("PYTHONPYCACHEPREFIX", str(BYTECODE_CACHE))

#: Fixtures that start real Airflow processes; a test using one is marked ``airflow``.
AIRFLOW_FIXTURES = frozenset({"airflow_home"})


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test that runs real Airflow processes, so ``-m "not airflow"`` leaves them out."""
    for item in items:
        if AIRFLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.airflow)


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
def airflow_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated metadata database for every DAG test of this worker: ``airflow db migrate`` runs
    once per test run, and each pytest-xdist worker copies the result into a home of its own (two
    processes writing one SQLite file would lock each other out)."""
    home = tmp_path_factory.mktemp("airflow-home")
    shutil.copy2(migrated_database(tmp_path_factory), home / "airflow.db")
    return home


def migrated_database(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The run's one migrated SQLite database. Under xdist the workers share the parent of their
    temporary folders, and the first to take the lock migrates while the others wait for it."""
    worker_id = os.environ.get("PYTEST_XDIST_WORKER")
    shared = tmp_path_factory.getbasetemp().parent if worker_id else tmp_path_factory.getbasetemp()
    home = shared / "airflow-migrated"
    with open(shared / "airflow-migrated.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes; db migrate is bounded below
        database = home / "airflow.db"
        if not database.exists():
            home.mkdir(exist_ok=True)
            done = subprocess.run(
                [sys.executable, "-m", "airflow", "db", "migrate"],
                env={**os.environ, "AIRFLOW_HOME": str(home), "AIRFLOW__CORE__LOAD_EXAMPLES": "False"},
                capture_output=True,
                text=True,
                timeout=600,
            )
            assert done.returncode == 0, done.stderr[-3000:]
        return database
