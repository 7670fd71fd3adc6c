"""The whole local platform for a browser test module: `annot up` on free ports (Redis, tritonserver, every
service and worker, the gateway), one project with the given photos, `annot down` afterwards with nothing
left running."""

from __future__ import annotations

import io
import os
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from PIL import Image

from services.cli import local_platform
from services.common.settings import Settings
from services.gateway.client import GatewayClient
from tests.conftest import PYTHON, REPO, free_port, platform_ports, settings_env


def png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def platform_settings(tmp_path: Path) -> Settings:
    """Settings of a whole local platform of its own: its var dir under ``tmp_path``, free ports, its own Redis."""
    return Settings(
        _env_file=None, env="test", var_dir=tmp_path / "var", redis_url=f"redis://127.0.0.1:{free_port()}/0",
        **platform_ports())


@contextmanager
def annot_up(tmp_path: Path, labels: list[str], photos: dict[str, np.ndarray],
             project: str = "web") -> Iterator[dict]:
    """``{"settings", "annot", "url", "key", "images"}`` of a running platform whose ``project`` holds
    ``photos`` (name -> RGB array) with ``labels``; ``annot(*args)`` runs the CLI against it."""
    settings = platform_settings(tmp_path)
    env = {**os.environ, **settings_env(settings)}

    def annot(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
        return subprocess.run([PYTHON, "-m", "services.cli.main", *args], cwd=REPO, env=env, text=True,
                              capture_output=True, timeout=timeout, check=False)

    started = annot("up", "--timeout", "200")
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        url = f"http://127.0.0.1:{settings.gateway_port}"
        key = (settings.var_dir / "admin.key").read_text().strip()
        with GatewayClient(url, key) as client:
            client.create_project(project, "Web test", labels)
            images = client.upload(project, [(name, png(photo)) for name, photo in photos.items()])
        yield {"settings": settings, "annot": annot, "url": url, "key": key,
               "images": {i["image_id"]: i for i in images}}
    finally:
        annot("down")
        assert local_platform.supervisor_pid(settings) is None
