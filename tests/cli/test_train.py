"""``annot train`` through the gateway's REST routes (in process) to the real training server: starting a
job on demand, its clear refusals, and the versions table. No training worker runs: a started job stays
enqueued, which is what makes the second start a duplicate."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from services.cli import rest
from services.cli.main import app
from services.common.keys import KeyStore, Role
from services.common.storage import make_engine, make_session_factory, migrate
from services.gateway.app import create_app
from services.gateway.client import GatewayClient
from services.gateway.config import GatewaySettings
from services.training.annotations import AnnotationStore
from services.training.promotion import promote
from services.training.registry import Gate, Registry
from tests.conftest import start_service
from tests.training.helpers import write_project

pytestmark = pytest.mark.integration
P = "pc"


class InProcess(GatewayClient):
    def __init__(self, http) -> None:
        self.http = http

    def __exit__(self, *exc) -> None:  # the test's client outlives each command
        pass


class NoTriton:
    def publish(self, mv) -> str:
        return ""

    def withdraw(self, project_id, kind) -> None:
        pass


@pytest.fixture
def platform(settings, spawn, monkeypatch):
    """The training server, and the gateway app every command reaches, with a global admin key."""
    migrate(settings.resolved_database_url)
    sessions = make_session_factory(make_engine(settings.resolved_database_url))
    token = KeyStore(sessions, 0).create("admin", Role.ADMIN, ["*"])[1]
    start_service(spawn, "training", settings)
    limits = GatewaySettings(_env_file=None, rate_per_s=1000, rate_burst=1000)
    with TestClient(create_app(settings, limits), headers={"Authorization": f"Bearer {token}"}) as http:
        client = InProcess(http)
        monkeypatch.setattr(rest, "_gateway_client", lambda url, key: client)
        # rich sizes its tables by the terminal, 80 columns where there is none (pytest-xdist): cells were cut
        monkeypatch.setattr(rest.console, "width", 200)
        yield sessions


def test_train_start_refusals_and_versions(platform, tmp_path):
    runner = CliRunner()

    def annot(*args):
        return runner.invoke(app, list(args), env={"COLUMNS": "200"})  # the table unwrapped

    assert annot("projects", "create", P, "--label", "cat", "--label", "dog").exit_code == 0
    empty = annot("train", "versions", P)
    assert empty.exit_code == 0 and "no trained model" in empty.output
    unknown = annot("train", "start", P, "--kind", "interactive")
    assert unknown.exit_code == 1 and "project_id" in unknown.output and "no annotation" in unknown.output
    assert annot("train", "start", P, "--kind", "nonsense").exit_code == 2

    annotations = AnnotationStore(platform)
    for a in write_project(tmp_path / "images", P, 30):
        annotations.record(a)
    bad = annot("train", "start", P, "--kind", "task", "--config", '{"image_size": 8}')
    assert bad.exit_code == 1 and "task.image_size" in bad.output
    typo = annot("train", "start", P, "--kind", "interactive", "--config", '{"iteratons": 5}')
    assert typo.exit_code == 1 and "config" in typo.output

    started = annot("train", "start", P, "--kind", "interactive", "--config", '{"iterations": 5}')
    assert started.exit_code == 0, started.output
    operation = started.output.split("operation ")[1].split()[0]
    again = annot("train", "start", P, "--kind", "interactive")
    assert again.exit_code == 1 and "is running" in again.output and operation in again.output
    other_kind = annot("train", "start", P, "--kind", "task")  # one job per project *and kind*
    assert other_kind.exit_code == 0, other_kind.output

    # A version as a finished job leaves it: promoted past the gate, current.
    registry = Registry(platform)
    mv = registry.register(project_id=P, kind="interactive", operation_id="op-x", snapshot_id="s" * 32,
                           parent_version=0, command="StartTraining", config={}, class_names=[],
                           artifact=lambda version: str(tmp_path / f"{version}.pt"))
    mv = registry.update(mv, figures={"noc85": 1.0, "noc90": 1.5},
                         gate=Gate("noc85+noc90", 2.5, 3.0, 0, higher_is_better=False).record())
    promote(registry, NoTriton(), mv)
    listed = annot("train", "versions", P, "--kind", "interactive")
    assert listed.exit_code == 0, listed.output
    assert "1 *" in listed.output and "promoted" in listed.output and "passed" in listed.output, listed.output
