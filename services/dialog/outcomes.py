"""What each action would cost on one image with ground truth, measured through the real segmentation
service once and cached, so every policy of a simulation replays the same outcomes.

Per image: the model's automatic proposals (no human input: one positive click at the image centre,
and the same with four negative clicks near the corners; Predict, stateless) with their
ProbabilityStats and true IoU; the standard clicker's run from scratch until the IoU target; and its
run correcting each proposal (a session started with the proposal as ``initial_mask``).
Clicks are kept (positions matter to the timing model's pointer movements). The deployed service's
masks are binary after its GrabCut refinement, so the model-confidence features (IAD-Prob's score
statistics) come from the network alone (a server with refinement off, ``raw_stub``), together with
agreement features: IoU of the two proposals, and of the refined mask with the network's own mask.

    outcome = measure(stub, metadata, sample, iou_target=0.85, max_clicks=20)
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from annotation.v1 import common_pb2, segmentation_pb2
from services.common.clicks import Click
from services.common.images import encode_png
from services.common.masks import decode_rle, iou
from services.dialog.features import mask_features
from services.models.clicker import Clicker
from services.simulation.segmentation_session import SegmentationSession

PROPOSAL_SEEDS = ("centre", "centre_corners")


@dataclass
class Run:
    """The standard clicker's run: clicks ``[x, y, positive]`` and the IoU after each."""

    clicks: list[list] = field(default_factory=list)
    ious: list[float] = field(default_factory=list)
    start_iou: float = 0.0

    def clicks_to(self, target: float, max_clicks: int) -> int | None:
        """Clicks needed to reach ``target`` (0 when the start already does); None when never."""
        if self.start_iou >= target:
            return 0
        for n, value in enumerate(self.ious[:max_clicks], 1):
            if value >= target:
                return n
        return None


@dataclass
class Proposal:
    seed: str
    iou: float
    features: dict
    correction: Run


@dataclass
class Outcome:
    stem: str
    height: int
    width: int
    proposals: list[Proposal]
    scratch: Run

    @classmethod
    def from_dict(cls, data: dict) -> "Outcome":
        proposals = [Proposal(p["seed"], p["iou"], p["features"], Run(**p["correction"]))
                     for p in data["proposals"]]
        return cls(data["stem"], data["height"], data["width"], proposals, Run(**data["scratch"]))


def _seed_clicks(seed: str, height: int, width: int) -> list[common_pb2.Click]:
    centre = [common_pb2.Click(x=width // 2, y=height // 2, positive=True)]
    if seed == "centre":
        return centre
    dx, dy = max(1, width // 20), max(1, height // 20)
    corners = [(dx, dy), (width - 1 - dx, dy), (dx, height - 1 - dy), (width - 1 - dx, height - 1 - dy)]
    return centre + [common_pb2.Click(x=x, y=y, positive=False) for x, y in corners]


def clicker_run(stub, metadata, image_png: bytes, annotation: np.ndarray, start: np.ndarray | None,
                iou_target: float, max_clicks: int, project: str, timeout_s: float = 60.0) -> Run:
    """The standard clicker through one segmentation session until ``iou_target`` or ``max_clicks``."""
    clicker = Clicker(annotation)
    shape = clicker.gt.shape
    mask = np.zeros(shape, bool) if start is None else start
    run = Run(start_iou=round(iou(mask, clicker.gt, clicker.ignore), 4) if start is not None else 0.0)
    if run.start_iou >= iou_target:
        return run
    with SegmentationSession(stub, metadata, project, image_png, shape, annotator_id="dialog-simulation",
                             initial_mask=start, timeout_s=timeout_s) as session:
        for _ in range(max_clicks):
            click = clicker.next_click(mask if start is not None or run.clicks else None)
            if click is None:
                break
            session.click(click.x, click.y, click.positive)
            mask = session.mask
            run.clicks.append([click.x, click.y, click.positive])
            run.ious.append(round(iou(mask, clicker.gt, clicker.ignore), 4))
            if run.ious[-1] >= iou_target:
                break
    return run


def _predict(stub, metadata, png: bytes, seed: str, shape: tuple[int, int], project: str):
    reply = stub.Predict(segmentation_pb2.PredictRequest(
        project_id=project, image_data=png, clicks=_seed_clicks(seed, *shape)), metadata=metadata, timeout=60.0)
    return decode_rle(reply.mask.size, reply.mask.counts, shape, "mask"), reply.stats


def proposal_features(stub, raw_stub, metadata, png: bytes, shape: tuple[int, int],
                      project: str) -> list[tuple[np.ndarray, dict]]:
    """Each automatic proposal's mask (deployed service) and features (shape, network confidence,
    agreement)."""
    found = []
    for seed in PROPOSAL_SEEDS:
        mask, _ = _predict(stub, metadata, png, seed, shape, project)
        raw_mask, s = _predict(raw_stub, metadata, png, seed, shape, project)
        features = {"mean_foreground_probability": s.mean_foreground_probability,
                    "mean_confidence": s.mean_confidence, "uncertain_fraction": s.uncertain_fraction,
                    "click_confidence": s.click_confidence, "refine_agreement": iou(mask, raw_mask),
                    **mask_features(mask)}
        found.append((mask, features))
    agreement = iou(found[0][0], found[1][0])
    for _, features in found:
        features["proposal_agreement"] = agreement
    return [(m, {k: round(float(v), 5) for k, v in f.items()}) for m, f in found]


def measure(stub, raw_stub, metadata, sample, iou_target: float = 0.85, max_clicks: int = 20,
            project: str = "dialog-simulation") -> Outcome:
    height, width = sample.annotation.shape
    png = encode_png(sample.image)
    gt = Clicker(sample.annotation)
    proposals = []
    for seed, (mask, features) in zip(PROPOSAL_SEEDS, proposal_features(
            stub, raw_stub, metadata, png, (height, width), project)):
        correction = clicker_run(stub, metadata, png, sample.annotation, mask, iou_target, max_clicks, project)
        proposals.append(Proposal(seed, round(iou(mask, gt.gt, gt.ignore), 4), features, correction))
    scratch = clicker_run(stub, metadata, png, sample.annotation, None, iou_target, max_clicks, project)
    return Outcome(sample.stem, height, width, proposals, scratch)


def augment(outcome: Outcome, stub, raw_stub, metadata, sample, project: str = "dialog-simulation") -> bool:
    """Adds the features of a newer ``proposal_features`` to an outcome cached before it; True when
    it changed."""
    if all("proposal_agreement" in p.features for p in outcome.proposals):
        return False
    found = proposal_features(stub, raw_stub, metadata, encode_png(sample.image), sample.annotation.shape, project)
    for proposal, (_, features) in zip(outcome.proposals, found):
        proposal.features = features
    return True


def load_cached(path: Path) -> Outcome | None:
    return Outcome.from_dict(json.loads(path.read_text())) if path.exists() else None


def save(outcome: Outcome, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(outcome)))
    tmp.replace(path)


def clicks_of(run: Run) -> list[Click]:
    return [Click(int(x), int(y), bool(p)) for x, y, p in run.clicks]
