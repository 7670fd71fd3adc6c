"""COCO JSON exports of submitted masks (RLE segmentations, as pycocotools reads them): a project's
images, and a video's frames (one ``images`` entry per frame, with ``video_id`` and ``frame_id``)."""

from __future__ import annotations

import numpy as np
from pycocotools import mask as mask_utils

from services.common.errors import InvalidArgument
from services.common.masks import decode_rle
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


def mask_pngs(project: Project, images: list[Image], annotations: list[Annotation]) -> dict[str, bytes]:
    """Per-image PNG label maps beside the COCO JSON: pixel value = the COCO ``category_id`` of the export
    (0 background; 8-bit, 16-bit past 255 categories), later masks drawn over earlier ones. Named after the image
    file and its platform id, so equal file names do not collide."""
    import io

    from PIL import Image as PILImage

    coco = coco_export(project, images, annotations)
    category = {c["name"]: c["id"] for c in coco["categories"]}
    dtype = np.uint8 if len(category) < 256 else np.uint16
    by_image: dict[str, list[Annotation]] = {}
    for annotation in annotations:
        by_image.setdefault(annotation.image_id, []).append(annotation)
    out = {}
    for row in images:
        if row.image_id not in by_image:
            continue
        labels = np.zeros((row.height, row.width), dtype)
        for annotation in by_image[row.image_id]:
            if [annotation.mask_height, annotation.mask_width] != [row.height, row.width]:
                continue
            mask = mask_utils.decode({"size": [row.height, row.width], "counts": annotation.mask_counts.encode()})
            labels[mask.astype(bool)] = category[annotation.label or coco["categories"][0]["name"]]
        buffer = io.BytesIO()
        PILImage.fromarray(labels).save(buffer, format="PNG")
        stem = row.filename.rsplit(".", 1)[0].replace("/", "_") or "image"
        out[f"masks/{stem}_{row.image_id}.png"] = buffer.getvalue()
    return out


def decode_segmentation(annotation: dict, height: int, width: int, field: str) -> np.ndarray:
    """A COCO annotation's pixels: RLE (compressed or not), polygons, or else its bbox (a rectangle)."""
    segmentation = annotation.get("segmentation")
    try:
        if isinstance(segmentation, dict):
            if list(segmentation.get("size", [])) != [height, width]:
                raise InvalidArgument(f"{field}.segmentation.size", f"must be [{height}, {width}], the image's size")
            counts = segmentation.get("counts")
            if isinstance(counts, str):  # compressed: the platform's checked decoder (hostile strings refused)
                return decode_rle([height, width], counts, (height, width), f"{field}.segmentation")
            if not (isinstance(counts, list) and all(isinstance(c, int) and c >= 0 for c in counts)
                    and sum(counts) == height * width):
                raise InvalidArgument(f"{field}.segmentation.counts", "uncompressed RLE counts are non-negative "
                                      f"integers summing to {height} * {width}")
            values = np.arange(len(counts)) % 2  # runs alternate 0 and 1, column-major
            return np.repeat(values, counts).astype(bool).reshape((width, height)).T
        if isinstance(segmentation, list) and segmentation:
            polygons = [p for p in segmentation if isinstance(p, list) and len(p) >= 6]
            if not polygons:
                raise InvalidArgument(f"{field}.segmentation", "polygons need at least 3 points (6 numbers) each")
            return mask_utils.decode(mask_utils.merge(mask_utils.frPyObjects(polygons, height, width))).astype(bool)
        box = annotation.get("bbox")
        if isinstance(box, list) and len(box) == 4:
            x, y, w, h = (float(v) for v in box)
            mask = np.zeros((height, width), bool)
            mask[max(0, round(y)):min(height, round(y + h)), max(0, round(x)):min(width, round(x + w))] = True
            if not mask.any():
                raise InvalidArgument(f"{field}.bbox", "the box covers no pixel of the image")
            return mask
    except InvalidArgument:
        raise
    except Exception as exc:  # noqa: BLE001 - pycocotools raises plain Exception on input it cannot read
        raise InvalidArgument(f"{field}.segmentation", f"not a COCO RLE, polygon list or bbox: {exc}") from None
    raise InvalidArgument(f"{field}.segmentation", "give an RLE, polygons, or a bbox")


def segmentation_kind(annotation: dict) -> str:
    """Which of its shapes ``decode_segmentation`` reads: "rle", "polygon" or "box"."""
    segmentation = annotation.get("segmentation")
    if isinstance(segmentation, dict):
        return "rle"
    return "polygon" if isinstance(segmentation, list) and segmentation else "box"


def coco_import(coco: dict, images: list[Image], labels: list[str]) -> tuple[list[dict], list[str], int]:
    """The masks of a COCO JSON for a project's images, matched by ``file_name`` (or ``platform_image_id``, as
    exported here): ``[{image_id, label, size, counts, kind}]`` (kind: rle, polygon or box, as the file gave
    it), the COCO file names no project image matches, and how many annotations of matched images covered no
    pixel (skipped). A category not among the project's labels is refused (422 naming the annotation)."""
    def key(value):  # COCO ids are ints; anything else is compared by its text, never hashed as it is
        return value if isinstance(value, int | str) else repr(value)

    by_name = {row.filename: row for row in images}
    by_id = {row.image_id: row for row in images}
    coco_images, unmatched = {}, []
    for entry in coco.get("images") or []:
        row = by_id.get(str(entry.get("platform_image_id", ""))) or by_name.get(str(entry.get("file_name", "")))
        if row is None:
            unmatched.append(str(entry.get("file_name", entry.get("id"))))
        else:
            coco_images[key(entry.get("id"))] = row
    names = {key(c.get("id")): str(c.get("name", "")) for c in coco.get("categories") or []}
    out, empty = [], 0
    for index, annotation in enumerate(coco.get("annotations") or []):
        field = f"annotations[{index}]"
        row = coco_images.get(key(annotation.get("image_id")))
        if row is None:
            continue  # its image is not in the project (counted in unmatched)
        label = names.get(key(annotation.get("category_id")), "")
        if label not in labels:
            raise InvalidArgument(f"{field}.category_id", f"category {label[:100]!r} is not a label of the project; "
                                  f"one of {labels[:20]}")
        mask = decode_segmentation(annotation, row.height, row.width, field)
        if not mask.any():
            empty += 1
            continue
        rle = mask_utils.encode(np.asfortranarray(mask.astype(np.uint8)))
        out.append({"image_id": row.image_id, "label": label, "size": [row.height, row.width],
                    "counts": rle["counts"].decode("ascii"), "kind": segmentation_kind(annotation)})
    return out, unmatched, empty
