"""`annot demo --no-wait` as `make demo` meets it, on a platform of its own (it starts it and stops it): the
dialog's question, clicks, the quality score, a training round (a task model version promoted or rejected by the
gate) and the next question: after a promotion one picked from the promoted version's scores, else named with the
version the project is on. Its own module, so it runs beside the browser tests rather than after them."""

from __future__ import annotations

import os
import re
import subprocess

import httpx
import pytest

from services.cli import local_platform
from tests.conftest import PYTHON, REPO, settings_env
from tests.e2e.annot_platform import platform_settings

pytestmark = pytest.mark.e2e


@pytest.mark.timeout(900)
def test_the_demo(tmp_path):
    settings = platform_settings(tmp_path)
    env = {**os.environ, **settings_env(settings)}
    env.pop("ANNOT_TRAINING_HELDOUT_PERCENT", None)  # the demo's own held-out share
    demo = subprocess.run([PYTHON, "-m", "services.cli.main", "demo", "--no-wait"], cwd=REPO, env=env, text=True,
                          capture_output=True, timeout=840, check=False)
    out = " ".join(demo.stdout.split())  # the console wraps its lines
    assert demo.returncode == 0, demo.stdout + demo.stderr
    assert "no question from the dialog" not in out and "demo failed" not in out, out
    for expected in ("question (", "click +", "submitted as", "quality: predicted IoU", "web annotator: http://"):
        assert expected in out, out
    # the training round: a snapshot with both splits, a task model version the gate promoted or rejected,
    # and the next question from the dialog, named with the version the project is on afterwards
    snapshots = re.findall(r"snapshot \w+ \(\d+ ms\): \d+ annotations on \d+ images, (\d+) to train on, (\d+) held "
                           r"out \(50%", out)
    assert snapshots and int(snapshots[-1][0]) > 0 and int(snapshots[-1][1]) > 0, out
    trained = re.search(r"task model v(\d+) trained in [\d.]+ s and (promoted|rejected by the promotion gate)", out)
    assert trained, out
    version = int(trained[1]) if trained[2] == "promoted" else None
    if version is not None:  # picked from the promoted version's scores (selection re-scored the pool with it)
        asked = re.search(r"next question, asked of task model v(\d+)'s scores \((task-[\w-]+):(\d+)\) \(\d+ ms\): "
                          r"(\w+) about", out)
        assert asked and int(asked[1]) == int(asked[3]) == version, out
    else:  # rejected: named with the version the project stays on and the scores the question came from
        asked = re.search(r"next question, asked with (task model v\d+|no task model), from (the scores of \S+|no "
                          r"model's scores)[^:]*\(\d+ ms\): (\w+) about", out)
        assert asked, out
    assert out.index(asked[0]) > out.index(trained[0]) > out.index("quality: predicted IoU")
    assert local_platform.supervisor_pid(settings) is None  # the demo stopped what it started
    with pytest.raises(httpx.HTTPError):
        httpx.get(f"http://127.0.0.1:{settings.gateway_port}/healthz", timeout=2)
