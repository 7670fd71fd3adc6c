"""The fuzz targets (fuzz/targets.py) hold on their seeds and on a few known-hostile inputs, and a
bounded atheris run (``python -m fuzz.run --seconds 1``) finds no crash."""

from __future__ import annotations

import subprocess
import sys

import pytest

from fuzz.run import TARGET_NAMES
from fuzz.targets import TARGETS, seeds
from tests.conftest import REPO

pytestmark = pytest.mark.unit

HOSTILE = [b"", b"\x00", b"\xff" * 64, b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, b"[" * 5000, b'{"events": [{"a": 1}]}',
           b'{"project_id": "p", "events": [{"seq": "x", "click": {"x": "NaN"}}]}', b"\x0b" * 5000]


def test_the_runner_knows_every_target():
    assert set(TARGET_NAMES) == set(TARGETS)


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_targets_hold_on_seeds_and_hostile_inputs(name):
    assert seeds(name)
    for data in [*seeds(name), *HOSTILE]:
        TARGETS[name](data)


def test_a_bounded_atheris_run_finds_no_crash(tmp_path):
    pytest.importorskip("atheris", reason="atheris not installed (.venv/bin/pip install atheris==3.0.0)")
    # the two targets that have found bugs; `python -m fuzz.run --seconds N` runs them all (each
    # target's start, instrumenting its modules, costs more than its second of fuzzing)
    run = subprocess.run([sys.executable, "-m", "fuzz.run", "--seconds", "1", "--corpus", str(tmp_path),
                          "--target", "image", "--target", "events_json"],
                         cwd=REPO, capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stdout + run.stderr[-3000:]
    assert "crashes in: none" in run.stdout
