"""COCO JSON exports of submitted masks (RLE segmentations, as pycocotools reads them): a project's
images, and a video's frames (one ``images`` entry per frame, with ``video_id`` and ``frame_id``)."""

from __future__ import annotations

from pycocotools import mask as mask_utils

from services.gateway.tables import Annotation, Image, Project


def rle_annotation(annotation_id: int, image_id: int, category_id: int, size: list[int], counts: str,
                   attributes: dict) -> dict:
    """One COCO annotation of a compressed-RLE mask, with the area and box pycocotools computes."""
    encoded = {"size": list(size), "counts": counts.encode()}
    x, y, w, h = (float(v) for v in mask_utils.toBbox(encoded))
    return {"id": annotation_id, "image_id": image_id, "category_id": category_id,
            "segmentation": {"size": list(size), "counts": counts}, "area": float(mask_utils.area(encoded)),
            "bbox": [x, y, w, h], "iscrowd": 0, "attributes": attributes}


def _categories(category: dict[str, int]) -> list[dict]:
    return [{"id": index, "name": name, "supercategory": ""} for name, index in category.items()]


def coco_export(project: Project, images: list[Image], annotations: list[Annotation]) -> dict:
    labels = list(project.labels) or ["object"]
    for annotation in annotations:
        if annotation.label and annotation.label not in labels:
            labels.append(annotation.label)
    category = {name: index + 1 for index, name in enumerate(labels)}
    image_ids = {row.image_id: index + 1 for index, row in enumerate(images)}
    out_annotations = []
    for annotation in annotations:
        if annotation.image_id not in image_ids:
            continue
        out_annotations.append(rle_annotation(
            len(out_annotations) + 1, image_ids[annotation.image_id], category[annotation.label or labels[0]],
            [annotation.mask_height, annotation.mask_width], annotation.mask_counts,
            {"session_id": annotation.session_id, "annotator_id": annotation.annotator_id,
             "click_count": annotation.click_count, "seconds": round(annotation.seconds, 3)}))
    return {
        "info": {"description": f"annotation platform export of project {project.project_id}",
                 "version": "1.0"},
        "images": [{"id": image_ids[row.image_id], "file_name": row.filename, "width": row.width,
                    "height": row.height, "platform_image_id": row.image_id} for row in images],
        "annotations": out_annotations,
        "categories": _categories(category),
    }


def coco_video_export(project: Project, video: dict, frame_names: list[str], masks: list[dict],
                      label: str = "") -> dict:
    """``video``: the stored description (videos.py); ``masks``: per-frame ``{frame_index, size, counts,
    attributes}`` (a propagation's results). Frame ``t`` is image ``t + 1`` with ``frame_id`` ``t``."""
    labels = list(project.labels) or ["object"]
    if label and label not in labels:
        labels.append(label)
    category = {name: index + 1 for index, name in enumerate(labels)}
    images = [{"id": t + 1, "video_id": 1, "frame_id": t, "file_name": f"{video['video_id']}/{name}",
               "width": video["width"], "height": video["height"]} for t, name in enumerate(frame_names)]
    annotations = [rle_annotation(index + 1, m["frame_index"] + 1, category[label or labels[0]], m["size"],
                                  m["counts"], {**m.get("attributes", {}), "frame_id": m["frame_index"]})
                   for index, m in enumerate(masks) if 0 <= m["frame_index"] < len(frame_names)]
    return {
        "info": {"description": f"annotation platform export of video {video['video_id']} of project "
                                f"{project.project_id}", "version": "1.0"},
        "videos": [{"id": 1, "name": video["name"], "platform_video_id": video["video_id"],
                    "width": video["width"], "height": video["height"], "length": len(frame_names)}],
        "images": images,
        "annotations": annotations,
        "categories": _categories(category),
    }
