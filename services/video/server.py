"""gRPC adapter of ``annotation.v1.Video``: StartPropagation, GetPropagation, StreamPropagationMasks.

Proto <-> the JSON request of ``job.py`` and back; the work runs in the Celery task ``video.propagate``
on queue ``video`` (``worker.py``). A video is an ordered folder of frames at
``VAR_DIR/videos/<project_id>/<video_id>/frames/`` (frame order = file-name order), written by the gateway.

Run: ``python -m services.video.server``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import grpc

from annotation.v1 import common_pb2, video_pb2, video_pb2_grpc
from services.common.errors import FailedPrecondition, InvalidArgument, NotFound
from services.common.grpc_server import Kit, serve
from services.common.operations import status_from_task
from services.common.operations_server import operation_proto
from services.common.video_layout import ID, VIDEO_ROOT
from services.video.tasks import PROPAGATE_VIDEO, VIDEO_QUEUE

METHODS = {video_pb2.PROPAGATION_METHOD_UNSPECIFIED: "finetune",
           video_pb2.PROPAGATION_METHOD_TEST_TIME_FINE_TUNING: "finetune",
           video_pb2.PROPAGATION_METHOD_FLOW_WARP: "flowwarp",
           video_pb2.PROPAGATION_METHOD_INTERPOLATE: "interpolate"}
FLOWS = {video_pb2.OPTICAL_FLOW_UNSPECIFIED: "dis", video_pb2.OPTICAL_FLOW_DIS: "dis",
         video_pb2.OPTICAL_FLOW_FARNEBACK: "farneback"}
WORKING_SHORT_SIDE = 240
FOLLOW_POLL_S = 0.5


def _region(region: common_pb2.Region, field: str) -> dict | None:
    kind = region.WhichOneof("kind")
    if kind in (None, "whole_image", "frame"):
        return None
    if kind == "box":
        b = region.box
        return {"kind": "box", "x": b.x, "y": b.y, "width": b.width, "height": b.height}
    if kind == "patch":
        if region.patch.size_px == 0:
            raise InvalidArgument(f"{field}.patch.size_px", "must be > 0")
        return {"kind": "patch", "row": region.patch.row, "col": region.patch.col, "size_px": region.patch.size_px}
    return {"kind": "superpixel", "segment_id": region.superpixel.segment_id,
            "n_segments": region.superpixel.n_segments}


def _granularity(request) -> str:
    g = request.suggest_granularity
    if g in (common_pb2.GRANULARITY_UNSPECIFIED, common_pb2.GRANULARITY_FRAME):
        return "frame"
    if g == common_pb2.GRANULARITY_SUPERPIXEL:
        return "superpixel"
    if g == common_pb2.GRANULARITY_PATCH and request.suggest_patch_size_px in (16, 64):
        return f"rect{request.suggest_patch_size_px}"
    raise InvalidArgument("suggest_granularity", "FRAME, SUPERPIXEL, or PATCH with suggest_patch_size_px 16 or 64")


class VideoServicer(video_pb2_grpc.VideoServicer):
    def __init__(self, kit: Kit) -> None:
        self.kit = kit
        self.settings = kit.settings

    def _frames_dir(self, project_id: str, video_id: str) -> Path:
        for field, value in (("project_id", project_id), ("video_id", video_id)):
            if not ID.match(value):
                raise InvalidArgument(field, "1-128 characters of [A-Za-z0-9_.-], starting with a letter or digit")
        folder = Path(self.settings.var_dir) / VIDEO_ROOT / project_id / video_id / "frames"
        if not folder.is_dir() or not any(folder.iterdir()):
            raise NotFound(f"no video {video_id!r} in project {project_id!r}", field="video_id")
        return folder

    def _meta_key(self, op_id: str) -> str:
        return f"annot:video:{op_id}"

    def StartPropagation(self, request, context):
        folder = self._frames_dir(request.project_id, request.video_id)
        if not request.samples:
            raise InvalidArgument("samples", "at least one annotated sample is needed")
        frames = sum(1 for p in folder.iterdir() if p.is_file())
        samples = []
        for i, s in enumerate(request.samples):
            if not s.HasField("mask"):
                raise InvalidArgument(f"samples[{i}].mask", "required")
            if s.frame_index >= frames:
                raise InvalidArgument(f"samples[{i}].frame_index", f"{s.frame_index} is not a frame of 0..{frames - 1}")
            samples.append({"frame_index": s.frame_index, "mask": {"size": list(s.mask.size), "counts": s.mask.counts},
                            "region": _region(s.region, f"samples[{i}].region"), "clicks": s.clicks})
        if not 0 <= request.quality_target <= 1:
            raise InvalidArgument("quality_target", "must be in (0, 1], or 0 for the default")
        if request.temporal_weight < 0:
            raise InvalidArgument("temporal_weight", "must be >= 0")
        payload = {"frames_dir": str(folder), "samples": samples, "method": METHODS[request.method],
                   "flow": FLOWS.get(request.flow, "dis"), "steps": request.fine_tune_steps or 40,
                   "temporal_weight": request.temporal_weight or 1.0, "short_side": WORKING_SHORT_SIDE,
                   "seed": request.seed, "suggest_count": request.suggest_count,
                   "suggest_granularity": _granularity(request)}
        task = self.kit.celery.send_task(PROPAGATE_VIDEO, args=[payload], queue=VIDEO_QUEUE)
        record = self.kit.operations.create(task.id, PROPAGATE_VIDEO, request.project_id)
        self.kit.redis.set(self._meta_key(task.id), json.dumps({
            "video_id": request.video_id, "frames_total": frames,
            "clicks_used": sum(s.clicks for s in request.samples)}), ex=self.settings.operation_ttl_s)
        return video_pb2.StartPropagationResponse(operation=operation_proto(record, self.kit.celery))

    def _state(self, project_id: str, op_id: str):
        record = self.kit.operations.get(op_id, project_id)
        if record.kind != PROPAGATE_VIDEO:
            raise NotFound(f"no propagation {op_id!r}", field="operation_id")
        task = self.kit.celery.AsyncResult(op_id)
        meta = json.loads(self.kit.redis.get(self._meta_key(op_id)) or "{}")
        return record, status_from_task(task.state, task.info), meta

    def GetPropagation(self, request, context):
        record, status, meta = self._state(request.project_id, request.operation_id)
        result = status.result
        suggested = []
        for s in result.get("suggested_samples", []):
            x, y, w, h = s["box"]
            region = common_pb2.Region(image_id=f"{meta.get('video_id', '')}/{s['frame_index']}")
            if s["granularity"] == "frame":
                region.frame.CopyFrom(common_pb2.Region.Frame(video_id=meta.get("video_id", ""),
                                                               frame_index=s["frame_index"]))
            else:  # rectangles and superpixels go out as their bounding boxes
                region.box.CopyFrom(common_pb2.Box(x=x, y=y, width=w, height=h))
            suggested.append(region)
        return video_pb2.GetPropagationResponse(
            operation=operation_proto(record, self.kit.celery), video_id=meta.get("video_id", ""),
            frames_total=meta.get("frames_total", 0), frames_done=len(result.get("frames", [])),
            estimated_miou=-1.0, clicks_used=meta.get("clicks_used", 0), suggested_samples=suggested)

    def StreamPropagationMasks(self, request, context):
        record, status, meta = self._state(request.project_id, request.operation_id)
        while request.follow and status.state in ("PENDING", "RUNNING") and context.is_active():
            time.sleep(FOLLOW_POLL_S)
            record, status, meta = self._state(request.project_id, request.operation_id)
        if status.state != "SUCCEEDED":
            raise FailedPrecondition(f"propagation is {status.state}; masks are sent once it SUCCEEDED "
                                     f"(follow=true waits) {status.error}".strip(), field="operation_id")
        frames = status.result["frames"]
        end = request.end_frame or len(frames)
        if request.start_frame > end:
            raise InvalidArgument("start_frame", f"{request.start_frame} is after end_frame {end}")
        for f in frames[request.start_frame:end]:
            yield video_pb2.StreamPropagationMasksResponse(
                frame_index=f["frame_index"], image_id=f.get("image_id", ""),
                mask=common_pb2.Mask(size=f["mask"]["size"], counts=f["mask"]["counts"]),
                confidence=f["confidence"], human_annotated=f["human_annotated"])


def register(server: grpc.Server, kit: Kit) -> None:
    video_pb2_grpc.add_VideoServicer_to_server(VideoServicer(kit), server)


if __name__ == "__main__":
    # Readiness follows Redis (the queue, the operations); the frames are read per request.
    serve("video", register)
