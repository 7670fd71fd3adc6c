"""`annot up` brings every process to healthy, every queue is consumed, `annot down` leaves nothing."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import grpc
import httpx
import pytest

from annotation.v1 import operations_pb2, operations_pb2_grpc
from services.cli import local_platform
from services.common.settings import SERVICES
from tests.conftest import PYTHON, REPO, free_port, platform_ports, settings_env

pytestmark = pytest.mark.e2e


def _environ_has(proc: Path, marker: bytes) -> bool:
    try:
        return marker in (proc / "environ").read_bytes().split(b"\0")
    except OSError:
        return False


def test_up_status_probe_down(tmp_path):
    from services.common.settings import Settings  # noqa: PLC0415

    settings = Settings(
        _env_file=None, env="test", var_dir=tmp_path / "var", redis_url=f"redis://127.0.0.1:{free_port()}/0",
        **platform_ports())
    env = {**os.environ, **settings_env(settings)}

    def annot(*args: str, check: bool = True) -> subprocess.CompletedProcess:
        return subprocess.run([PYTHON, "-m", "services.cli.main", *args], cwd=REPO, env=env, text=True,
                              capture_output=True, timeout=180, check=check)

    started = annot("up", "--timeout", "150", check=False)
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        states = local_platform.health(settings)
        assert "video" in SERVICES and set(states) == {
            "redis", "triton", "gateway", *(f"{s}-{kind}" for s in SERVICES for kind in ("server", "worker"))}
        assert annot("status").returncode == 0
        assert httpx.get(f"http://127.0.0.1:{settings.gateway_port}/healthz", timeout=5).json()["status"] == "ok"
        key = (settings.var_dir / "admin.key").read_text().strip()
        assert oct((settings.var_dir / "admin.key").stat().st_mode & 0o777) == "0o600"
        for service in SERVICES:
            with grpc.insecure_channel(settings.service_address(service)) as channel:
                stub = operations_pb2_grpc.OperationsStub(channel)
                reply = stub.ProbeQueue(operations_pb2.ProbeQueueRequest(timeout_ms=20000), timeout=30,
                                        metadata=[("authorization", f"Bearer {key}")])
                assert reply.queue == service
                with pytest.raises(grpc.RpcError) as err:
                    stub.ProbeQueue(operations_pb2.ProbeQueueRequest(), timeout=5)
                assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        listed = annot("call", settings.service_address("dialog"))
        assert "annotation.v1.Dialog" in listed.stdout.split()
        called = subprocess.run([PYTHON, "-m", "services.cli.main", "call", settings.service_address("dialog"),
                                 "annotation.v1.Operations/ProbeQueue", "-d", '{"timeout_ms": 20000}'],
                                cwd=REPO, env={**env, "ANNOT_API_KEY": key}, text=True, capture_output=True,
                                timeout=60, check=True)
        assert json.loads(called.stdout)["queue"] == "dialog"
        wrong = annot("call", settings.service_address("dialog"), "annotation.v1.Dialog/NoSuchMethod", check=False)
        assert wrong.returncode == 2 and "no method" in wrong.stdout
        pids = [p["pid"] for p in local_platform.process_states(settings).values()]
        assert len(pids) == 3 + 2 * len(SERVICES) and all(pids)
    finally:
        stopped = annot("down", check=False)
    assert stopped.returncode == 0, stopped.stdout + stopped.stderr
    assert local_platform.supervisor_pid(settings) is None
    alive = [pid for pid in pids if local_platform.is_alive(pid)]
    assert not alive, f"still running after down: {alive}"
    # Children too (Celery's pool processes): nothing with this test's settings in its environment.
    marker = f"ANNOT_VAR_DIR={settings.var_dir}".encode()
    leftovers = [p.name for p in Path("/proc").iterdir() if p.name.isdigit() and _environ_has(p, marker)
                 and local_platform.is_alive(int(p.name))]
    assert not leftovers, f"processes of this platform still running: {leftovers}"
    assert annot("status", check=False).returncode == 1
