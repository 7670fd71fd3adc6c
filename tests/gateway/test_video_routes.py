"""Videos through the gateway's REST API: upload of a video file (OpenCV) and of a zip of frames, listing,
frames, COCO export with frame ids, refused uploads that leave nothing stored, project scoping, and one
propagation through the real video server and worker."""

from __future__ import annotations

import io
import os
import time
import zipfile

import cv2
import numpy as np
import pytest
from PIL import Image
from pycocotools import mask as mask_utils

from services.common.masks import decode_rle, iou
from services.common.video_layout import VIDEO_ROOT
from services.gateway.config import GatewaySettings
from services.gateway.videos import VideoStore
from services.video.frames import load_sequence
from services.video.tasks import VIDEO_QUEUE
from tests.conftest import PYTHON, SHARED_DATA, start_service, wait_until

pytestmark = pytest.mark.integration
SEQUENCE = SHARED_DATA / "video" / "car-shadow"
FRAMES = 5
SIZE = (320, 180)  # (W, H): DAVIS frames made small, so the test stays quick
MAX_FRAMES = 8


def davis(count: int = FRAMES, folder: str = "frames", flag: int = cv2.IMREAD_COLOR) -> list[np.ndarray]:
    paths = sorted((SEQUENCE / folder).iterdir())[:count]
    if not paths:
        pytest.fail(f"{SEQUENCE} is missing: the video tests read the DAVIS sequences there")
    interpolation = cv2.INTER_AREA if flag == cv2.IMREAD_COLOR else cv2.INTER_NEAREST
    return [cv2.resize(cv2.imread(str(p), flag), SIZE, interpolation=interpolation) for p in paths]


def avi(frames: list[np.ndarray], path) -> bytes:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10, SIZE)
    for frame in frames:
        writer.write(frame)
    writer.release()
    return path.read_bytes()


def png(array: np.ndarray) -> bytes:
    return cv2.imencode(".png", array)[1].tobytes()


def zipped(entries: dict[str, bytes], compression: int = zipfile.ZIP_STORED) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as archive:
        for name, data in entries.items():
            archive.writestr(name, data)
    return buffer.getvalue()


@pytest.fixture
def gateway():
    return GatewaySettings(_env_file=None, rate_per_s=1000, rate_burst=1000, max_upload_bytes=2_000_000,
                           max_image_pixels=600 * 600, max_video_upload_bytes=4_000_000,
                           max_video_frames=MAX_FRAMES, fallback_timeout_s=0.5, grpc_timeout_s=10)


@pytest.fixture
def keys(keys, client):
    """The shared keys, with projects p1 and p2 created."""
    for pid in ("p1", "p2"):
        reply = client.post("/v1/projects", json={"project_id": pid, "labels": ["car"]}, headers=keys["admin"])
        assert reply.status_code == 201, reply.text
    return keys


def upload(client, keys, data: bytes, filename: str, name: str = "", who: str = "admin"):
    return client.post("/v1/projects/p1/videos", headers=keys[who], data={"name": name} if name else None,
                       files={"file": (filename, data, "application/octet-stream")})


def test_video_file_and_zip_of_frames_are_stored_listed_served_and_exported(client, keys, settings, tmp_path):
    frames = davis()
    reply = upload(client, keys, avi(frames, tmp_path / "clip.avi"), "clip.avi", name="car shadow")
    assert reply.status_code == 201, reply.text
    video = reply.json()
    assert video["frames"] == FRAMES and (video["width"], video["height"]) == SIZE and video["name"] == "car shadow"
    assert video["source"] == "video" and video["video_id"].startswith("vid_")
    # where the video service reads it (services/common/video_layout.py), in frame order
    stored = settings.var_dir / VIDEO_ROOT / "p1" / video["video_id"]
    assert sorted(p.name for p in (stored / "frames").iterdir()) == [f"{t:05d}.jpg" for t in range(FRAMES)]
    sequence = load_sequence(stored, short_side=0)
    assert len(sequence) == FRAMES and sequence.original_size == SIZE[::-1]
    assert np.abs(sequence.frames[2].astype(int) - cv2.cvtColor(frames[2], cv2.COLOR_BGR2RGB)).mean() < 6

    # a zip of frames, ordered by natural sort of the names (2 before 10), PNG kept lossless
    parts = {"clip/f10.png": frames[2], "clip/f2.png": frames[1], "clip/f1.png": frames[0]}
    reply = upload(client, keys, zipped({name: png(a) for name, a in parts.items()}), "frames.zip")
    assert reply.status_code == 201, reply.text
    zipped_video = reply.json()
    assert zipped_video["frames"] == 3 and zipped_video["source"] == "frames" and zipped_video["name"] == "frames.zip"
    frame = client.get(f"/v1/projects/p1/videos/{zipped_video['video_id']}/frames/1", headers=keys["annotator"])
    assert frame.status_code == 200 and frame.headers["content-type"] == "image/png"
    assert (np.asarray(Image.open(io.BytesIO(frame.content))) == cv2.cvtColor(frames[1], cv2.COLOR_BGR2RGB)).all()
    assert client.get(f"/v1/projects/p1/videos/{zipped_video['video_id']}/frames/3",
                      headers=keys["annotator"]).status_code == 404

    listed = client.get("/v1/projects/p1/videos", headers=keys["annotator"]).json()
    assert listed["total"] == 2 and [v["video_id"] for v in listed["videos"]] == [video["video_id"],
                                                                                  zipped_video["video_id"]]
    one = client.get(f"/v1/projects/p1/videos/{video['video_id']}", headers=keys["annotator"]).json()
    assert one == {k: v for k, v in video.items() if k != "selection"}  # the upload also says how selection took it

    coco = client.get(f"/v1/projects/p1/videos/{video['video_id']}/exports/coco", headers=keys["reviewer"]).json()
    assert coco["videos"] == [{"id": 1, "name": "car shadow", "platform_video_id": video["video_id"],
                               "width": SIZE[0], "height": SIZE[1], "length": FRAMES}]
    assert [(i["id"], i["video_id"], i["frame_id"]) for i in coco["images"]] == [(t + 1, 1, t) for t in range(FRAMES)]
    assert coco["images"][0]["file_name"] == f"{video['video_id']}/00000.jpg"
    assert coco["annotations"] == [] and [c["name"] for c in coco["categories"]] == ["car"]


def _nothing_stored(client, keys, settings) -> None:
    assert client.get("/v1/projects/p1/videos", headers=keys["admin"]).json()["total"] == 0
    root = settings.var_dir / VIDEO_ROOT
    assert not (root / "p1").exists()
    assert not (root / ".partial").exists() or not any((root / ".partial").iterdir())


def test_refused_uploads_say_why_and_leave_nothing(client, keys, settings, tmp_path):
    frame = png(davis(1)[0])

    def refused(data: bytes, filename: str = "v.zip", status: int = 422) -> str:
        reply = upload(client, keys, data, filename)
        error = reply.json()["error"]
        assert reply.status_code == status, reply.text
        assert error["field"] == ("file" if status == 422 else "body")
        _nothing_stored(client, keys, settings)
        return error["message"]

    assert "OpenCV" in refused(b"not a video, not a zip" * 100, "clip.mp4")
    assert "OpenCV" in refused(frame[:200], "clip.avi")  # a truncated image is no video either
    # a playlist FFmpeg would follow to other local files: refused before OpenCV sees it
    assert "OpenCV" in refused(b"#EXTM3U\n#EXT-X-MEDIA-SEQUENCE:0\n#EXTINF:10.0,\nfile:///etc/passwd\n#EXT-X-ENDLIST\n",
                               "clip.avi")
    assert "OpenCV" in refused(b"RIFF\x00\x00\x00\x00AVI LIST" + b"\x00" * 100, "clip.avi")  # a header, no frame
    assert "over the limit of 8" in refused(avi(davis(MAX_FRAMES + 1), tmp_path / "long.avi"), "long.avi")
    assert "over the limit of 8" in refused(zipped({f"{t}.png": frame for t in range(MAX_FRAMES + 1)}))
    small = png(cv2.resize(davis(1)[0], (160, 90)))
    assert "one size" in refused(zipped({"0.png": frame, "1.png": small}))
    assert "parent paths" in refused(zipped({"0.png": frame, "../../evil.png": frame}))
    assert "parent paths" in refused(zipped({"/etc/evil.png": frame}))
    assert "not a frame" in refused(zipped({"0.png": frame, "notes.txt": b"hello"}))
    assert "pixels" in refused(zipped({"0.png": png(np.zeros((700, 700, 3), np.uint8))}))
    assert "decodable" in refused(zipped({"0.png": b"not a png"}))
    # zip bombs: a frame that inflates past the per-frame byte limit; frames that inflate past the total
    assert "over the limit of 2000000 bytes" in refused(
        zipped({"0.png": b"\0" * 2_500_000}, zipfile.ZIP_DEFLATED))
    assert "uncompress" in refused(zipped({f"{t}.png": b"\0" * 1_500_000 for t in range(3)}, zipfile.ZIP_DEFLATED))
    refused(np.random.default_rng(0).bytes(4_100_000), "big.avi", status=413)  # over the request limit


def test_videos_are_scoped_like_images(client, keys, tmp_path):
    video = upload(client, keys, avi(davis(2), tmp_path / "c.avi"), "c.avi").json()
    base = f"/v1/projects/p1/videos/{video['video_id']}"
    for path in ("/v1/projects/p1/videos", base, f"{base}/frames/0", f"{base}/exports/coco"):
        reply = client.get(path, headers=keys["other"])
        assert reply.status_code == 403 and reply.json()["error"]["code"] == "PERMISSION_DENIED", path
    assert client.get(f"{base}/frames/0", headers=keys["annotator"]).status_code == 200
    assert upload(client, keys, b"x", "x.avi", who="annotator").status_code == 403  # uploads need admin
    assert client.get(f"{base}/exports/coco", headers=keys["annotator"]).status_code == 403  # exports: reviewer
    # p2's admin view: p1's video is not there
    assert client.get(f"/v1/projects/p2/videos/{video['video_id']}", headers=keys["admin"]).status_code == 404
    for bad in ("nope", "%2e%2e", "vid_%2e%2e"):
        reply = client.get(f"/v1/projects/p1/videos/{bad}", headers=keys["annotator"])
        assert reply.status_code == 404, (bad, reply.text)
    assert client.get("/v1/projects/p3/videos", headers=keys["admin"]).status_code == 404
    reply = client.post(f"{base}/propagation", json={"samples": []}, headers=keys["annotator"])
    assert reply.status_code == 422 and reply.json()["error"]["field"] == "samples"


def test_delete_removes_a_video_and_a_restart_sweeps_abandoned_uploads(client, keys, settings, tmp_path):
    kept = upload(client, keys, avi(davis(2), tmp_path / "k.avi"), "k.avi").json()
    gone = upload(client, keys, avi(davis(2), tmp_path / "g.avi"), "g.avi").json()
    base = f"/v1/projects/p1/videos/{gone['video_id']}"
    mask = png(davis(1, "masks", cv2.IMREAD_GRAYSCALE)[0])
    assert client.put(f"{base}/masks/0", headers=keys["annotator"],
                      files={"file": ("m.png", mask, "image/png")}).status_code == 200
    assert client.delete(base, headers=keys["annotator"]).status_code == 403  # deleting needs admin
    assert client.delete(f"/v1/projects/p2/videos/{gone['video_id']}", headers=keys["admin"]).status_code == 404
    assert client.delete(base, headers=keys["admin"]).status_code == 204
    for path in (base, f"{base}/frames/0"):
        assert client.get(path, headers=keys["admin"]).status_code == 404, path
    assert client.delete(base, headers=keys["admin"]).status_code == 404
    listed = client.get("/v1/projects/p1/videos", headers=keys["admin"]).json()
    assert [v["video_id"] for v in listed["videos"]] == [kept["video_id"]]
    root = settings.var_dir / VIDEO_ROOT
    assert not (root / "p1" / gone["video_id"]).exists() and not any((root / ".partial").iterdir())

    # an upload cut off by a crash stays in .partial; the next gateway start removes it once it is old
    old, young = root / ".partial" / "old", root / ".partial" / "young"
    for folder in (old, young):
        (folder / "frames").mkdir(parents=True)
        (folder / "frames" / "00000.jpg").write_bytes(b"x")
    os.utime(old, (time.time() - 2 * 3600,) * 2)
    VideoStore(settings.var_dir, 1, 1, 1, 1)  # what a restarted gateway builds
    assert not old.exists() and young.exists()
    assert client.get(f"/v1/projects/p1/videos/{kept['video_id']}", headers=keys["admin"]).status_code == 200


def test_human_masks_per_frame_are_stored_and_exported(client, keys, settings, tmp_path):
    video = upload(client, keys, avi(davis(), tmp_path / "c.avi"), "c.avi").json()
    base = f"/v1/projects/p1/videos/{video['video_id']}"
    truth = davis(folder="masks", flag=cv2.IMREAD_GRAYSCALE)

    def put(index: int, data: bytes, who: str = "annotator"):
        return client.put(f"{base}/masks/{index}", headers=keys[who], files={"file": ("m.png", data, "image/png")})

    for t in (2, 0):
        reply = put(t, png(truth[t]))
        assert reply.status_code == 200 and reply.json() == {"frame_index": t, "area_px": int((truth[t] > 127).sum())}
    assert put(0, png(truth[1])).status_code == 200  # replaced
    stored = settings.var_dir / VIDEO_ROOT / "p1" / video["video_id"]
    assert sorted(p.name for p in (stored / "labels").iterdir()) == ["00000.png", "00002.png"]
    assert client.get(base, headers=keys["annotator"]).json()["masked_frames"] == [0, 2]

    reply = put(1, png(cv2.resize(truth[1], (160, 90))))
    assert reply.status_code == 422 and reply.json()["error"]["field"] == "file" and "320x180" in reply.text
    assert put(1, b"not a png").json()["error"]["field"] == "file"
    assert put(FRAMES, png(truth[0])).status_code == 404
    assert put(1, png(truth[1]), who="other").status_code == 403
    assert client.get(base, headers=keys["annotator"]).json()["masked_frames"] == [0, 2]

    coco = client.get(f"{base}/exports/coco", headers=keys["reviewer"]).json()
    assert [(a["image_id"], a["attributes"]["frame_id"]) for a in coco["annotations"]] == [(1, 0), (3, 2)]
    decoded = mask_utils.decode({"size": coco["annotations"][0]["segmentation"]["size"],
                                 "counts": coco["annotations"][0]["segmentation"]["counts"].encode()})
    assert (decoded.astype(bool) == (truth[1] > 127)).all() and coco["annotations"][0]["attributes"]["human_annotated"]
    # a sample whose mask is not of the frame's size: refused here, naming it, before any operation
    rle = mask_utils.encode(np.asfortranarray(np.ones((10, 10), np.uint8)))
    reply = client.post(f"{base}/propagation", headers=keys["annotator"], json={
        "samples": [{"frame_index": 0, "mask": {"size": [10, 10], "counts": rle["counts"].decode()}}]})
    assert reply.status_code == 422 and reply.json()["error"]["field"].startswith("samples[0].mask"), reply.text
    assert client.get(base, headers=keys["annotator"]).json()["propagations"] == []


def test_propagation_through_the_gateway_exports_per_frame_rle(client, keys, settings, spawn, tmp_path):
    start_service(spawn, "video", settings)
    spawn([PYTHON, "-m", "celery", "-A", "services.video.worker:app", "worker", "-Q", VIDEO_QUEUE,
           "-n", "video-gw@%h", "--concurrency", "1", "--without-gossip", "--without-mingle"], settings)
    video = upload(client, keys, avi(davis(), tmp_path / "c.avi"), "c.avi").json()
    base = f"/v1/projects/p1/videos/{video['video_id']}"
    truth = [m > 0 for m in davis(folder="masks", flag=cv2.IMREAD_GRAYSCALE)]
    first = mask_utils.encode(np.asfortranarray(truth[0].astype(np.uint8)))
    sample = {"frame_index": 0, "clicks": 4, "mask": {"size": first["size"], "counts": first["counts"].decode()}}
    reply = client.post(f"{base}/propagation", headers=keys["annotator"], json={
        "samples": [sample], "method": "flowwarp", "label": "car"})
    assert reply.status_code == 202, reply.text
    operation = reply.json()["operation_id"]
    assert reply.json()["kind"] == "video.propagate"

    def finished():
        body = client.get(f"{base}/propagation/{operation}", headers=keys["annotator"]).json()
        return body if body["state"] in ("succeeded", "failed") else None

    progress = wait_until(finished, 180, "propagation finished", interval_s=1)
    assert progress["state"] == "succeeded", progress
    assert progress["frames_total"] == FRAMES and progress["frames_done"] == FRAMES and progress["clicks_used"] == 4
    assert client.get(f"/v1/projects/p1/videos/{video['video_id']}/propagation/unknown",
                      headers=keys["annotator"]).status_code == 404

    coco = client.get(f"{base}/exports/coco", headers=keys["reviewer"]).json()
    assert [a["image_id"] for a in coco["annotations"]] == [t + 1 for t in range(FRAMES)]
    assert all(a["attributes"]["frame_id"] == t and a["category_id"] == 1 for t, a in enumerate(coco["annotations"]))
    assert coco["annotations"][0]["attributes"]["human_annotated"] is True
    masks = [mask_utils.decode({"size": a["segmentation"]["size"], "counts": a["segmentation"]["counts"].encode()})
             for a in coco["annotations"]]
    assert masks[0].shape == SIZE[::-1] and iou(masks[0] > 0, truth[0]) > 0.95
    assert iou(masks[2] > 0, truth[2]) > 0.5
    assert client.get(f"{base}", headers=keys["annotator"]).json()["propagations"] == [operation]
    # the same masks for the page's slider, to an annotator
    frames = client.get(f"{base}/propagation/{operation}/masks", headers=keys["annotator"]).json()["frames"]
    assert [f["frame_index"] for f in frames] == list(range(FRAMES)) and frames[0]["human_annotated"]
    assert [f["counts"] for f in frames] == [a["segmentation"]["counts"] for a in coco["annotations"]]
    assert client.get(f"{base}/propagation/unknown/masks", headers=keys["annotator"]).status_code == 404

    # no samples in the request: the stored human masks are the samples
    assert client.put(f"{base}/masks/0", headers=keys["annotator"],
                      files={"file": ("0.png", png(truth[0].astype(np.uint8) * 255), "image/png")}).status_code == 200
    reply = client.post(f"{base}/propagation", headers=keys["annotator"], json={"method": "flowwarp"})
    assert reply.status_code == 202, reply.text
    operation = reply.json()["operation_id"]
    progress = wait_until(finished, 180, "second propagation finished", interval_s=1)
    assert progress["state"] == "succeeded" and progress["frames_done"] == FRAMES, progress
    coco = client.get(f"{base}/exports/coco", headers=keys["reviewer"]).json()  # the latest propagation
    assert {a["attributes"]["operation_id"] for a in coco["annotations"]} == {operation}
    assert [c["name"] for c in coco["categories"]] == ["car"]


def frames_zip(frames: list[np.ndarray]) -> bytes:
    """Lossless frames (PNG in a zip): what the browser draws is the frame's pixels."""
    return zipped({f"f{t}.png": png(frame) for t, frame in enumerate(frames)})


def test_a_click_session_on_a_frame_stores_its_mask_as_a_human_sample(client, keys, settings, spawn, triton_server):
    seg = settings.model_copy(update={"triton_grpc_url": triton_server.grpc_url,
                                      "triton_http_port": triton_server.http_port})
    start_service(spawn, "segmentation", seg)
    video = upload(client, keys, frames_zip(davis()), "car.zip").json()
    other = upload(client, keys, frames_zip(davis(2)), "other.zip").json()
    base, who = f"/v1/projects/p1/videos/{video['video_id']}", keys["annotator"]
    truth = davis(folder="masks", flag=cv2.IMREAD_GRAYSCALE)[1] > 0
    rows, cols = np.nonzero(truth)
    x, y = float(np.median(cols)), float(np.median(rows))
    assert truth[int(y), int(x)]
    assert client.get(f"{base}/masks", headers=who).json() == {"masks": []}

    # refused: a frame past the video, a label not of the project, a key of another project, a bad initial mask
    reply = client.post(f"{base}/frames/{FRAMES}/sessions", headers=who, json={})
    assert reply.status_code == 404 and reply.json()["error"]["field"] == "index"
    reply = client.post(f"{base}/frames/1/sessions", headers=who, json={"label": "boat"})
    assert reply.status_code == 422 and reply.json()["error"]["field"] == "label"
    assert client.post(f"{base}/frames/1/sessions", headers=keys["other"], json={}).status_code == 403
    rle = mask_utils.encode(np.asfortranarray(np.ones((10, 10), np.uint8)))
    reply = client.post(f"{base}/frames/1/sessions", headers=who,
                        json={"initial_mask": {"size": [10, 10], "counts": rle["counts"].decode()}})
    assert reply.status_code == 422 and reply.json()["error"]["field"] == "initial_mask.size", reply.text

    session = client.post(f"{base}/frames/1/sessions", headers=who, json={"label": "car"}).json()
    sid = session["session_id"]
    assert session["image_id"] == f"{video['video_id']}/1" and session["frame_index"] == 1
    assert (session["width"], session["height"]) == SIZE and session["state"] == "active"
    finish = f"{base}/sessions/{sid}/finish"
    reply = client.post(finish, headers=who, json={})  # no click yet: an empty mask is no sample
    assert reply.status_code == 422 and reply.json()["error"]["field"] == "outcome", reply.text
    # the image annotator's click route serves the frame's session
    reply = client.post(f"/v1/projects/p1/sessions/{sid}/clicks", headers=who, json={"x": x, "y": y})
    assert reply.status_code == 200, reply.text
    clicked = reply.json()["mask"]
    assert decode_rle(clicked["size"], clicked["counts"], SIZE[::-1], "mask")[int(y), int(x)]
    wrong = f"/v1/projects/p1/videos/{other['video_id']}/sessions/{sid}/finish"
    reply = client.post(wrong, headers=who, json={})
    assert reply.status_code == 404 and reply.json()["error"]["field"] == "session_id"

    reply = client.post(finish, headers=who, json={})
    assert reply.status_code == 200, reply.text
    done = reply.json()
    mask = decode_rle(clicked["size"], clicked["counts"], SIZE[::-1], "mask")
    assert done["frame_index"] == 1 and done["masked_frames"] == [1] and done["session"]["state"] == "finished"
    assert done["stored"] == {"frame_index": 1, "area_px": int(mask.sum())} and done["quality_operation_id"]
    assert client.get(base, headers=who).json()["masked_frames"] == [1]
    (stored,) = client.get(f"{base}/masks", headers=who).json()["masks"]
    assert (stored["frame_index"], stored["session_id"], stored["clicks"], stored["label"]) == (1, sid, 1, "car")
    assert (decode_rle(stored["size"], stored["counts"], SIZE[::-1], "mask") == mask).all()
    again = client.post(finish, headers=who, json={})  # idempotent, and it stores nothing twice
    assert again.status_code == 200 and again.json()["stored"] is None

    # a new session on the frame starts from its stored mask; one finished as skipped stores nothing
    second = client.post(f"{base}/frames/1/sessions", headers=who, json={}).json()
    assert second["mask"] == {"size": stored["size"], "counts": stored["counts"]}
    reply = client.post(f"{base}/sessions/{second['session_id']}/finish", headers=who, json={"outcome": "skipped"})
    assert reply.status_code == 200 and reply.json()["stored"] is None
    assert client.get(f"{base}/masks", headers=who).json()["masks"][0]["session_id"] == sid
