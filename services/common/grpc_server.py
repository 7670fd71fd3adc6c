"""gRPC server bootstrap used by every service.

It adds what every service needs around the service's own servicer: the standard health service
fed by dependency checks, server reflection, Prometheus metrics, the auth/error/metrics
interceptors, the Operations service, and graceful shutdown on SIGTERM.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass

import grpc
from celery import Celery
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import start_http_server
from redis import Redis

from annotation.v1 import operations_pb2, operations_pb2_grpc
from services.common import service_identity
from services.common.celery_app import make_celery
from services.common.interceptors import (
    AuthInterceptor,
    ErrorInterceptor,
    MetricsInterceptor,
)
from services.common.keys import KeyStore
from services.common.logs import configure_logging
from services.common.operations import OperationStore
from services.common.operations_server import OperationsServicer
from services.common.settings import PROTO_SERVICES, Settings, get_settings
from services.common.storage import make_engine, make_session_factory

log = logging.getLogger(__name__)

OPERATIONS_SERVICE = operations_pb2.DESCRIPTOR.services_by_name["Operations"].full_name
# Health name for liveness probes: SERVING while the process serves, whatever its dependencies do,
# so a Redis outage makes pods unready (readiness: the "" name) without restarting them.
LIVENESS = "liveness"


@dataclass
class Kit:
    """What a service's ``register`` function may use to build its servicer."""

    settings: Settings
    redis: Redis
    celery: Celery
    keys: KeyStore
    sessions: object  # sqlalchemy sessionmaker
    operations: OperationStore
    # This service's own key for calling other services (service_identity.py); empty if it calls none.
    service_key: str = ""


# A dependency check raises (any exception) when the dependency is unusable.
Check = Callable[[Kit], None]


def redis_check(kit: Kit) -> None:
    kit.redis.ping()


class ServiceServer:
    def __init__(self, service: str, register: Callable[[grpc.Server, Kit], None],
                 settings: Settings | None = None, checks: tuple[Check, ...] = (redis_check,),
                 port: int | None = None) -> None:
        self.service = service
        self.settings = settings = settings or get_settings()
        timeout = settings.dependency_timeout_s
        redis = Redis.from_url(settings.redis_url, socket_timeout=timeout, socket_connect_timeout=timeout)
        sessions = make_session_factory(make_engine(settings.resolved_database_url))
        celery = make_celery(service, settings)
        # A server sends tasks within a caller's deadline: the result backend's default reconnect policy
        # (20 tries, ~20 s) held a call long past it while Redis was down. Workers keep the default, so
        # a result is still stored across a short Redis outage.
        celery.conf.result_backend_transport_options = {
            "retry_policy": {"max_retries": 2, "interval_start": 0, "interval_step": timeout, "interval_max": timeout}}
        self.kit = Kit(settings, redis, celery,
                       KeyStore(sessions, settings.auth_cache_ttl_s), sessions,
                       OperationStore(redis, service, settings.operation_ttl_s))
        self.kit.service_key = service_identity.provision(self.kit.keys, settings, service)
        self._checks = checks
        self._stopping = threading.Event()
        self.health = health.HealthServicer(experimental_non_blocking=True)
        max_bytes = settings.grpc_max_message_mb * 1024 * 1024
        self.server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=settings.grpc_max_workers,
                                       thread_name_prefix=f"{service}-grpc"),
            interceptors=[MetricsInterceptor(), ErrorInterceptor(),
                          AuthInterceptor(self.kit.keys, settings.default_deadline_s)],
            options=[("grpc.max_receive_message_length", max_bytes),
                     ("grpc.max_send_message_length", max_bytes)],
        )
        register(self.server, self.kit)
        operations_pb2_grpc.add_OperationsServicer_to_server(
            OperationsServicer(service, self.kit.operations, self.kit.celery, redis), self.server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        self._health_names = ("", PROTO_SERVICES[service], OPERATIONS_SERVICE)
        reflection.enable_server_reflection(
            (*self._health_names[1:], health.SERVICE_NAME, reflection.SERVICE_NAME), self.server)
        self.port = self.server.add_insecure_port(
            f"{settings.host}:{settings.grpc_port(service) if port is None else port}")
        self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)

    def _set_health(self, status) -> None:
        for name in self._health_names:
            self.health.set(name, status)

    def _watch_dependencies(self) -> None:
        """Health follows the dependencies: NOT_SERVING while any check fails, never hanging."""
        serving = None
        while not self._stopping.is_set():
            failed = []
            for check in self._checks:
                try:
                    check(self.kit)
                except Exception as exc:  # noqa: BLE001 - any failure means not serving
                    failed.append(f"{check.__name__}: {exc.__class__.__name__}: {exc}")
            if serving is None or serving != (not failed):
                serving = not failed
                self._set_health(health_pb2.HealthCheckResponse.SERVING if serving
                                 else health_pb2.HealthCheckResponse.NOT_SERVING)
                log.info("health %s", "SERVING" if serving else "NOT_SERVING",
                         extra={"failed_checks": failed})
            self._stopping.wait(self.settings.health_interval_s)

    def start(self) -> None:
        self.server.start()
        self.health.set(LIVENESS, health_pb2.HealthCheckResponse.SERVING)
        threading.Thread(target=self._watch_dependencies, name="health", daemon=True).start()
        log.info("serving", extra={"service": self.service, "port": self.port})

    def stop(self, grace: float | None = None) -> None:
        """Refuse new work (health NOT_SERVING), let in-flight calls finish within the grace."""
        self._stopping.set()
        self.health.enter_graceful_shutdown()
        self.server.stop(self.settings.grpc_grace_s if grace is None else grace).wait()
        log.info("stopped", extra={"service": self.service})


def serve(service: str, register: Callable[[grpc.Server, Kit], None],
          checks: tuple[Check, ...] = (redis_check,)) -> None:
    """Entry point of ``python -m services.<name>.server``: runs until SIGTERM or SIGINT."""
    settings = get_settings()
    configure_logging(service, settings)
    start_http_server(settings.metrics_port(service), addr=settings.host)
    server = ServiceServer(service, register, settings, checks)
    server.start()
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    done.wait()
    server.stop()
