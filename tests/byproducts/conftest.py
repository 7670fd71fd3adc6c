"""Fixtures of the byproducts tests: the real server and worker processes, keys, a stub, the store."""

from __future__ import annotations

import grpc
import pytest

from annotation.v1 import byproducts_pb2_grpc
from services.common.keys import KeyStore, Role
from services.common.settings import Settings
from services.common.storage import make_engine, make_session_factory, migrate
from tests.conftest import PYTHON, start_service

SERVICE = "byproducts"


def bearer(token: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {token}")]


def key_id(token: str) -> str:
    """The id of an API key, which is the annotator id of what it records."""
    return token.removeprefix("ak_").partition(".")[0]


@pytest.fixture
def bp_settings(settings: Settings, monkeypatch) -> Settings:
    """Short visibility timeout and outbox redelivery: what a killed worker held is stored within seconds."""
    monkeypatch.setenv("ANNOT_BYPRODUCTS_REDELIVER_AFTER_S", "4")
    return settings.model_copy(update={"celery_visibility_timeout_s": 2})


@pytest.fixture
def engine(bp_settings):
    migrate(bp_settings.resolved_database_url)
    engine = make_engine(bp_settings.resolved_database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def keys(bp_settings, engine):
    store = KeyStore(make_session_factory(engine), 0)
    return {
        "admin": store.create("admin", Role.ADMIN, ["*"])[1],
        "annotator": store.create("annotator", Role.ANNOTATOR, ["p1"])[1],
        "reviewer": store.create("reviewer", Role.REVIEWER, ["p1"])[1],
    }


@pytest.fixture
def start_server(spawn, engine):
    def start(settings: Settings):
        return start_service(spawn, SERVICE, settings)
    return start


@pytest.fixture
def start_worker(spawn):
    def start(settings: Settings, name: str = "w1"):
        return spawn([PYTHON, "-m", "celery", "-A", f"services.{SERVICE}.worker:app", "worker", "-Q", SERVICE,
                      "-n", f"{name}@%h", "--concurrency", "1", "--without-gossip", "--without-mingle",
                      "--without-heartbeat", "-l", "WARNING"], settings)
    return start


@pytest.fixture
def server(bp_settings, start_server):
    return start_server(bp_settings)


@pytest.fixture
def worker(bp_settings, start_worker):
    return start_worker(bp_settings)


@pytest.fixture
def stub(bp_settings, server):
    with grpc.insecure_channel(bp_settings.service_address(SERVICE)) as channel:
        yield byproducts_pb2_grpc.ByproductsStub(channel)
