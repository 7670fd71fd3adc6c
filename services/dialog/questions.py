"""The questions the platform can ask about a candidate region: what the annotator sees, and what the
answer records.

| type         | the annotator sees                                   | the answer records                   |
| ------------ | ---------------------------------------------------- | ------------------------------------ |
| verify       | the region with the model's proposal (box or mask)   | yes / no                             |
|              | and its label: "Is this a good outline of the cat?"  |                                      |
| label_region | the region: "Label every object in it"               | class labels, each with an optional  |
|              |                                                      | box (extreme clicking); none = empty |
| segment      | the image in the interactive segmenter, the proposal | the final mask (RLE), label, clicks, |
|              | (if any) as the starting mask                        | the segmentation session id          |
| skip         | nothing: the policy leaves the region (understood,   | an optional reason, when a person    |
|              | or not worth the seconds); a person may skip any     | skips                                |
|              | question too                                         |                                      |
"""

from __future__ import annotations

from dataclasses import dataclass, field

VERIFY = "verify"
LABEL_REGION = "label_region"
SEGMENT = "segment"
SKIP = "skip"
TYPES = (VERIFY, LABEL_REGION, SEGMENT, SKIP)
REGION_KINDS = frozenset({"patch", "superpixel"})


@dataclass
class Candidate:
    """A region the policy may ask about, with what the models know about it. ``proposals`` are the
    model's proposals (each a dict with ``features`` and optionally ``mask``/``box``/``score``), the
    most likely first; ``features`` describe the region itself."""

    key: str
    image_id: str
    selection_score: float = 0.5
    features: dict[str, float] = field(default_factory=dict)
    proposals: list[dict] = field(default_factory=list)
    label: str = ""
    payload: dict = field(default_factory=dict)  # wire data kept for the question (region, image ...)
    region_kind: str = "whole_image"  # whole_image | frame | box | patch | superpixel (common.proto Region)
    note: str = ""  # said with the reason of any plan for it (e.g. why it has no live proposal)

    @property
    def is_region(self) -> bool:
        """A part of an image that selection picked (patch, superpixel): asked as LABEL_REGION, never as
        one object of the whole image."""
        return self.region_kind in REGION_KINDS

    def proposal_features(self, index: int) -> dict[str, float]:
        """Region features overlaid with proposal ``index``'s (its score as ``proposal_score``)."""
        proposal = self.proposals[index]
        merged = {**self.features, **proposal.get("features", {})}
        if "score" in proposal:
            merged["proposal_score"] = float(proposal["score"])
        merged["selection_score"] = self.selection_score
        return merged


@dataclass(frozen=True)
class Step:
    """One question of a plan: its type and, for VERIFY and a SEGMENT that starts from a proposal,
    the proposal's index."""

    type: str
    proposal: int | None = None


def prompt(step: Step, label: str = "") -> str:
    thing = label or "the object"
    if step.type == VERIFY:
        return f"Is the outline tight around {thing}? Answer yes or no."
    if step.type == LABEL_REGION:
        return "Label every object in the highlighted region (draw a box with extreme clicks)."
    if step.type == SEGMENT:
        if step.proposal is not None:
            return f"Correct the proposed outline of {thing} with clicks until the mask fits; then submit."
        return f"Click on {thing} until the mask fits; then submit."
    return "Nothing to ask here: the policy expects too little from this region for the time; skip it."
