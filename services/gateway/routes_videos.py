"""REST routes: videos as data (upload, listing, frames), click sessions on a frame (the segmentation
service's, as for images; the finished mask is stored as the frame's human sample), propagation (on the
video service, through gRPC) with its per-frame masks, and the COCO export of a video's per-frame masks.
Thin: wire format <-> VideoStore and the Segmentation / Video RPCs."""

from __future__ import annotations

import uuid
import zlib
from typing import Annotated, Literal

from fastapi import APIRouter, File, Form, Path, Query, Request, UploadFile
from fastapi.responses import FileResponse, Response
from pydantic import BaseModel, Field

from annotation.v1 import common_pb2, segmentation_pb2, selection_pb2, video_pb2
from services.common.errors import FailedPrecondition, InvalidArgument, NotFound, PermissionDenied
from services.common.masks import decode_rle, encode_rle
from services.gateway.auth import Admin, Annotator, Reviewer
from services.gateway.coco import coco_video_export
from services.gateway.routes_projects import POOL, selection_call
from services.gateway.routes_sessions import check_label, record_finished, session_out
from services.gateway.text import LabelChoice
from services.gateway.videos import frame_image_id, parse_frame_image_id

router = APIRouter(prefix="/v1/projects/{project_id}/videos")
UINT32 = 2**32 - 1
METHODS = {"finetune": video_pb2.PROPAGATION_METHOD_TEST_TIME_FINE_TUNING,
           "flowwarp": video_pb2.PROPAGATION_METHOD_FLOW_WARP,
           "interpolate": video_pb2.PROPAGATION_METHOD_INTERPOLATE}
REGISTER_CHUNK = 5000  # frames per RegisterItems call (selection takes 10000 at most)
FLOWS = {"dis": video_pb2.OPTICAL_FLOW_DIS, "farneback": video_pb2.OPTICAL_FLOW_FARNEBACK}


class MaskIn(BaseModel):
    size: list[Annotated[int, Field(ge=1, le=65_535)]] = Field(min_length=2, max_length=2, description="[H, W]")
    counts: str = Field(min_length=1, description="COCO compressed RLE counts, as the image export writes them.")


class BoxIn(BaseModel):
    x: float = Field(ge=0, le=65_535, allow_inf_nan=False)
    y: float = Field(ge=0, le=65_535, allow_inf_nan=False)
    width: float = Field(gt=0, le=65_535, allow_inf_nan=False)
    height: float = Field(gt=0, le=65_535, allow_inf_nan=False)


class SampleIn(BaseModel):
    frame_index: int = Field(ge=0, le=UINT32)
    mask: MaskIn = Field(description="The label mask at the frame's size.")
    box: BoxIn | None = Field(None, description="Only this box of the frame is labelled; none: the whole frame.")
    clicks: int = Field(0, ge=0, le=UINT32, description="Human cost of the sample, for budget accounting.")


class PropagationIn(BaseModel):
    samples: list[SampleIn] = Field(default_factory=list, max_length=10_000, description=(
        "Every human sample so far (earlier rounds' too); none: the masks stored with PUT .../masks/{index}."))
    label: str = Field("", max_length=200, description="A label of the project (default: its first).")
    method: Literal["finetune", "flowwarp", "interpolate"] = "finetune"
    flow: Literal["dis", "farneback"] = "dis"
    fine_tune_steps: int = Field(0, ge=0, le=100_000, description="0: the service's default.")
    temporal_weight: float = Field(0.0, ge=0, le=1000, allow_inf_nan=False, description="0: the service's default.")
    suggest_count: int = Field(0, ge=0, le=1000, description="Samples to suggest for the next human round.")
    click_budget: int = Field(0, ge=0, le=UINT32)
    quality_target: float = Field(0.0, ge=0, le=1, allow_inf_nan=False)
    seed: int = Field(0, ge=0, le=2**63 - 1)


def video_out(meta: dict, masked: list[int]) -> dict:
    base = f"/v1/projects/{meta['project_id']}/videos/{meta['video_id']}"
    return {"video_id": meta["video_id"], "name": meta["name"], "source": meta["source"], "frames": meta["frames"],
            "width": meta["width"], "height": meta["height"], "size_bytes": meta["size_bytes"],
            "created_at": meta["created_at"], "frame_url": base + "/frames/{index}",
            "masked_frames": masked,
            "propagations": [p["operation_id"] for p in meta.get("propagations", [])]}


def _store(request: Request, project_id: str):
    request.app.state.catalog.project(project_id)  # 404 for an unknown project, as the image routes
    return request.app.state.videos


@router.post("", tags=["videos"], status_code=201)
def upload_video(request: Request, project_id: str, who: Admin,
                 file: Annotated[UploadFile, File(description="A video file (mp4, avi, webm, ... decoded with "
                                                               "OpenCV) or a zip of JPEG/PNG frames.")],
                 name: Annotated[str, Form(max_length=255, description="Display name (default: the file's).")] = ""
                 ) -> dict:
    """Multipart upload of one video. Zip entries are ordered by natural sort of their names; every frame
    must have one size, within the pixel limit; at most ANNOT_GATEWAY_MAX_VIDEO_FRAMES frames."""
    store = _store(request, project_id)
    meta = store.add(project_id, file.file, file.filename or "", name)
    return {**video_out(meta, []), "selection": register_frames(request, store, meta, who.key)}


def register_frames(request: Request, store, meta: dict, key: str) -> str:
    """Tells selection about the video's frames (FRAME items ``<video_id>/<index>``), best effort as for
    images: the dialog then asks about frames as about images. 'ok' or why not."""
    video_id, project_id = meta["video_id"], meta["project_id"]
    folder = store.folder(project_id, video_id) / "frames"
    items = [selection_pb2.PoolItem(
        item_id=frame_image_id(video_id, index), kind=selection_pb2.ITEM_KIND_FRAME,
        image=common_pb2.ImageRef(image_id=frame_image_id(video_id, index), uri=(folder / name).resolve().as_uri(),
                                  width=meta["width"], height=meta["height"], video_id=video_id, frame_index=index))
        for index, name in enumerate(store.frame_names(project_id, video_id))]
    for start in range(0, len(items), REGISTER_CHUNK):
        outcome = selection_call(request, "RegisterItems", selection_pb2.RegisterItemsRequest(
            project_id=project_id, pool_id=POOL, items=items[start:start + REGISTER_CHUNK]), key)
        if outcome != "ok":
            return outcome
    return "ok"


@router.get("", tags=["videos"])
def list_videos(request: Request, project_id: str, who: Annotator) -> dict:
    store = _store(request, project_id)
    videos = store.videos(project_id)
    return {"videos": [video_out(v, store.masked_frames(project_id, v["video_id"])) for v in videos],
            "total": len(videos)}


@router.get("/{video_id}", tags=["videos"])
def get_video(request: Request, project_id: str, video_id: str, who: Annotator) -> dict:
    store = _store(request, project_id)
    return video_out(store.video(project_id, video_id), store.masked_frames(project_id, video_id))


@router.delete("/{video_id}", tags=["videos"], status_code=204)
def delete_video(request: Request, project_id: str, video_id: str, who: Admin) -> Response:
    """Removes the video, its frames and human masks (404 when unknown)."""
    _store(request, project_id).delete(project_id, video_id)
    return Response(status_code=204)


@router.get("/{video_id}/frames/{index}", tags=["videos"], response_class=FileResponse)
def video_frame(request: Request, project_id: str, video_id: str, who: Annotator,
                index: Annotated[int, Path(ge=0, le=UINT32)]) -> FileResponse:
    path, media_type = _store(request, project_id).frame(project_id, video_id, index)
    return FileResponse(path, media_type=media_type, headers={"Cache-Control": "private, max-age=3600"})


@router.post("/{video_id}/propagation", tags=["videos"], status_code=202)
def start_propagation(request: Request, project_id: str, video_id: str, body: PropagationIn, who: Annotator) -> dict:
    """Starts propagating the human samples to every frame (video service and worker).
    Returns the operation; follow it with GET .../propagation/{operation_id}."""
    store = _store(request, project_id)
    labels = request.app.state.catalog.project(project_id).labels or ["object"]
    if body.label and body.label not in labels:
        raise InvalidArgument("label", f"{body.label!r} is not a label of the project ({', '.join(labels)})")
    meta = store.video(project_id, video_id)
    shape = (meta["height"], meta["width"])
    for i, s in enumerate(body.samples):  # refused here, naming the sample, rather than failing the operation
        decode_rle(s.mask.size, s.mask.counts, shape, f"samples[{i}].mask")
    made = store.samples(project_id, video_id)  # the clicks behind masks made in a click session
    given = body.samples or [SampleIn(frame_index=t, mask=MaskIn(size=size, counts=counts),
                                      clicks=made.get(t, {}).get("clicks", 0))
                             for t, mask in store.masks(project_id, video_id).items()
                             for size, counts in [encode_rle(mask)]]
    if not given:
        raise InvalidArgument("samples", "no samples given and no masks stored (PUT .../masks/{index})")
    samples = []
    for s in given:
        region = common_pb2.Region(frame=common_pb2.Region.Frame(video_id=video_id, frame_index=s.frame_index))
        if s.box is not None:
            region = common_pb2.Region(box=common_pb2.Box(x=s.box.x, y=s.box.y, width=s.box.width,
                                                          height=s.box.height))
        samples.append(video_pb2.AnnotatedSample(
            frame_index=s.frame_index, region=region, clicks=s.clicks,
            mask=common_pb2.Mask(size=s.mask.size, counts=s.mask.counts)))
    reply = request.app.state.upstream.call("video", "StartPropagation", video_pb2.StartPropagationRequest(
        project_id=project_id, video_id=video_id, samples=samples, method=METHODS[body.method],
        flow=FLOWS[body.flow], fine_tune_steps=body.fine_tune_steps, temporal_weight=body.temporal_weight,
        suggest_count=body.suggest_count, click_budget=body.click_budget, quality_target=body.quality_target,
        seed=body.seed), who.key)
    store.record_propagation(project_id, video_id, reply.operation.id, body.label)
    return _operation_out(reply.operation)


@router.put("/{video_id}/masks/{index}", tags=["videos"])
def put_mask(request: Request, project_id: str, video_id: str, who: Annotator,
             index: Annotated[int, Path(ge=0, le=UINT32)],
             file: Annotated[UploadFile, File(description="The frame's mask: an image at the frame's size, "
                                                          "0 background, 255 object (PNG).")]) -> dict:
    """Stores a human mask of one frame (replacing an earlier one): the samples of a propagation
    started without any, and the annotations of the export before any propagation."""
    return _store(request, project_id).set_mask(project_id, video_id, index, file.file.read())


def _operation_out(operation: common_pb2.Operation) -> dict:
    return {"operation_id": operation.id, "kind": operation.kind,
            "state": common_pb2.Operation.State.Name(operation.state).lower(), "progress": operation.progress,
            "message": operation.message, "error": operation.error.message}


def _propagation(request: Request, project_id: str, video_id: str, operation_id: str, key: str):
    reply = request.app.state.upstream.call("video", "GetPropagation", video_pb2.GetPropagationRequest(
        project_id=project_id, operation_id=operation_id), key)
    if reply.video_id != video_id:
        raise NotFound(f"no propagation {operation_id!r} of video {video_id!r}", field="operation_id")
    return reply


def _frame_of(region: common_pb2.Region) -> int:
    if region.WhichOneof("kind") == "frame":
        return region.frame.frame_index
    tail = region.image_id.rpartition("/")[2]  # "<video>/<frame index>" (video/server.py GetPropagation)
    return int(tail) if tail.isdigit() else -1


@router.get("/{video_id}/propagation/{operation_id}", tags=["videos"])
def get_propagation(request: Request, project_id: str, video_id: str, operation_id: str, who: Annotator) -> dict:
    """Progress of a propagation: state, frames done, and the samples suggested for the next round
    (a whole frame, or the box to label)."""
    _store(request, project_id).video(project_id, video_id)
    reply = _propagation(request, project_id, video_id, operation_id, who.key)
    suggested = [{"frame_index": _frame_of(r),
                  "box": [r.box.x, r.box.y, r.box.width, r.box.height] if r.WhichOneof("kind") == "box" else None}
                 for r in reply.suggested_samples]
    return {**_operation_out(reply.operation), "video_id": reply.video_id, "frames_total": reply.frames_total,
            "frames_done": reply.frames_done, "clicks_used": reply.clicks_used,
            "estimated_miou": reply.estimated_miou, "suggested_samples": suggested}


@router.get("/{video_id}/exports/coco", tags=["exports"])
def export_video_coco(request: Request, project_id: str, video_id: str, who: Reviewer,
                      operation_id: Annotated[str, Query(max_length=200, description=(
                          "The propagation whose masks to export; default: the latest one started here."))] = ""
                      ) -> dict:
    """COCO JSON of the video: one image per frame (``video_id``, ``frame_id``), the per-frame masks of
    a SUCCEEDED propagation as RLE annotations (409 while it runs), or before any propagation the
    stored human masks."""
    store = _store(request, project_id)
    meta = store.video(project_id, video_id)
    started = {p["operation_id"]: p for p in meta.get("propagations", [])}
    operation_id = operation_id or (meta["propagations"][-1]["operation_id"] if meta.get("propagations") else "")
    masks = []
    if operation_id:
        _propagation(request, project_id, video_id, operation_id, who.key)
        for frame in request.app.state.upstream.stream(
                "video", "StreamPropagationMasks", video_pb2.StreamPropagationMasksRequest(
                    project_id=project_id, operation_id=operation_id), who.key):
            masks.append({"frame_index": frame.frame_index, "size": list(frame.mask.size), "counts": frame.mask.counts,
                          "attributes": {"operation_id": operation_id, "human_annotated": frame.human_annotated,
                                         "confidence": round(frame.confidence, 4)}})
    if not operation_id:  # no propagation yet: the human masks, as they are
        for t, mask in store.masks(project_id, video_id).items():
            size, counts = encode_rle(mask)
            masks.append({"frame_index": t, "size": size, "counts": counts, "attributes": {"human_annotated": True}})
    label = started.get(operation_id, {}).get("label", "")
    return coco_video_export(request.app.state.catalog.project(project_id), meta,
                             store.frame_names(project_id, video_id), masks, label)


@router.get("/{video_id}/masks", tags=["videos"])
def list_masks(request: Request, project_id: str, video_id: str, who: Annotator) -> dict:
    """The stored human masks, per frame (COCO RLE), with the click session that made each, where one did."""
    store = _store(request, project_id)
    made = store.samples(project_id, video_id)
    masks = []
    for t, mask in store.masks(project_id, video_id).items():
        size, counts = encode_rle(mask)
        sample = made.get(t, {})
        masks.append({"frame_index": t, "size": size, "counts": counts, "area_px": int(mask.sum()),
                      "session_id": sample.get("session_id", ""), "clicks": sample.get("clicks", 0),
                      "label": sample.get("label", "")})
    return {"masks": masks}


@router.get("/{video_id}/propagation/{operation_id}/masks", tags=["videos"])
def propagation_masks(request: Request, project_id: str, video_id: str, operation_id: str, who: Annotator) -> dict:
    """Every frame's propagated mask (COCO RLE), its confidence and whether a human made it; 409 until the
    propagation SUCCEEDED."""
    _store(request, project_id).video(project_id, video_id)
    _propagation(request, project_id, video_id, operation_id, who.key)
    frames = [{"frame_index": f.frame_index, "size": list(f.mask.size), "counts": f.mask.counts,
               "confidence": round(f.confidence, 4), "human_annotated": f.human_annotated}
              for f in request.app.state.upstream.stream(
                  "video", "StreamPropagationMasks", video_pb2.StreamPropagationMasksRequest(
                      project_id=project_id, operation_id=operation_id), who.key)]
    return {"operation_id": operation_id, "frames": frames}


# --- click sessions on a frame -------------------------------------------------------------------------------
class FrameSessionIn(BaseModel):
    label: LabelChoice = Field("", description="One of the project's labels; empty: decided at finish.")
    initial_mask: MaskIn | None = Field(None, description=(
        "The mask the first click refines (e.g. the frame's propagated mask, to correct it); default: the "
        "frame's stored human mask, if it has one."))


class FrameFinishIn(BaseModel):
    outcome: Literal["submitted", "skipped", "abandoned"] = "submitted"
    label: LabelChoice = Field("", description="One of the project's labels; empty: the session's.")


@router.post("/{video_id}/frames/{index}/sessions", tags=["videos"], status_code=201)
def start_frame_session(request: Request, project_id: str, video_id: str, who: Annotator,
                        index: Annotated[int, Path(ge=0, le=UINT32)], body: FrameSessionIn) -> dict:
    """A click session on one frame, in the segmentation service as an image's: clicks, undo and redo go to
    ``.../sessions/{session_id}/clicks|undo|redo``; finish it with ``.../videos/{video_id}/sessions/
    {session_id}/finish``, which stores the final mask as the frame's human sample."""
    store = _store(request, project_id)
    check_label(request.app.state.catalog.project(project_id), body.label)
    meta = store.video(project_id, video_id)
    path, _ = store.frame(project_id, video_id, index)
    shape = (meta["height"], meta["width"])
    initial = None
    if body.initial_mask is not None:
        decode_rle(body.initial_mask.size, body.initial_mask.counts, shape, "initial_mask")
        initial = common_pb2.Mask(size=body.initial_mask.size, counts=body.initial_mask.counts)
    elif (stored := store.mask(project_id, video_id, index)) is not None:
        size, counts = encode_rle(stored)
        initial = common_pb2.Mask(size=size, counts=counts)
    reply = request.app.state.upstream.call("segmentation", "StartSession", segmentation_pb2.StartSessionRequest(
        project_id=project_id, image=common_pb2.ImageRef(
            image_id=frame_image_id(video_id, index), uri=path.resolve().as_uri(), video_id=video_id,
            frame_index=index),
        image_data=path.read_bytes(), session_id=uuid.uuid4().hex, annotator_id=who.annotator_id,
        label=body.label, initial_mask=initial), who.key)
    return {**session_out(reply.session), "video_id": video_id, "frame_index": index}


@router.post("/{video_id}/sessions/{session_id}/finish", tags=["videos"])
def finish_frame_session(request: Request, project_id: str, video_id: str, session_id: str, who: Annotator,
                         body: FrameFinishIn) -> dict:
    """Submit (the mask becomes the frame's human sample, replacing an earlier one; the next propagation
    started without samples uses it), skip or abandon a frame's click session. The segmentation service sends
    the session's event to the loop's queues as for an image's."""
    store = _store(request, project_id)
    check_label(request.app.state.catalog.project(project_id), body.label)
    upstream = request.app.state.upstream
    # first: another annotator's session is refused (403) whatever the video
    session = upstream.call("segmentation", "GetSession", segmentation_pb2.SegmentationGetSessionRequest(
        project_id=project_id, session_id=session_id), who.key).session
    meta = store.video(project_id, video_id)
    frame = parse_frame_image_id(session.image.image_id)
    if frame is None or frame[0] != video_id or frame[1] >= meta["frames"]:
        raise NotFound(f"session {session_id!r} is not on a frame of video {video_id!r}", field="session_id")
    index = frame[1]
    if session.state == segmentation_pb2.SEGMENTATION_SESSION_STATE_ACTIVE and body.outcome == "submitted":
        shape = (meta["height"], meta["width"])
        current = decode_rle(list(session.mask.size), session.mask.counts, shape, "mask") if session.mask.counts \
            else None
        if current is None or not current.any():
            raise InvalidArgument("outcome", "the frame's mask is empty: click on the object first, or finish "
                                             "the session as skipped")
    reply = upstream.call("segmentation", "FinishSession", segmentation_pb2.FinishSessionRequest(
        project_id=project_id, session_id=session_id, label=body.label,
        outcome=common_pb2.SessionOutcome.Value(f"SESSION_OUTCOME_{body.outcome.upper()}")), who.key)
    seconds, stored = record_finished(request, project_id, reply, body.label, who)
    return {"session": session_out(reply.session), "video_id": video_id, "frame_index": index, "stored": stored,
            "masked_frames": store.masked_frames(project_id, video_id), "seconds": seconds,
            "quality_operation_id": reply.quality_operation_id,
            "byproducts_operation_id": reply.byproducts_operation_id}


# --- selection's pick among a video's frames ------------------------------------------------------------------
SELECTION_MAX = 50  # frames one call asks selection for


@router.get("/{video_id}/selection", tags=["videos"])
def video_selection(request: Request, project_id: str, video_id: str, who: Annotator,
                    count: Annotated[int, Query(ge=1, le=SELECTION_MAX, description="How many frames to ask for.")] = 5
                    ) -> dict:
    """The frames of this video the selection service would have annotated next: its active-learning pick over
    the project's pool (``SelectBatch``, strategy ANNOT_GATEWAY_SELECTION_STRATEGY as the dialog's) restricted to
    the video's frames, best first, labelled frames never among them. ``scored`` says whether a task model's
    scores ranked them (each frame then names the model version and heuristic scores behind its score) or, before
    any has, selection drew uniformly among the unlabelled frames (strategy ``uniform``, score 0.5; the draw's
    seed is fixed per video, so the marks stay put between calls). ``null`` when no frame is left to pick.
    Any annotator of the project may ask: the gateway asks selection with its own service key (granted SelectBatch
    only), after checking the caller's project here. 503 while selection is unreachable; 409 when the video's
    frames are not in the pool (uploaded while selection was unreachable)."""
    meta = _store(request, project_id).video(project_id, video_id)
    strategy, reply = _select_frames(request, project_id, meta, count, request.app.state.service_key)
    frames = []
    for r in reply.regions:
        frame = parse_frame_image_id(r.item_id)
        if frame is None or frame[0] != video_id:  # never another item, whatever selection answers
            continue
        frames.append({"frame_index": frame[1], "rank": r.rank, "score": round(r.score, 6), "reason": r.reason,
                       "model_version": r.model_version,
                       "breakdown": {name: round(value, 6) for name, value in sorted(r.breakdown.items())}})
    scored = any(f["model_version"] or f["breakdown"] for f in frames) if frames else None
    versions = sorted({f["model_version"] for f in frames if f["model_version"]})
    return {"video_id": video_id, "pool_id": POOL, "selection_id": reply.selection_id,
            "strategy": (strategy or "combined") if scored else "uniform" if scored is False else "",
            "scored": scored, "model_versions": versions, "candidates_considered": reply.candidates_considered,
            "frames": frames}


def _select_frames(request: Request, project_id: str, meta: dict, count: int, key: str):
    """(the strategy asked, selection's SelectBatchResponse) for the video's frames."""
    video_id, gateway = meta["video_id"], request.app.state.gateway
    frames = [frame_image_id(video_id, t) for t in range(meta["frames"])]
    seed = zlib.crc32(f"{project_id}/{video_id}".encode()) or 1  # 0 would be a random seed

    def ask(strategy: str) -> selection_pb2.SelectBatchResponse:
        return request.app.state.upstream.call("selection", "SelectBatch", selection_pb2.SelectBatchRequest(
            project_id=project_id, pool_id=POOL, strategy=strategy, budget=count, up_to_budget=True,
            item_ids=frames, seed=seed), key)

    strategy = gateway.selection_strategy
    try:
        try:
            return strategy, ask(strategy)
        except FailedPrecondition:
            if strategy in ("", "uniform"):
                raise
            return "", ask("")  # the configured strategy needs scores no task model has made yet: the default
    except InvalidArgument as exc:
        if exc.field != "item_ids":
            raise
        raise FailedPrecondition(f"the frames of video {video_id!r} are not in selection's pool {POOL!r} (was it "
                                 f"uploaded while selection was unreachable?): {exc.message}",
                                 field="video_id") from None
    except PermissionDenied as exc:
        raise PermissionDenied(f"selection refused the gateway's service key for SelectBatch (is the gateway's "
                               f"ANNOT_SERVICE_KEY the one selection knows?): {exc.message}") from None
