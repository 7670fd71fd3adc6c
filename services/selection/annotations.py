"""A submitted annotation (the loop's ``AnnotationSubmitted``) enters selection: every item of the project's
pools that shows its image is labelled with its mask (and its class, where the pool names the label), so
strategies stop proposing it. Once per pool and annotation id (a redelivered event records nothing)."""

from __future__ import annotations

from datetime import UTC

from annotation.v1 import common_pb2
from services.selection.pool import PoolStore
from services.selection.score_store import Label, ScoreStore


def record_annotation(pools: PoolStore, scores: ScoreStore, event: common_pb2.AnnotationSubmitted) -> dict:
    """Labels the image's items; ``pools``: per pool holding the image, whether this call recorded it (an
    image no pool holds is recorded nowhere: a project may annotate without selection)."""
    label_time = event.submit_time.ToDatetime(tzinfo=UTC) if event.HasField("submit_time") else None
    recorded = {}
    for pool_id, item_id in scores.items_showing(event.project_id, event.image.image_id):
        classes = pools.get_pool(event.project_id, pool_id).class_names
        label = Label(item_id, class_labels=[classes.index(event.label)] if event.label in classes else [],
                      mask={"size": list(event.mask.size), "counts": event.mask.counts},
                      annotator_id=event.annotator_id, label_time=label_time, annotation_id=event.annotation_id)
        recorded[pool_id] = scores.report_labels(event.project_id, pool_id, [label], len(classes))[0] == 1
    return {"project_id": event.project_id, "annotation_id": event.annotation_id,
            "image_id": event.image.image_id, "pools": recorded}
