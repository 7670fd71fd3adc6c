"""The Celery task video.propagate on the video service's queue: a real worker, real Redis, real frames."""

from __future__ import annotations

import shutil

import cv2
import pytest

from services.common.celery_app import make_celery
from services.common.masks import decode_rle, encode_rle, iou
from services.video.tasks import PROPAGATE_VIDEO, VIDEO_QUEUE
from tests.conftest import PYTHON, wait_until

pytestmark = pytest.mark.integration


def test_propagate_video_task_returns_every_frames_mask(settings, spawn, video_data, tmp_path):
    # A short video, stored as ordered frames (copied to the test's own folder, never into the repo).
    frames = tmp_path / "clip" / "frames"
    frames.mkdir(parents=True)
    for path in sorted((video_data / "car-shadow" / "frames").glob("*.jpg"))[:5]:
        shutil.copy(path, frames / path.name)
    first = cv2.imread(str(video_data / "car-shadow" / "masks" / "00000.png"), cv2.IMREAD_GRAYSCALE) > 0
    size, counts = encode_rle(first)
    worker = spawn([PYTHON, "-m", "celery", "-A", "services.video.worker:app", "worker", "-Q", VIDEO_QUEUE,
                    "-n", "video-test@%h", "--concurrency", "1", "--without-gossip", "--without-mingle"], settings)
    app = make_celery("video", settings)
    request = {"frames_dir": str(frames), "short_side": 96, "steps": 5, "suggest_count": 2,
               "suggest_granularity": "superpixel", "samples": [
                   {"frame_index": 0, "mask": {"size": size, "counts": counts}, "clicks": 6}]}
    result = app.send_task(PROPAGATE_VIDEO, args=[request], queue=VIDEO_QUEUE)
    try:
        wait_until(lambda: result.ready(), 120, "propagation finished", interval_s=0.5)
    except TimeoutError:
        pytest.fail(f"no result:\n{worker.output()[-3000:]}")
    out = result.get(timeout=5)
    assert out["frames_total"] == 5 and [f["frame_index"] for f in out["frames"]] == list(range(5))
    masks = [decode_rle(f["mask"]["size"], f["mask"]["counts"], first.shape, "mask") for f in out["frames"]]
    assert out["frames"][0]["human_annotated"] and not out["frames"][1]["human_annotated"]
    truth = cv2.imread(str(video_data / "car-shadow" / "masks" / "00004.png"), cv2.IMREAD_GRAYSCALE) > 0
    assert iou(masks[4], truth) > 0.6 and out["clicks_used"] == 6
    assert len(out["suggested_samples"]) == 2 and all(s["frame_index"] > 0 for s in out["suggested_samples"])

    bad = app.send_task(PROPAGATE_VIDEO, args=[{**request, "samples": []}], queue=VIDEO_QUEUE)
    wait_until(lambda: bad.ready(), 60, "refusal")
    assert bad.failed() and "at least one annotated sample" in str(bad.result)
