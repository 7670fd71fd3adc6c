"""A private stack of real processes for simulations and benchmarks: redis-server, the real
tritonserver, and service servers, on free loopback ports in a temporary folder, with an admin key.

    with LocalStack(["segmentation"]) as stack:
        channel = stack.channel("segmentation")    # metadata=stack.auth

Simulations reach the services only through their gRPC APIs (DESIGN.md); this starts them. Pass
``address``/``token`` to the tools instead to drive a platform that is already running.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import grpc
import httpx

from services.common.keys import KeyStore, Role
from services.common.probes import grpc_health
from services.common.settings import REPO_ROOT, SERVICES, Settings, served_model_dir
from services.common.storage import make_engine, make_session_factory, migrate

TRITON_LAUNCHER = REPO_ROOT / "deploy" / "local" / "tritonserver.sh"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Ports:
    """Free ports for one stack, none handed out twice and none inside its metrics block: a free port is free
    only until something binds it, and a stack's processes bind theirs one by one."""

    def __init__(self) -> None:
        self._taken: set[int] = set()

    def one(self) -> int:
        for _ in range(1000):
            port = free_port()
            if port not in self._taken:
                self._taken.add(port)
                return port
        raise RuntimeError("no free port")

    def block(self, size: int = 20) -> int:
        """A base with BASE+1..BASE+size free (the metrics ports are BASE..BASE+17), reserved for it."""
        for _ in range(200):
            base = free_port()
            span = set(range(base, base + size + 1))
            if span & self._taken:
                continue
            socks = []
            try:
                for port in range(base + 1, base + size + 1):
                    sock = socket.socket()
                    socks.append(sock)
                    sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            finally:
                for sock in socks:
                    sock.close()
            self._taken |= span
            return base
        raise RuntimeError("no free block of ports")


def _wait(predicate, timeout_s: float, what: str, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)
    tail = log.read_text(errors="replace")[-3000:] if log and log.exists() else ""
    raise TimeoutError(f"{what} not ready within {timeout_s:.0f} s\n{tail}")


class LocalStack:
    def __init__(self, services: Sequence[str], triton: bool = True,
                 overrides: dict[str, dict] | None = None, keep: bool = False,
                 triton_repository: Path | None = None, workers: Sequence[str] = (),
                 publish: bool = False) -> None:
        """``overrides``: per extra server name -> settings changes, e.g. a second segmentation
        server without refinement: ``{"segmentation-raw": {"segmentation_refine": False}}``.
        ``workers``: services whose Celery worker runs too (one process each). ``publish``: Triton in
        explicit model-control mode also serves the repository the training worker publishes into
        (``settings.resolved_model_repository``), so a promoted version is loaded while the stack runs."""
        self.services = list(services)
        self.triton = triton
        self.overrides = overrides or {}
        self.keep = keep
        self.triton_repository = triton_repository
        self.workers = list(workers)
        self.publish = publish
        self.dir = Path(tempfile.mkdtemp(prefix="annot-stack-"))
        self.procs: list[subprocess.Popen] = []
        self.addresses: dict[str, str] = {}
        self.pids: dict[str, int] = {}  # name -> process (and session) id, e.g. for CPU accounting
        self.token = ""

    @property
    def auth(self) -> list[tuple[str, str]]:
        return [("authorization", f"Bearer {self.token}")]

    def _start(self, args: list[str], name: str, env: dict[str, str] | None = None) -> Path:
        log = self.dir / f"{name}.log"
        with log.open("wb") as out:
            self.procs.append(subprocess.Popen(
                args, cwd=REPO_ROOT, env={**os.environ, **(env or {})}, stdout=out,
                stderr=subprocess.STDOUT, start_new_session=True))
        self.pids[name] = self.procs[-1].pid
        return log

    def __enter__(self) -> "LocalStack":
        # The servers run in their own sessions, so a plain kill of this process would orphan them:
        # turn SIGTERM into an exception that unwinds through __exit__ (main thread only).
        self._sigterm_installed = threading.current_thread() is threading.main_thread()
        if self._sigterm_installed:
            self._previous_sigterm = signal.signal(signal.SIGTERM, _terminate)
        try:
            self._up()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _up(self) -> None:
        ports = Ports()
        redis_port = ports.one()
        (self.dir / "redis").mkdir()
        redis_log = self._start([shutil.which("redis-server") or "redis-server", "--port", str(redis_port),
                                 "--bind", "127.0.0.1", "--dir", str(self.dir / "redis"), "--save", "",
                                 "--appendonly", "no"], "redis")
        metrics = ports.block()
        service_ports = {f"{s}_port": ports.one() for s in SERVICES}
        triton_grpc, triton_http = ports.one(), ports.one()
        self.settings = Settings(
            _env_file=None, env="test", var_dir=self.dir / "var", redis_url=f"redis://127.0.0.1:{redis_port}/0",
            triton_grpc_url=f"127.0.0.1:{triton_grpc}", triton_http_port=triton_http,
            triton_metrics_port=ports.one(), metrics_port_base=metrics, log_json=True, **service_ports)
        _wait(lambda: connectable(redis_port), 10, "redis", redis_log)
        if self.triton:
            flags = ["--exit-timeout-secs", "2"]
            if self.publish:
                published = self.settings.resolved_model_repository
                published.mkdir(parents=True, exist_ok=True)
                flags += ["--model-repository", str(published), "--model-control-mode=explicit", "--load-model=*"]
            log = self._start([str(TRITON_LAUNCHER), *flags], "triton", {
                "ANNOT_TRITON_GRPC_PORT": str(triton_grpc), "ANNOT_TRITON_HTTP_PORT": str(triton_http),
                "ANNOT_TRITON_METRICS_PORT": str(self.settings.triton_metrics_port),
                "TRITON_HOME": str(REPO_ROOT / "var" / "triton" / "server"),
                **({"TRITON_MODEL_REPOSITORY": str(self.triton_repository)} if self.triton_repository else {})})
            _wait(lambda: _http_ok(f"http://127.0.0.1:{triton_http}/v2/health/ready"), 180, "tritonserver", log)
        migrate(self.settings.resolved_database_url)
        keys = KeyStore(make_session_factory(make_engine(self.settings.resolved_database_url)), 0)
        self.token = keys.create("simulation", Role.ADMIN, ["*"])[1]
        servers = [(s, s, {}) for s in self.services] + [
            (name, name.split("-")[0], changes) for name, changes in self.overrides.items()]
        for name, service, changes in servers:
            port = ports.one()
            settings = self.settings.model_copy(update={f"{service}_port": port,
                                                        "metrics_port_base": ports.block(), **changes})
            log = self._start([sys.executable, "-m", f"services.{service}.server"], name, settings.to_env())
            self.addresses[name] = f"127.0.0.1:{port}"
            _wait(lambda a=self.addresses[name]: grpc_health(a, 0.5) == "SERVING", 60, name, log)
        for service in self.workers:
            self._start([sys.executable, "-m", "celery", "-A", f"services.{service}.worker:app", "worker", "-Q",
                         service, "-n", f"{service}-{os.getpid()}@%h", "--concurrency", "1", "--without-gossip",
                         "--without-mingle", "-l", "WARNING"], f"{service}-worker", self.settings.to_env())

    def channel(self, name: str) -> grpc.Channel:
        return grpc.insecure_channel(self.addresses[name], options=[
            ("grpc.max_receive_message_length", 64 << 20), ("grpc.max_send_message_length", 64 << 20)])

    def __exit__(self, *exc) -> None:
        for proc in reversed(self.procs):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in reversed(self.procs):
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        if not self.keep:
            shutil.rmtree(self.dir, ignore_errors=True)
        if self._sigterm_installed:  # the previous handler may be None (set outside Python): restore as is
            signal.signal(signal.SIGTERM, self._previous_sigterm or signal.SIG_DFL)
            self._sigterm_installed = False


def _terminate(_signum, _frame) -> None:
    raise SystemExit(128 + signal.SIGTERM)


def connectable(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        return True
    except OSError:
        return False


def _http_ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=0.5).status_code == 200
    except httpx.HTTPError:
        return False


def segmentation_fingerprint() -> str:
    """Short digest of what decides the service's masks and statistics (the served model's folder, the
    encoding, the pipeline, the refinement and the statistics code): simulation caches live under it, so
    a new checkpoint is never read from a cache measured with an old one."""
    import hashlib  # noqa: PLC0415

    digest = hashlib.sha256()
    model_dir = served_model_dir(Settings().triton_model_name)
    code = REPO_ROOT / "services"
    for path in [*sorted(model_dir.rglob("*.pt")), *sorted(model_dir.rglob("*.pbtxt")),
                 *(code / name for name in ("models/grabcut.py", "models/click_disks.py", "models/click_encoding.py",
                                            "models/click_predictor.py", "models/click_pipeline.py",
                                            "segmentation/probability_stats.py"))]:
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]
