"""REST routes for reviewers: the review queue (quality service, worst first), stored annotations and
the COCO JSON export of the masks. (Byproducts export as JSON Lines: byproducts_routes.py.)
"""

from __future__ import annotations

import io
import json
import zipfile
from typing import Annotated, Literal

from fastapi import APIRouter, Body, Query, Request, Response
from pydantic import BaseModel, Field

from annotation.v1 import common_pb2, quality_pb2
from services.common.errors import InvalidArgument, NotFound, Unavailable
from services.gateway.auth import Reviewer
from services.gateway.coco import coco_export, mask_pngs
from services.gateway.pictures import picture
from services.gateway.routes_sessions import mask_out

router = APIRouter(prefix="/v1/projects/{project_id}")


def _review_item(item: quality_pb2.ReviewItem) -> dict:
    score = item.score
    return {"session_id": item.session_id, "annotator_id": item.annotator_id, "task_id": item.task_id,
            "image_id": item.image.image_id, "mask": mask_out(item.mask), "label": item.label,
            "click_count": item.click_count, "predicted_iou": score.predicted_iou,
            "probability_below_threshold": score.probability_below_threshold, "threshold": score.threshold,
            "reasons": [{"feature": r.feature, "value": r.value, "contribution": r.contribution,
                         "description": r.description} for r in score.top_reasons],
            "model_version": score.model_version,
            "verdict": quality_pb2.ReviewVerdict.Name(item.verdict).removeprefix("REVIEW_VERDICT_").lower()}


@router.get("/review", tags=["review"])
def review_queue(request: Request, project_id: str, who: Reviewer,
                 page_size: Annotated[int, Query(ge=1, le=1000)] = 50, page_token: str = "",
                 annotator_id: str = "", include_reviewed: bool = False) -> dict:
    """Finished masks worst first by predicted quality. 503 while the quality service is unavailable."""
    request.app.state.catalog.project(project_id)
    try:
        reply = request.app.state.upstream.call("quality", "ListReviewQueue", quality_pb2.ListReviewQueueRequest(
            project_id=project_id, page=common_pb2.PageRequest(page_size=page_size, page_token=page_token),
            annotator_id=annotator_id, include_reviewed=include_reviewed), who.key)
    except Unavailable as exc:
        raise Unavailable(f"the review queue needs the quality service, which is unavailable: {exc.message}") from None
    return {"items": [_review_item(i) for i in reply.items], "next_page_token": reply.page.next_page_token,
            "total": reply.page.total_size}


class VerdictIn(BaseModel):
    verdict: Literal["accepted", "rejected", "corrected"]
    corrected_session_id: str = Field("", max_length=128, description="For corrected: the finished session "
                                      "(opened from the stored mask) whose mask is the correction.")
    comment: str = Field("", max_length=2000)


@router.post("/review/{session_id}", tags=["review"])
def record_review(request: Request, project_id: str, session_id: str, who: Reviewer,
                  body: Annotated[VerdictIn, Body()]) -> dict:
    """A reviewer's verdict on a finished mask, to quality's RecordReview (its training labels): accepted,
    rejected, or corrected with the mask of a session the reviewer finished from it. 503 while quality is down."""
    work = request.app.state.work
    work.annotation(project_id, session_id)
    review = quality_pb2.RecordReviewRequest(
        project_id=project_id, session_id=session_id, reviewer_id=who.annotator_id, comment=body.comment,
        verdict=quality_pb2.ReviewVerdict.Value(f"REVIEW_VERDICT_{body.verdict.upper()}"))
    if body.verdict == "corrected":
        if not body.corrected_session_id:
            raise InvalidArgument("corrected_session_id", "a corrected verdict names the session of the correction")
        fixed = work.annotation(project_id, body.corrected_session_id)
        if fixed.outcome != "SUBMITTED":
            raise InvalidArgument("corrected_session_id", f"session {fixed.session_id!r} was not submitted")
        review.corrected_mask.CopyFrom(common_pb2.Mask(size=[fixed.mask_height, fixed.mask_width],
                                                       counts=fixed.mask_counts))
    try:
        reply = request.app.state.upstream.call("quality", "RecordReview", review, who.key)
    except Unavailable as exc:
        raise Unavailable(f"the verdict was not recorded, the quality service is unavailable: {exc.message}") from None
    item = reply.item
    return {**_review_item(item), "true_iou": item.true_iou if item.true_iou >= 0 else None}


@router.get("/annotations/{session_id}", tags=["review"])
def get_annotation(request: Request, project_id: str, session_id: str, who: Reviewer) -> dict:
    """A finished session's stored mask, with what it was drawn on (``image``: an image's fields, a frame's also
    video_id and frame_index), which a reviewer's correction opens."""
    row = request.app.state.work.annotation(project_id, session_id)
    try:
        image = picture(request.app.state, project_id, row.image_id).out
    except NotFound:  # the image or video was deleted since
        image = None
    return {"session_id": row.session_id, "image_id": row.image_id, "image": image, "task_id": row.task_id,
            "annotator_id": row.annotator_id, "outcome": row.outcome.lower(), "label": row.label,
            "mask": {"size": [row.mask_height, row.mask_width], "counts": row.mask_counts},
            "area_px": row.area_px, "click_count": row.click_count, "seconds": row.seconds,
            "quality_operation_id": row.quality_operation_id,
            "byproducts_operation_id": row.byproducts_operation_id, "created_at": row.created_at.isoformat()}


@router.get("/exports/coco", tags=["exports"])
def export_coco(request: Request, project_id: str, who: Reviewer) -> dict:
    """COCO JSON of every submitted mask (RLE segmentation, bbox, area, category)."""
    catalog = request.app.state.catalog
    project = catalog.project(project_id)
    images, _ = catalog.images(project_id, 0, 1_000_000)
    return coco_export(project, images, request.app.state.work.annotations(project_id))



@router.get("/exports/masks.zip", tags=["exports"], response_class=Response,
            responses={200: {"content": {"application/zip": {}}}})
def export_masks(request: Request, project_id: str, who: Reviewer) -> Response:
    """A zip of per-image PNG label maps (``masks/<file>_<image id>.png``, pixel value = COCO category id, 0
    background) beside the COCO JSON (``coco.json``) whose categories they use."""
    catalog = request.app.state.catalog
    project = catalog.project(project_id)
    images, _ = catalog.images(project_id, 0, 1_000_000)
    annotations = request.app.state.work.annotations(project_id)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("coco.json", json.dumps(coco_export(project, images, annotations)))
        for name, data in mask_pngs(project, images, annotations).items():
            archive.writestr(name, data)
    return Response(buffer.getvalue(), media_type="application/zip", headers={
        "Content-Disposition": f'attachment; filename="{project_id}-masks.zip"'})
