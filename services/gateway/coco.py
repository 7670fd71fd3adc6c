"""COCO JSON export of a project's submitted masks (RLE segmentations, as pycocotools reads them)."""

from __future__ import annotations

from pycocotools import mask as mask_utils

from services.gateway.tables import Annotation, Image, Project


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
        rle = {"size": [annotation.mask_height, annotation.mask_width], "counts": annotation.mask_counts}
        encoded = {"size": rle["size"], "counts": rle["counts"].encode()}
        x, y, w, h = (float(v) for v in mask_utils.toBbox(encoded))
        out_annotations.append({
            "id": len(out_annotations) + 1, "image_id": image_ids[annotation.image_id],
            "category_id": category[annotation.label or labels[0]], "segmentation": rle,
            "area": float(mask_utils.area(encoded)), "bbox": [x, y, w, h], "iscrowd": 0,
            "attributes": {"session_id": annotation.session_id, "annotator_id": annotation.annotator_id,
                           "click_count": annotation.click_count, "seconds": round(annotation.seconds, 3)},
        })
    return {
        "info": {"description": f"annotation platform export of project {project.project_id}",
                 "version": "1.0"},
        "images": [{"id": image_ids[row.image_id], "file_name": row.filename, "width": row.width,
                    "height": row.height, "platform_image_id": row.image_id} for row in images],
        "annotations": out_annotations,
        "categories": [{"id": index, "name": name, "supercategory": ""} for name, index in category.items()],
    }
