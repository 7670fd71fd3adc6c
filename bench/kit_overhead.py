"""What the service kit's interceptors (metrics, errors, auth) cost per gRPC call.

Side by side in one run: the same Operations servicer on a bare grpc.server and on the kit's
ServiceServer, the same authenticated call (GetOperation of a stored operation: two Redis GETs),
at several concurrencies. Reports p50/p95 latency and the kit/bare ratio; absolute times hold only for
the machine they were measured on.

    python -m bench.kit_overhead --out bench/results
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
import time
from concurrent import futures
from pathlib import Path

import grpc
import numpy as np
import typer
from tqdm import tqdm

from annotation.v1 import operations_pb2, operations_pb2_grpc
from services.common.grpc_server import ServiceServer
from services.common.keys import Role
from services.common.operations_server import OperationsServicer
from services.common.settings import Settings
from services.common.storage import migrate
from services.simulation.stack import free_port

app = typer.Typer(add_completion=False)


def _measure(address: str, token: str, concurrency: int, calls: int) -> np.ndarray:
    request = operations_pb2.GetOperationRequest(project_id="bench", operation_id="bench-op")
    metadata = [("authorization", f"Bearer {token}")]
    with grpc.insecure_channel(address) as channel:
        stub = operations_pb2_grpc.OperationsStub(channel)

        def one(_):
            start = time.perf_counter()
            stub.GetOperation(request, metadata=metadata, timeout=10)
            return time.perf_counter() - start

        for _ in range(50):  # warm-up: channels, caches
            one(0)
        with futures.ThreadPoolExecutor(concurrency) as pool:
            return np.array(list(pool.map(one, range(calls)))) * 1000


@app.command()
def main(out: Path = Path("bench/results"), calls: int = 2000,
         concurrency: list[int] = typer.Option([1, 8])) -> None:
    out.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="annot-bench-"))
    redis_port = free_port()
    redis = subprocess.Popen([shutil.which("redis-server") or "redis-server", "--port", str(redis_port),
                              "--bind", "127.0.0.1", "--save", "", "--dir", str(workdir)],
                             stdout=subprocess.DEVNULL)
    try:
        time.sleep(0.5)
        settings = Settings(_env_file=None, env="test", var_dir=workdir, redis_url=f"redis://127.0.0.1:{redis_port}/0",
                            log_json=True, log_level="WARNING")
        migrate(settings.resolved_database_url)
        kit = ServiceServer("selection", lambda server, kit: None, settings, port=free_port())
        _, token = kit.kit.keys.create("bench", Role.ADMIN, ["*"])
        kit.kit.operations.create("bench-op", "selection.bench", "bench")
        kit.start()
        bare = grpc.server(futures.ThreadPoolExecutor(settings.grpc_max_workers))
        operations_pb2_grpc.add_OperationsServicer_to_server(
            OperationsServicer("selection", kit.kit.operations, kit.kit.celery, kit.kit.redis), bare)
        bare_port = bare.add_insecure_port(f"127.0.0.1:{free_port()}")
        bare.start()
        rows = []
        for conc in tqdm(concurrency, desc="concurrency"):
            bare_ms = _measure(f"127.0.0.1:{bare_port}", token, conc, calls)
            kit_ms = _measure(f"127.0.0.1:{kit.port}", token, conc, calls)
            rows.append({"concurrency": conc, "calls": calls,
                         "bare_p50_ms": float(np.percentile(bare_ms, 50)), "bare_p95_ms": float(np.percentile(bare_ms, 95)),
                         "kit_p50_ms": float(np.percentile(kit_ms, 50)), "kit_p95_ms": float(np.percentile(kit_ms, 95))})
            rows[-1]["ratio_p50"] = rows[-1]["kit_p50_ms"] / rows[-1]["bare_p50_ms"]
        kit.stop(0)
        bare.stop(0)
    finally:
        redis.terminate()
        redis.wait()
        shutil.rmtree(workdir, ignore_errors=True)
    (out / "kit_overhead.json").write_text(json.dumps(rows, indent=2))
    lines = ["# Service-kit overhead per call (GetOperation of a stored operation)", "",
             "| concurrency | bare p50 ms | bare p95 ms | kit p50 ms | kit p95 ms | kit/bare p50 |",
             "| --- | --- | --- | --- | --- | --- |"]
    lines += [f"| {r['concurrency']} | {r['bare_p50_ms']:.3f} | {r['bare_p95_ms']:.3f} | {r['kit_p50_ms']:.3f} | "
              f"{r['kit_p95_ms']:.3f} | {r['ratio_p50']:.2f} |" for r in rows]
    (out / "kit_overhead.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    app()
