"""In-process fixtures for the hardening tests: the real gateway app (FastAPI TestClient), one real
gRPC server with the kit's interceptors hosting every service's API (behaviour not built: the calls
that pass authentication answer UNIMPLEMENTED), keys of every role and scope. No Redis is needed:
the gateway's REST routes under test and the auth interceptor only read the key store (SQLite)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from fastapi.testclient import TestClient

from annotation.v1 import (
    byproducts_pb2,
    byproducts_pb2_grpc,
    dialog_pb2,
    dialog_pb2_grpc,
    quality_pb2,
    quality_pb2_grpc,
    segmentation_pb2,
    segmentation_pb2_grpc,
    selection_pb2,
    selection_pb2_grpc,
    training_pb2,
    training_pb2_grpc,
    video_pb2,
    video_pb2_grpc,
)
from services.common.grpc_server import ServiceServer
from services.common.keys import KeyStore, Role
from services.common.settings import SERVICES, Settings
from services.common.storage import make_engine, make_session_factory, migrate
from services.gateway.app import create_app
from services.gateway.config import GatewaySettings
from services.simulation.stack import free_port

PROTO_MODULES = (selection_pb2, segmentation_pb2, byproducts_pb2, quality_pb2, dialog_pb2, video_pb2, training_pb2)
SERVICERS = (
    (selection_pb2_grpc.SelectionServicer, selection_pb2_grpc.add_SelectionServicer_to_server),
    (segmentation_pb2_grpc.SegmentationServicer, segmentation_pb2_grpc.add_SegmentationServicer_to_server),
    (byproducts_pb2_grpc.ByproductsServicer, byproducts_pb2_grpc.add_ByproductsServicer_to_server),
    (quality_pb2_grpc.QualityServicer, quality_pb2_grpc.add_QualityServicer_to_server),
    (dialog_pb2_grpc.DialogServicer, dialog_pb2_grpc.add_DialogServicer_to_server),
    (video_pb2_grpc.VideoServicer, video_pb2_grpc.add_VideoServicer_to_server),
    (training_pb2_grpc.TrainingServicer, training_pb2_grpc.add_TrainingServicer_to_server),
)


def hardening_settings(var_dir, grpc_port: int) -> Settings:
    address = f"127.0.0.1:{grpc_port}"
    return Settings(_env_file=None, env="test", var_dir=var_dir, redis_url=f"redis://127.0.0.1:{free_port()}/0",
                    dependency_timeout_s=0.3, health_interval_s=5, auth_cache_ttl_s=0,
                    triton_grpc_url=f"127.0.0.1:{free_port()}", triton_http_port=free_port(),
                    service_hosts={name: address for name in SERVICES})


def _draining(servicer_class):
    """The generated base servicer (UNIMPLEMENTED), reading a client stream first as a real one does:
    the auth interceptor checks each streamed message's project_id as the servicer reads it."""
    servicer = servicer_class()
    service = servicer_class.__name__.removesuffix("Servicer")
    descriptor = next(s for s in (m.DESCRIPTOR.services_by_name.get(service) for m in PROTO_MODULES) if s)
    for method in descriptor.methods:
        if method.client_streaming:
            original = getattr(servicer, method.name)

            def drain(request_iterator, context, original=original):
                return original(list(request_iterator), context)
            setattr(servicer, method.name, drain)
    return servicer


def register_all(server, _kit) -> None:
    for servicer, add in SERVICERS:
        add(_draining(servicer), server)


@dataclass
class Platform:
    settings: Settings
    grpc_address: str
    keys: dict[str, str]  # name -> plaintext API key
    store: KeyStore


@pytest.fixture(scope="module")
def platform(tmp_path_factory) -> Iterator[Platform]:
    port = free_port()
    settings = hardening_settings(tmp_path_factory.mktemp("var"), port)
    migrate(settings.resolved_database_url)
    store = KeyStore(make_session_factory(make_engine(settings.resolved_database_url)), 0)
    keys = {
        "admin": store.create("admin", Role.ADMIN, ["*"])[1],
        "admin_p1": store.create("admin_p1", Role.ADMIN, ["p1"])[1],
        "reviewer_p1": store.create("reviewer_p1", Role.REVIEWER, ["p1"])[1],
        "annotator_p1": store.create("annotator_p1", Role.ANNOTATOR, ["p1"])[1],
        "admin_p2": store.create("admin_p2", Role.ADMIN, ["p2"])[1],
    }
    server = ServiceServer("selection", register_all, settings, checks=(), port=port)
    server.start()
    yield Platform(settings, f"127.0.0.1:{port}", keys, store)
    server.stop(0)


def gateway_settings(**overrides) -> GatewaySettings:
    values = dict(rate_per_s=10_000, rate_burst=10_000, max_upload_bytes=2_000_000, max_image_pixels=600 * 600,
                  fallback_timeout_s=0.5, grpc_timeout_s=2)
    return GatewaySettings(_env_file=None, **{**values, **overrides})


@pytest.fixture(scope="module")
def client(platform) -> Iterator[TestClient]:
    with TestClient(create_app(platform.settings, gateway_settings()), raise_server_exceptions=False) as test_client:
        yield test_client


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def projects(client, platform) -> None:
    """Projects p1 and p2 (selection answers UNIMPLEMENTED: said in the response, not fatal)."""
    for pid in ("p1", "p2"):
        reply = client.post("/v1/projects", json={"project_id": pid}, headers=bearer(platform.keys["admin"]))
        assert reply.status_code == 201, reply.text
