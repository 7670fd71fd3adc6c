"""Selection's pick among a video's frames through the gateway (GET .../videos/{video}/selection), with the real
selection server (and, once a task model's predictions are scored, its worker): before any scores, a uniform draw
among the video's unlabelled frames, said so; a frame reported labelled leaves the pick; another video's frames
never enter it; once scored, the most uncertain frame first with the model version behind its score. Refusals:
an unknown video (404), a key of another project (403; an annotator of the project gets the pick: the gateway
asks with its own service key), selection down (503), a video whose frames
are not in the pool (409)."""

from __future__ import annotations

import io
import zipfile

import grpc
import numpy as np
import pytest
from PIL import Image

from annotation.v1 import common_pb2, operations_pb2, operations_pb2_grpc, selection_pb2, selection_pb2_grpc
from services.gateway.config import GatewaySettings
from tests.conftest import PYTHON, start_service, wait_until

pytestmark = pytest.mark.integration
FRAMES, H, W = 5, 48, 64


@pytest.fixture
def gateway():
    return GatewaySettings(_env_file=None, rate_per_s=1000, rate_burst=1000, fallback_timeout_s=2.0,
                           grpc_timeout_s=10)


def frames_zip(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for t in range(FRAMES):
            png = io.BytesIO()
            Image.fromarray((rng.random((H, W, 3)) * 255).astype(np.uint8)).save(png, format="PNG")
            archive.writestr(f"{t:03d}.png", png.getvalue())
    return buffer.getvalue()


def upload(client, admin: dict, seed: int) -> dict:
    reply = client.post("/v1/projects/p1/videos", headers=admin,
                        files={"file": (f"v{seed}.zip", frames_zip(seed), "application/zip")})
    assert reply.status_code == 201, reply.text
    return reply.json()


def pick(client, headers: dict, video_id: str, count: int = 50):
    return client.get(f"/v1/projects/p1/videos/{video_id}/selection", params={"count": count}, headers=headers)


@pytest.fixture
def project(settings, spawn, client, keys):
    """Selection up; project p1 with two videos registered in its pool: (selection process, video A, video B)."""
    selection = start_service(spawn, "selection", settings)
    made = client.post("/v1/projects", json={"project_id": "p1", "labels": ["car"]}, headers=keys["admin"])
    assert made.json()["selection"] == "ok", made.text
    a, b = upload(client, keys["admin"], 1), upload(client, keys["admin"], 2)
    assert a["selection"] == "ok" and b["selection"] == "ok", (a, b)
    return selection, a["video_id"], b["video_id"]


def test_unscored_pick_is_a_uniform_draw_among_the_videos_unlabelled_frames(settings, spawn, client, keys, project):
    selection, a, b = project
    admin = keys["admin"]
    first = pick(client, admin, a)
    assert first.status_code == 200, first.text
    body = first.json()
    assert body["scored"] is False and body["strategy"] == "uniform" and body["model_versions"] == []
    # selection drew among video A's frames only: the pool holds B's five as well
    assert body["candidates_considered"] == FRAMES
    assert sorted(f["frame_index"] for f in body["frames"]) == list(range(FRAMES))
    assert [f["rank"] for f in body["frames"]] == list(range(1, FRAMES + 1))
    assert all(f["reason"].startswith("uniform random draw") and f["model_version"] == "" and f["breakdown"] == {}
               for f in body["frames"])
    assert [f["frame_index"] for f in pick(client, admin, a).json()["frames"]] == \
        [f["frame_index"] for f in body["frames"]]  # the draw's seed is the video's: the marks stay put
    assert len(pick(client, admin, a, count=2).json()["frames"]) == 2

    # a frame reported labelled to selection leaves the pick
    labelled = body["frames"][0]["frame_index"]
    metadata = [("authorization", admin["Authorization"])]
    with grpc.insecure_channel(settings.service_address("selection")) as channel:
        reply = selection_pb2_grpc.SelectionStub(channel).ReportLabels(selection_pb2.ReportLabelsRequest(
            project_id="p1", pool_id="default", labels=[selection_pb2.LabelledItem(item_id=f"{a}/{labelled}")]),
            metadata=metadata, timeout=10)
    assert reply.items_completed == 1
    after = pick(client, admin, a).json()
    assert after["candidates_considered"] == FRAMES - 1
    assert sorted(f["frame_index"] for f in after["frames"]) == sorted(set(range(FRAMES)) - {labelled})
    assert sorted(f["frame_index"] for f in pick(client, admin, b).json()["frames"]) == list(range(FRAMES))

    # refusals, each said
    assert pick(client, admin, "no-such-video").status_code == 404
    assert pick(client, admin, a, count=0).status_code == 422
    assert pick(client, keys["other"], a).status_code == 403  # a key of project p2
    # selection's rule for SelectBatch is admin, but the gateway asks with its own service key (SelectBatch
    # only), so an annotator of the project sees the same pick
    assert pick(client, keys["annotator"], a).json()["frames"] == pick(client, admin, a).json()["frames"]

    selection.stop()
    down = pick(client, admin, a)
    assert down.status_code == 503 and "selection service is unavailable" in down.json()["error"]["message"], down.text
    orphan = upload(client, admin, 3)  # uploaded while selection is down: its frames never reached the pool
    assert orphan["selection"].startswith("UNAVAILABLE"), orphan["selection"]
    start_service(spawn, "selection", settings)
    missing = wait_until(lambda: (r := pick(client, admin, orphan["video_id"])).status_code != 503 and r, 30,
                         "selection answers the gateway again")
    assert missing.status_code == 409 and missing.json()["error"]["field"] == "video_id", missing.text
    assert "not in selection's pool" in missing.json()["error"]["message"]


def test_scored_pick_ranks_the_videos_frames_by_the_task_models_scores(settings, spawn, client, keys, project):
    _, a, b = project
    spawn([PYTHON, "-m", "celery", "-A", "services.selection.worker:app", "worker", "-Q", "selection",
           "-n", "selection-video@%h", "--concurrency", "1", "--without-gossip", "--without-mingle"], settings)
    metadata = [("authorization", keys["admin"]["Authorization"])]
    uncertain = 3

    def probabilities(t: int) -> selection_pb2.Tensor:
        p = 0.5 if t == uncertain else 0.02 + 0.01 * t  # frame 3 is the one the model cannot call
        maps = np.stack([np.full((H, W), 1 - p), np.full((H, W), p)]).astype("<f4")
        return selection_pb2.Tensor(shape=[2, H, W], dtype=selection_pb2.Tensor.FLOAT32, data=maps.tobytes())

    with grpc.insecure_channel(settings.service_address("selection")) as channel:
        stub = selection_pb2_grpc.SelectionStub(channel)
        stub.PutPredictions(iter([selection_pb2.PutPredictionsRequest(
            project_id="p1", pool_id="default", predictions=[selection_pb2.ItemPrediction(
                item_id=f"{a}/{t}", probabilities=probabilities(t), model_version="task-p1:3")])
            for t in range(FRAMES)]), metadata=metadata, timeout=30)
        op = stub.StartScoring(selection_pb2.StartScoringRequest(project_id="p1", pool_id="default"),
                               metadata=metadata, timeout=10).operation
        operations = operations_pb2_grpc.OperationsStub(channel)
        done = wait_until(lambda: (o := operations.GetOperation(operations_pb2.GetOperationRequest(
            project_id="p1", operation_id=op.id), metadata=metadata, timeout=10).operation).state in (
            common_pb2.Operation.SUCCEEDED, common_pb2.Operation.FAILED) and o, 120, "scoring done")
        assert done.state == common_pb2.Operation.SUCCEEDED, done.error

    body = pick(client, keys["admin"], a, count=2).json()
    assert body["scored"] is True and body["strategy"] == "combined" and body["model_versions"] == ["task-p1:3"]
    assert [f["frame_index"] for f in body["frames"]][0] == uncertain and len(body["frames"]) == 2
    best = body["frames"][0]
    assert best["model_version"] == "task-p1:3" and "entropy" in best["breakdown"]
    assert best["score"] > body["frames"][1]["score"]
    # video B has no task model's scores while the pool has some: selection picks none of its frames, and says so
    other = pick(client, keys["admin"], b).json()
    assert other["frames"] == [] and other["scored"] is None and other["candidates_considered"] == 0
