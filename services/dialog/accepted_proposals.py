"""An accepted proposal is an annotation: the loop's event for a VERIFY answer that said yes.

The dialog made the proposal (live, from the project's current model) and is the one told that the person
accepted it, so it owns the annotation's ``AnnotationSubmitted`` (as the segmentation service owns a
session's): selection counts the image labelled and training learns from the mask. No session: no
byproducts, no clicks for quality to score (``annotation_events.receivers``).
"""

from __future__ import annotations

import re

from annotation.v1 import common_pb2, dialog_pb2

SUBMITTED = common_pb2.SESSION_OUTCOME_SUBMITTED
_VERSION = re.compile(r"\b([A-Za-z0-9_.-]+:\d+)\b")  # "segmentation clickseg:1, automatic ..." -> clickseg:1


def annotation_id(question_id: str) -> str:
    return f"verify-{question_id}"


def event_of(project_id: str, question_id: str, candidate: dialog_pb2.Candidate, annotator_id: str,
             seconds: float) -> common_pb2.AnnotationSubmitted | None:
    """The event of an accepted proposal mask; None when the question showed no mask (a box is not an
    annotation of the object's pixels) or the image's size is unknown."""
    if not candidate.HasField("proposal_mask") or not candidate.image.width or not candidate.image.height:
        return None
    version = _VERSION.search(candidate.proposal_source)
    event = common_pb2.AnnotationSubmitted(
        project_id=project_id, annotation_id=annotation_id(question_id), annotator_id=annotator_id,
        image=common_pb2.ImageRef(image_id=candidate.image.image_id, uri=candidate.image.uri,
                                  width=candidate.image.width, height=candidate.image.height),
        label=candidate.proposed_label, mask=candidate.proposal_mask,
        model_version=version.group(1) if version else "", total_time_ms=max(0, round(seconds * 1000)),
        outcome=SUBMITTED)
    event.submit_time.GetCurrentTime()
    return event
