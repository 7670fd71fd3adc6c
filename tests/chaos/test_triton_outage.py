"""Triton stopped while several annotators click (extends the single-session check of
tests/segmentation/test_service.py): every click during the outage is answered UNAVAILABLE naming
Triton (never DEADLINE_EXCEEDED, never a hang), a failed click leaves its session as it was, the same
server process recovers by itself once Triton is back, and every session then takes clicks and
finishes: no session is stuck, no click is recorded twice or lost."""

from __future__ import annotations

import io
import threading
import time

import grpc
import numpy as np
import pytest
from PIL import Image

from annotation.v1 import common_pb2, segmentation_pb2_grpc
from annotation.v1 import segmentation_pb2 as pb
from services.common.probes import grpc_health
from tests.chaos.conftest import annotator_key
from tests.conftest import wait_until

pytestmark = pytest.mark.integration


def _image() -> bytes:
    yy, xx = np.mgrid[:120, :160]
    image = np.full((120, 160, 3), (40, 90, 40), np.uint8)
    image[(yy - 60) ** 2 + (xx - 80) ** 2 < 35 ** 2] = (220, 60, 50)
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="JPEG", quality=95)
    return buffer.getvalue()


POINTS = [(80, 60, True), (10, 10, False), (90, 70, True), (150, 110, False)]


def run_outage(settings, triton_server, start_server, chaos_report, name: str, annotators: int, outage_s: float,
               outages: int = 1) -> None:
    settings = settings.model_copy(update={
        "triton_grpc_url": triton_server.grpc_url, "triton_http_port": triton_server.http_port,
        "segmentation_session_ttl_s": 600})
    token = annotator_key(settings)
    meta = [("authorization", f"Bearer {token}")]
    start_server(settings, "segmentation")
    address = settings.service_address("segmentation")
    data = _image()
    codes: dict[str, int] = {}
    messages: dict[str, str] = {}
    accepted = [0] * annotators
    requests = [0]
    phase = {"down": False, "ups": []}
    first_ok_after_up: list[float] = []
    health_while_down: set[str] = set()
    stop = threading.Event()
    lock = threading.Lock()

    with grpc.insecure_channel(address) as channel:
        stub = segmentation_pb2_grpc.SegmentationStub(channel)
        sids = [stub.StartSession(pb.StartSessionRequest(project_id="p1", image_data=data), metadata=meta,
                                  timeout=30).session.session_id for _ in range(annotators)]

        def annotate(k: int) -> None:
            n = 0
            while not stop.is_set():
                x, y, positive = POINTS[n % len(POINTS)]
                n += 1
                with lock:
                    requests[0] += 1
                try:
                    stub.AddClick(pb.AddClickRequest(project_id="p1", session_id=sids[k], click=common_pb2.Click(
                        x=x, y=y, positive=positive)), metadata=meta, timeout=3)
                    with lock:
                        accepted[k] += 1
                        if phase["ups"] and len(first_ok_after_up) < len(phase["ups"]):
                            first_ok_after_up.append(time.monotonic() - phase["ups"][-1])
                except grpc.RpcError as err:
                    with lock:
                        codes[err.code().name] = codes.get(err.code().name, 0) + 1
                        messages.setdefault(err.code().name, err.details())
                    time.sleep(0.2)

        threads = [threading.Thread(target=annotate, args=(k,), daemon=True) for k in range(annotators)]
        for thread in threads:
            thread.start()
        try:
            for round_ in range(outages):
                before = sum(accepted)
                wait_until(lambda: sum(accepted) >= before + annotators, 120, "clicks answered")
                triton_server.stop()
                phase["down"] = True
                ended = time.monotonic() + outage_s
                while time.monotonic() < ended:
                    health_while_down.add(grpc_health(address, 0.5) or "NONE")
                    time.sleep(0.3)
                phase["down"] = False
                triton_server.start()
                phase["ups"].append(time.monotonic())
                wait_until(lambda: len(first_ok_after_up) > round_, 60, "a click answered after Triton is back")
            at_up = list(accepted)
            wait_until(lambda: all(a > b for a, b in zip(accepted, at_up)), 120, "every session clicking again")
        finally:
            stop.set()
            for thread in threads:
                thread.join(30)
            if triton_server.proc is None or triton_server.proc.poll() is not None:
                triton_server.start()
        recorded, finished = [], 0
        for sid in sids:
            got = stub.GetSession(pb.SegmentationGetSessionRequest(project_id="p1", session_id=sid), metadata=meta,
                                  timeout=10)
            recorded.append(len(got.session.clicks))
            reply = stub.FinishSession(pb.FinishSessionRequest(project_id="p1", session_id=sid,
                                                               outcome=common_pb2.SESSION_OUTCOME_SUBMITTED),
                                       metadata=meta, timeout=10)
            finished += reply.session.state == pb.SEGMENTATION_SESSION_STATE_FINISHED
    lost = sum(max(0, a - r) for a, r in zip(accepted, recorded))
    duplicates = sum(max(0, r - a) for a, r in zip(accepted, recorded))
    row = chaos_report.record(
        name, requests=requests[0], client_errors=sum(codes.values()), lost=lost, duplicates=duplicates,
        recovery_s=max(first_ok_after_up) if first_ok_after_up else None, annotators=annotators,
        outage_s=outage_s, outages=outages, error_codes=codes, messages=messages,
        health_while_down=sorted(health_while_down), clicks_accepted=sum(accepted), sessions_finished=finished)
    assert codes.get("UNAVAILABLE"), "clicks must have met the outage"
    assert set(codes) == {"UNAVAILABLE"}, row  # within the deadline: never DEADLINE_EXCEEDED
    assert "Triton" in messages["UNAVAILABLE"], row
    assert lost == 0 and duplicates == 0, row
    assert finished == annotators, "no session is stuck"


def test_triton_stopped_during_clicks_of_several_annotators(chaos_settings, triton_server, start_server,
                                                            chaos_report):
    run_outage(chaos_settings, triton_server, start_server, chaos_report, "triton-stop", annotators=4, outage_s=3)


@pytest.mark.chaos
def test_triton_stopped_three_times_under_more_annotators(chaos_settings, triton_server, start_server,
                                                          chaos_report):
    run_outage(chaos_settings, triton_server, start_server, chaos_report, "triton-stop-x3", annotators=12,
               outage_s=8, outages=3)
