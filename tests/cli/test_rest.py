"""``annot projects|images|videos`` through the gateway's REST client, on an in-process gateway app in place
of a network one."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from services.cli import rest
from services.cli.main import app
from services.common.keys import KeyStore, Role
from services.common.settings import get_settings
from services.common.storage import make_engine, make_session_factory, migrate
from services.gateway.app import create_app
from services.gateway.client import GatewayClient
from services.gateway.config import GatewaySettings
from tests.conftest import free_port

pytestmark = pytest.mark.integration


class InProcess(GatewayClient):
    def __init__(self, http) -> None:
        self.http = http

    def __exit__(self, *exc) -> None:  # the test's client outlives each command
        pass


@pytest.fixture
def gateway(settings, monkeypatch) -> GatewayClient:
    """The REST client every command gets, on this app, with a global admin key."""
    migrate(settings.resolved_database_url)
    token = KeyStore(make_session_factory(make_engine(settings.resolved_database_url)), 0).create(
        "admin", Role.ADMIN, ["*"])[1]
    limits = GatewaySettings(_env_file=None, rate_per_s=1000, rate_burst=1000)
    with TestClient(create_app(settings, limits), headers={"Authorization": f"Bearer {token}"}) as http:
        client = InProcess(http)
        monkeypatch.setattr(rest, "_gateway_client", lambda url, key: client)
        yield client


def frames(count: int) -> list[bytes]:
    """Distinct JPEG frames (a bright square moving right)."""
    out = []
    for t in range(count):
        image = np.zeros((90, 160, 3), np.uint8)
        image[30:60, 10 + 20 * t:40 + 20 * t] = 255
        out.append(cv2.imencode(".jpg", image)[1].tobytes())
    return out


def test_projects_and_images(gateway, tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["projects", "create", "p1", "--label", "car", "--label", "bike"])
    assert result.exit_code == 0 and "created p1 labels ['car', 'bike']" in result.output, result.output
    result = runner.invoke(app, ["projects", "create", "p1"])
    assert result.exit_code == 1 and "409 ALREADY_EXISTS" in result.output, result.output
    result = runner.invoke(app, ["projects", "list"])
    assert result.exit_code == 0 and "car, bike" in result.output, result.output
    folder = tmp_path / "images"
    folder.mkdir()
    for name, data in zip(("a.jpg", "b.jpg"), frames(2)):
        (folder / name).write_bytes(data)
    result = runner.invoke(app, ["images", "upload", str(folder), "--project", "p1"])
    assert result.exit_code == 0 and "uploaded 2 images (0 already there) to p1" in result.output, result.output
    result = runner.invoke(app, ["images", "upload", str(folder), "--project", "p1"])
    assert "uploaded 0 images (2 already there)" in result.output, result.output


def test_videos_upload_list_export_delete(gateway, tmp_path):
    gateway.create_project("p1", labels=["car"])
    folder = tmp_path / "frames"
    folder.mkdir()
    for t, data in enumerate(frames(4)):
        (folder / f"{t}.jpg").write_bytes(data)
    (folder / "notes.txt").write_text("not a frame: left out of the zip")
    runner = CliRunner()
    result = runner.invoke(app, ["videos", "upload", str(folder), "--project", "p1"])
    assert result.exit_code == 0 and "4 frames" in result.output, result.output
    (video,) = gateway.videos("p1")
    assert video["name"] == "frames" and video["source"] == "frames"
    result = runner.invoke(app, ["videos", "list", "--project", "p1"])
    assert result.exit_code == 0 and video["video_id"] in result.output
    out = tmp_path / "coco.json"
    result = runner.invoke(app, ["videos", "export", video["video_id"], "--project", "p1", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert [i["frame_id"] for i in json.loads(out.read_text())["images"]] == [0, 1, 2, 3]
    result = runner.invoke(app, ["videos", "upload", str(out), "--project", "p1"])
    assert result.exit_code == 1 and "422" in result.output
    result = runner.invoke(app, ["videos", "delete", video["video_id"], "--project", "p1"])
    assert result.exit_code == 0 and gateway.videos("p1") == []
    result = runner.invoke(app, ["videos", "delete", video["video_id"], "--project", "p1"])
    assert result.exit_code == 1 and "404" in result.output


def test_without_a_key_or_a_gateway_the_command_says_so(tmp_path, monkeypatch):
    monkeypatch.setenv("ANNOT_VAR_DIR", str(tmp_path))  # no var/admin.key there
    monkeypatch.delenv("ANNOT_API_KEY", raising=False)
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(app, ["projects", "list"])
        assert result.exit_code == 2 and "no API key" in result.output, result.output
        result = CliRunner().invoke(app, ["projects", "list", "--url", f"http://127.0.0.1:{free_port()}",
                                          "--key", "ak_x.y"])
        assert result.exit_code == 1 and "gateway unreachable" in result.output, result.output
    finally:
        get_settings.cache_clear()
