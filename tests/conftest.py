"""Fixtures that start real servers on loopback (Redis, PostgreSQL, service processes) and stop them."""

from __future__ import annotations

import glob
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from services.common.settings import SERVICES, Settings
from services.simulation.stack import Ports, free_port
from services.simulation.stack import connectable as _connectable

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def platform_ports() -> dict:
    """The Settings ports of one platform (gateway, services, metrics block, Triton), all distinct
    (``Ports``: the gateway's port once fell inside the metrics block, and a metrics server answered for it)."""
    ports = Ports()
    metrics = ports.block()
    return {"gateway_port": ports.one(), "metrics_port_base": metrics, "triton_http_port": ports.one(),
            "triton_grpc_url": f"127.0.0.1:{ports.one()}", "triton_metrics_port": ports.one(),
            **{f"{name}_port": ports.one() for name in SERVICES}}


def wait_until(predicate, timeout_s: float, what: str, interval_s: float = 0.1):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval_s)
    raise TimeoutError(f"{what} not reached within {timeout_s} s")


def settings_env(settings: Settings) -> dict[str, str]:
    return settings.to_env()


class Redis:
    """A real redis-server with AOF in a temporary folder; ``stop``/``start`` to simulate outages."""

    def __init__(self, workdir: Path) -> None:
        self.port, self.dir = free_port(), workdir
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.fail("redis-server missing: run `make system-deps` (make test does)")
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir),
             "--appendonly", "yes", "--save", "", "--daemonize", "no"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_until(lambda: _connectable(self.port), 10, "redis listening")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)


class Triton:
    """The real tritonserver (deploy/local/tritonserver.sh) on deploy/triton/models (or
    ``model_repository``), CPU, free ports; ``args``: more tritonserver flags (``--model-control-mode``)."""

    def __init__(self, workdir: Path, model_repository: Path | None = None, args: tuple[str, ...] = ()) -> None:
        self.dir, self.model_repository, self.args = workdir, model_repository, tuple(args)
        self.grpc_port, self.http_port, self.metrics_port = free_port(), free_port(), free_port()
        self.grpc_url = f"127.0.0.1:{self.grpc_port}"
        self.proc: subprocess.Popen | None = None
        self.log = workdir / "triton.log"

    def start(self, timeout_s: float = 120) -> None:
        launcher = REPO / "deploy" / "local" / "tritonserver.sh"
        if not (REPO / ".venv-triton" / "bin" / "python").exists():
            pytest.fail("tritonserver missing: run `make triton-setup` (make test does)")
        env = {**os.environ, "ANNOT_TRITON_GRPC_PORT": str(self.grpc_port),
               "ANNOT_TRITON_HTTP_PORT": str(self.http_port),
               "ANNOT_TRITON_METRICS_PORT": str(self.metrics_port),
               "TRITON_HOME": str(REPO / "var" / "triton" / "server")}
        if self.model_repository is not None:
            env["TRITON_MODEL_REPOSITORY"] = str(self.model_repository)
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen([str(launcher), "--exit-timeout-secs", "2", *self.args], env=env, stdout=log,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_until(self.ready, timeout_s, "triton ready", interval_s=0.25)
        except TimeoutError:
            self.stop()
            pytest.fail(f"tritonserver did not become ready:\n{self.log.read_text(errors='replace')[-4000:]}")

    def ready(self) -> bool:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(f"tritonserver exited:\n{self.log.read_text(errors='replace')[-4000:]}")
        try:
            import httpx  # noqa: PLC0415

            return httpx.get(f"http://127.0.0.1:{self.http_port}/v2/health/ready", timeout=0.5).status_code == 200
        except Exception:  # noqa: BLE001 - not up yet
            return False

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


@pytest.fixture(scope="session")
def triton_server(tmp_path_factory) -> Iterator[Triton]:
    """One tritonserver for the session (loading the model takes seconds); tests may stop/start it."""
    server = Triton(tmp_path_factory.mktemp("triton"))
    server.start()
    yield server
    server.stop()


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[Redis]:
    server = Redis(tmp_path / "redis")
    server.dir.mkdir()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def settings(tmp_path: Path, redis_server: Redis) -> Settings:
    """Settings for one test: its own var dir, SQLite file, Redis and ports."""
    return Settings(
        _env_file=None, env="test", var_dir=tmp_path / "var", redis_url=redis_server.url, health_interval_s=0.3,
        dependency_timeout_s=0.5, auth_cache_ttl_s=0, **platform_ports())


class Process:
    """A child process with the given settings; its output goes to a log file kept on failure."""

    def __init__(self, args: list[str], settings: Settings, log: Path) -> None:
        self.log = log
        env = {**os.environ, **settings_env(settings)}
        self._file = log.open("wb")
        self.proc = subprocess.Popen(args, cwd=REPO, env=env, stdout=self._file, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 20) -> int:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self._file.close()
        return self.proc.returncode

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def start_service(spawn, service: str, settings: Settings, timeout_s: float = 60) -> Process:
    """The real gRPC server of ``service`` once it reports SERVING; the test fails with its log otherwise."""
    from services.common.probes import grpc_health  # noqa: PLC0415

    process = spawn([PYTHON, "-m", f"services.{service}.server"], settings)
    try:
        wait_until(lambda: grpc_health(settings.service_address(service), 0.5) == "SERVING", timeout_s,
                   f"{service} SERVING")
    except TimeoutError:
        pytest.fail(f"{service} server did not become healthy:\n{process.output()[-3000:]}")
    return process


def start_gateway(spawn, settings: Settings, timeout_s: float = 60) -> str:
    """The gateway as a process (its REST API and pages); its URL once it answers; the test fails with its log
    otherwise."""
    import httpx  # noqa: PLC0415

    process = spawn([PYTHON, "-m", "services.gateway"], settings)
    url = f"http://127.0.0.1:{settings.gateway_port}"

    def up() -> bool:
        try:
            return httpx.get(f"{url}/healthz", timeout=1).status_code in (200, 503)
        except httpx.HTTPError:
            return False

    try:
        wait_until(up, timeout_s, "gateway up")
    except TimeoutError:
        pytest.fail(f"the gateway did not start:\n{process.output()[-3000:]}")
    return url


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator:
    """spawn(args, settings) starts a real process; every one is stopped at teardown."""
    started: list[Process] = []

    def _spawn(args: list[str], settings: Settings) -> Process:
        process = Process(args, settings, tmp_path / f"proc-{len(started)}.log")
        started.append(process)
        return process

    yield _spawn
    for process in started:
        process.stop()


def _postgres_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(found[-1]).parent if found else None


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A real PostgreSQL server in a temporary cluster (run as the postgres user when we are root)."""
    bindir = _postgres_bin()
    if bindir is None:
        pytest.fail("PostgreSQL missing: run `make system-deps` (make test does)")
    # Not under pytest's tmp dir: that is private to root, and PostgreSQL refuses to run as root.
    root = Path(tempfile.mkdtemp(prefix="annot-pg-"))
    data = root / "data"
    port = free_port()
    as_user: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    subprocess.run([*as_user, str(bindir / "initdb"), "-D", str(data), "-U", "annot", "--auth=trust",
                    "-E", "UTF8"], check=True, stdout=subprocess.DEVNULL)
    subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-w", "-l", str(data / "log"),
                    "-o", f"-p {port} -k {data} -c listen_addresses=127.0.0.1", "start"],
                   check=True, stdout=subprocess.DEVNULL)
    subprocess.run([*as_user, str(bindir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "annot",
                    "annotation"], check=True)
    yield f"postgresql+psycopg://annot@127.0.0.1:{port}/annotation"
    subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "stop"],
                   check=False, stdout=subprocess.DEVNULL)
    shutil.rmtree(root, ignore_errors=True)


PYTHON = sys.executable
