"""The local platform: every process under one supervisord, configured from the settings.

``up`` renders ``VAR_DIR/run/supervisord.conf``, starts supervisord and waits until every process
runs and answers its health check; ``down`` shuts that supervisord down, which stops exactly the
processes it started (process groups, so Celery's pool children go too).
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time
import xmlrpc.client
from dataclasses import dataclass
from pathlib import Path

from supervisor.xmlrpc import SupervisorTransport

from services.common.probes import grpc_health, http_ready, redis_ping
from services.common.settings import REPO_ROOT, SERVICES, TRITON_MODELS, Settings

TRITON_REPOSITORY = TRITON_MODELS


TRITON_LAUNCHER = REPO_ROOT / "deploy" / "local" / "tritonserver.sh"
# Byproduct persistence is the ingest bottleneck (bench/byproducts_ingest.py); a video or training job is
# minutes of fine-tuning, one at a time; the rest idles.
WORKER_CONCURRENCY = {"byproducts": 2, "video": 1, "training": 1}


@dataclass(frozen=True)
class Program:
    name: str
    command: str
    priority: int
    environment: tuple[tuple[str, str], ...] = ()


def triton_program(settings: Settings) -> Program:
    """The real tritonserver of the nvidia-pytriton wheel (.venv-triton) on deploy/triton/models and the
    repository the training worker publishes into, every model loaded at start and then through the
    model-control API (explicit mode: a promoted version is loaded without a restart)."""
    grpc_port = settings.triton_grpc_url.rsplit(":", 1)[-1]
    env = (("ANNOT_TRITON_GRPC_PORT", grpc_port), ("ANNOT_TRITON_HTTP_PORT", str(settings.triton_http_port)),
           ("ANNOT_TRITON_METRICS_PORT", str(settings.triton_metrics_port)),
           ("TRITON_HOME", str(settings.var_dir / "triton" / "server")),
           ("TRITON_MODEL_REPOSITORY", str(TRITON_REPOSITORY)))
    published = shlex.quote(str(settings.resolved_model_repository))
    return Program("triton", f"{TRITON_LAUNCHER} --exit-timeout-secs 5 --model-repository {published} "
                   "--model-control-mode=explicit --load-model=*", 15, env)


def programs(settings: Settings) -> list[Program]:
    python = shlex.quote(sys.executable)
    redis_dir = settings.var_dir / "redis"
    progs = [Program("redis", (
        f"{shutil.which('redis-server') or 'redis-server'} --port {settings.redis_port} "
        f"--bind 127.0.0.1 --protected-mode yes --dir {shlex.quote(str(redis_dir))} "
        "--appendonly yes --appendfsync everysec --save '' --daemonize no"), 10)]
    if settings.triton_local:
        progs.append(triton_program(settings))
    for service in SERVICES:
        progs.append(Program(f"{service}-server", f"{python} -m services.{service}.server", 20))
        progs.append(Program(f"{service}-worker", (
            f"{python} -m celery -A services.{service}.worker:app worker -Q {service} "
            f"-n {service}@%%h --concurrency {WORKER_CONCURRENCY.get(service, 1)} "
            "--without-gossip --without-mingle -l INFO"), 30,
            (("PROMETHEUS_MULTIPROC_DIR", str(settings.var_dir / "run" / "metrics" / f"{service}-worker")),)))
    progs.append(Program("gateway", f"{python} -m services.gateway", 40))
    return progs


def _paths(settings: Settings) -> dict[str, Path]:
    run = settings.var_dir / "run"
    return {"run": run, "conf": run / "supervisord.conf", "sock": run / "supervisor.sock",
            "pid": run / "supervisord.pid", "log": settings.var_dir / "log"}


def render_config(settings: Settings) -> str:
    paths = _paths(settings)
    lines = [
        "[unix_http_server]", f"file={paths['sock']}", "chmod=0700", "",
        "[supervisord]", f"logfile={paths['log'] / 'supervisord.log'}", f"pidfile={paths['pid']}",
        f"directory={REPO_ROOT}", "loglevel=info", "", "[rpcinterface:supervisor]",
        "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface", "",
    ]
    for prog in programs(settings):
        lines += [
            f"[program:{prog.name}]", f"command={prog.command}", f"priority={prog.priority}",
            *([f"environment={','.join(f'{k}={shlex.quote(v)}' for k, v in prog.environment)}"]
              if prog.environment else []),
            "autostart=true", "autorestart=true", "startsecs=1", "startretries=5",
            "stopsignal=TERM", "stopwaitsecs=20", "stopasgroup=true", "killasgroup=true",
            f"stdout_logfile={paths['log'] / (prog.name + '.log')}", "redirect_stderr=true",
            "stdout_logfile_maxbytes=20MB", "stdout_logfile_backups=2", "",
        ]
    return "\n".join(lines)


def _rpc(settings: Settings):
    transport = SupervisorTransport(None, None, f"unix://{_paths(settings)['sock']}")
    return xmlrpc.client.ServerProxy("http://localhost", transport=transport)


def supervisor_pid(settings: Settings) -> int | None:
    """Pid of the running supervisord of this var dir, or None."""
    try:
        return int(_rpc(settings).supervisor.getPID())
    except (OSError, xmlrpc.client.Fault, ConnectionError):
        return None


def process_states(settings: Settings) -> dict[str, dict]:
    try:
        return {p["name"]: p for p in _rpc(settings).supervisor.getAllProcessInfo()}
    except (OSError, xmlrpc.client.Fault, ConnectionError):
        return {}


def health(settings: Settings) -> dict[str, str]:
    """Each program's health: servers by gRPC health, Redis by ping, the gateway by /healthz."""
    timeout = settings.dependency_timeout_s
    states = process_states(settings)
    result = {}
    for prog in programs(settings):
        info = states.get(prog.name)
        if info is None or info["statename"] != "RUNNING":
            result[prog.name] = info["statename"] if info else "ABSENT"
        elif prog.name == "redis":
            result[prog.name] = redis_ping(settings.redis_url, timeout)
        elif prog.name.endswith("-server"):
            result[prog.name] = grpc_health(settings.service_address(prog.name[:-7]), timeout)
        elif prog.name == "triton":
            host = settings.triton_grpc_url.rsplit(":", 1)[0]
            result[prog.name] = http_ready(f"http://{host}:{settings.triton_http_port}/v2/health/ready", timeout)
        elif prog.name == "gateway":
            result[prog.name] = http_ready(f"http://{settings.host}:{settings.gateway_port}/healthz", timeout)
        else:  # a worker: supervisord's RUNNING; `annot demo` proves it consumes through a probe
            result[prog.name] = "RUNNING"
    return result


def up(settings: Settings, timeout_s: float = 120.0) -> dict[str, str]:
    """Start everything (or what is missing) and wait until healthy; raises TimeoutError if not."""
    paths = _paths(settings)
    for key in ("run", "log"):
        paths[key].mkdir(parents=True, exist_ok=True)
    (settings.var_dir / "redis").mkdir(parents=True, exist_ok=True)
    settings.resolved_model_repository.mkdir(parents=True, exist_ok=True)
    if supervisor_pid(settings) is None:
        paths["conf"].write_text(render_config(settings))
        subprocess.run([sys.executable, "-m", "supervisor.supervisord", "-c", str(paths["conf"])],
                       check=True, cwd=REPO_ROOT, env=os.environ.copy())
    else:
        _rpc(settings).supervisor.startAllProcesses(True)
    deadline = time.monotonic() + timeout_s
    while True:
        states = health(settings)
        if all(state in ("SERVING", "RUNNING") for state in states.values()):
            return states
        if time.monotonic() > deadline:
            raise TimeoutError(f"not healthy after {timeout_s:.0f} s: " + ", ".join(
                f"{name}={state}" for name, state in states.items() if state not in ("SERVING", "RUNNING")))
        time.sleep(0.5)


def down(settings: Settings, timeout_s: float = 60.0) -> list[int]:
    """Stop supervisord and every process it started; returns the pids that were stopped."""
    pid = supervisor_pid(settings)
    if pid is None:
        return []
    pids = [pid] + [p["pid"] for p in process_states(settings).values() if p["pid"]]
    _rpc(settings).supervisor.shutdown()
    deadline = time.monotonic() + timeout_s
    while any(is_alive(p) for p in pids):
        if time.monotonic() > deadline:
            raise TimeoutError(f"processes still alive after {timeout_s:.0f} s: "
                               f"{[p for p in pids if is_alive(p)]}")
        time.sleep(0.2)
    return pids


def is_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped by its parent) no longer runs.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except (OSError, IndexError):
        return False
