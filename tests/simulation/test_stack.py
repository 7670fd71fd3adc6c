"""The private stack the simulation commands start: a plain kill of the command stops its servers too."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.integration

SCRIPT = """
import sys, time
from services.simulation.stack import LocalStack
with LocalStack([], triton=False) as stack:
    print(" ".join(str(p.pid) for p in stack.procs), flush=True)
    time.sleep(120)
"""


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:  # a zombie is gone for our purpose
            return stat.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_sigterm_stops_the_stack_servers():
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT], cwd=REPO, stdout=subprocess.PIPE, text=True)
    pids: list[int] = []
    try:
        pids = [int(p) for p in proc.stdout.readline().split()]
        assert len(pids) == 1 and _alive(pids[0])  # its Redis, in a session of its own
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 128 + signal.SIGTERM
        deadline = time.monotonic() + 10
        while any(_alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [p for p in pids if _alive(p)]
    finally:
        proc.kill()
        for pid in pids:  # when the test fails, do not leave the servers behind
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


@pytest.mark.unit
def test_ports_of_one_stack_are_distinct_and_stay_out_of_the_metrics_blocks():
    from services.simulation.stack import Ports  # noqa: PLC0415

    ports = Ports()
    blocks = [ports.block() for _ in range(2)]
    singles = [ports.one() for _ in range(200)]
    reserved = {p for base in blocks for p in range(base, base + 21)}
    assert len(set(singles)) == len(singles) and not reserved & set(singles)
    assert abs(blocks[0] - blocks[1]) > 20
