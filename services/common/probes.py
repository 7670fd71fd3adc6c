"""Reachability probes of the platform's parts, shared by the gateway's /healthz and ``annot status``.

Each probe has a timeout and answers a word, never raises and never hangs.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import grpc
import httpx
from grpc_health.v1 import health_pb2, health_pb2_grpc
from redis import Redis
from redis.exceptions import RedisError

from services.common.settings import SERVICES, Settings


def grpc_health(address: str, timeout_s: float, service: str = "") -> str:
    """SERVING, NOT_SERVING, SERVICE_UNKNOWN or UNREACHABLE."""
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            reply = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout_s)
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                return "SERVICE_UNKNOWN"
            return "UNREACHABLE"
    return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)


def redis_ping(url: str, timeout_s: float) -> str:
    client = Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
    try:
        return "SERVING" if client.ping() else "NOT_SERVING"
    except (RedisError, OSError):
        return "UNREACHABLE"
    finally:
        client.close()


def http_ready(url: str, timeout_s: float) -> str:
    try:
        return "SERVING" if httpx.get(url, timeout=timeout_s).status_code == 200 else "NOT_SERVING"
    except httpx.HTTPError:
        return "UNREACHABLE"


def platform_health(settings: Settings) -> dict[str, str]:
    """State of Redis, Triton and every service's gRPC health, probed in parallel."""
    timeout = settings.dependency_timeout_s
    triton_host = settings.triton_grpc_url.rsplit(":", 1)[0]
    jobs = {
        "redis": lambda: redis_ping(settings.redis_url, timeout),
        "triton": lambda: http_ready(f"http://{triton_host}:{settings.triton_http_port}/v2/health/ready", timeout),
        **{name: (lambda name=name: grpc_health(settings.service_address(name), timeout)) for name in SERVICES},
    }
    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        futures = {name: pool.submit(job) for name, job in jobs.items()}
        return {name: future.result() for name, future in futures.items()}
