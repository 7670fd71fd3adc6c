"""The training service as a fixture: its real gRPC server, a real Celery worker on the ``training`` queue,
and the real tritonserver in explicit model-control mode on the repository the worker publishes into."""

from __future__ import annotations

import time

import grpc
import pytest

from annotation.v1 import operations_pb2_grpc, training_pb2_grpc
from services.common.celery_app import make_celery
from services.common.keys import KeyStore, Role
from services.common.storage import make_engine, make_session_factory, migrate
from tests.conftest import PYTHON, Triton, start_service
from tests.training.helpers import SCRATCH_BASE


@pytest.fixture(scope="module")
def triton(tmp_path_factory):
    """tritonserver on an empty repository that only the training worker fills, models loaded by API."""
    repository = tmp_path_factory.mktemp("published")
    server = Triton(tmp_path_factory.mktemp("training-triton"), model_repository=repository,
                    args=("--model-control-mode=explicit",))
    server.start()
    yield server
    server.stop()


def start_worker(spawn, settings, name: str = "training-test"):
    """A real Celery worker on the ``training`` queue (one job at a time, as deployed)."""
    return spawn([PYTHON, "-m", "celery", "-A", "services.training.worker:app", "worker", "-Q", "training",
                  "-n", f"{name}@%h", "--concurrency", "1", "--without-gossip", "--without-mingle"], settings)


def _service(settings, spawn, triton, **update):
    # Interactive jobs fine-tune the small clickseg here: the default clickseg_lite0 (with its GrabCut) already
    # finds the synthetic discs exactly, leaving nothing to show; its fine-tuning is tested in
    # test_interactive.py and, through the running platform, in tests/bench/test_loop.py.
    settings = settings.model_copy(update={"triton_grpc_url": triton.grpc_url,
                                           "training_model_repository": str(triton.model_repository),
                                           "training_interactive_base": str(SCRATCH_BASE), **update})
    migrate(settings.resolved_database_url)
    admin = KeyStore(make_session_factory(make_engine(settings.resolved_database_url)), 0).create(
        f"admin-{time.time_ns()}", Role.ADMIN, ["*"])[1]
    start_service(spawn, "training", settings)
    worker = start_worker(spawn, settings)
    celery = make_celery("training", settings)
    with grpc.insecure_channel(settings.service_address("training")) as channel:
        yield {"stub": training_pb2_grpc.TrainingStub(channel), "ops": operations_pb2_grpc.OperationsStub(channel),
               "admin": [("authorization", f"Bearer {admin}")], "celery": celery, "triton": triton,
               "settings": settings, "worker": worker}


@pytest.fixture
def service(settings, spawn, triton):
    yield from _service(settings, spawn, triton, training_trigger_every=0)


@pytest.fixture
def triggering_service(settings, spawn, triton):
    """Trains the task model after every 6 newly accepted annotations of a project."""
    yield from _service(settings, spawn, triton, training_trigger_every=6, training_trigger_kinds="task")


@pytest.fixture
def redelivering_service(settings, spawn, triton):
    """A 5 s visibility timeout: a killed worker's job comes back within seconds, not the deployed hour."""
    yield from _service(settings, spawn, triton, training_trigger_every=0, celery_visibility_timeout_s=5,
                        celery_visibility_timeout_by_queue={})
