"""Expected human seconds per question type and candidate: documented priors, then estimates learned
per project and per annotator from recorded answers (regression on candidate features).

SEGMENT is ``first_click_s + (expected_clicks - 1) * seconds_per_click`` (zero clicks when a shown
proposal is submitted as is: one look, priced like a verification). Expected clicks are regressed on
the features separately for a start from scratch and a start from a shown proposal; seconds per click
are the mean observed ``seconds / clicks``. VERIFY and LABEL_REGION are regressions of seconds.
An annotator's estimate wins over the project's, which wins over the prior.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from services.common.question_timing import BOX_S, BOX_SOURCE, CLICK_S, FIRST_CLICK_S, VERIFY_S, VERIFY_SOURCE
from services.dialog import pretrained
from services.dialog.questions import LABEL_REGION, SEGMENT, VERIFY
from services.dialog.regression import Linear, fit_ridge

# Used only without the pretrained click model (pretrained.py); the learned per-project estimate
# replaces either after 3 answers. NoC@85 on ../shared/data/grabcut of an earlier segmentation
# checkpoint; the service now measures 2.78, but a lower constant makes greedy verify less before it
# has learned anything (replayed on GrabCut: 1.047x instead of 0.942x the best fixed strategy).
SCRATCH_CLICKS = 4.08
CORRECTION_CLICKS = 2.0  # a shown proposal is usually partly right
SECONDS_FEATURES = ("relative_size", "boundary_complexity", "mean_confidence")
CLICK_FEATURES = ("relative_size", "boundary_complexity", "mean_confidence", "uncertain_fraction",
                  "components", "border_fraction", "refine_agreement", "proposal_agreement")
MIN_OBSERVATIONS = 3  # fewer answers than this: the estimate is not used


@dataclass(frozen=True)
class Prior:
    seconds: float
    source: str
    formula: str


PRIORS: dict[str, Prior] = {
    VERIFY: Prior(VERIFY_S, VERIFY_SOURCE, "constant"),
    LABEL_REGION: Prior(BOX_S, BOX_SOURCE + "; one box per object, class chosen while drawing",
                        "objects * box_seconds"),
    SEGMENT: Prior(FIRST_CLICK_S + (SCRATCH_CLICKS - 1) * CLICK_S,
                   f"expected clicks: the pretrained click model, else {SCRATCH_CLICKS} (NoC@85 of an earlier "
                   "segmentation checkpoint on the GrabCut set); seconds per click: the simulated annotator's timing model "
                   "(services/simulation/annotator.py, typical profile, Fitts' law at 200 px)",
                   "first_click_seconds + (expected_clicks - 1) * seconds_per_click"),
}


@dataclass
class Estimates:
    """Learned estimates of one scope (a project, or one annotator in it). Keys: ``seconds:<type>``,
    ``clicks:scratch``, ``clicks:proposal``; ``seconds_per_click`` as (mean, observations)."""

    models: dict[str, Linear] = field(default_factory=dict)
    seconds_per_click: tuple[float, int] = (CLICK_S, 0)

    def usable(self, key: str) -> Linear | None:
        model = self.models.get(key)
        return model if model is not None and model.observations >= MIN_OBSERVATIONS else None

    def to_dict(self) -> dict:
        return {"models": {k: m.to_dict() for k, m in self.models.items()},
                "seconds_per_click": list(self.seconds_per_click)}

    @classmethod
    def from_dict(cls, data: dict) -> "Estimates":
        return cls({k: Linear.from_dict(m) for k, m in data.get("models", {}).items()},
                   tuple(data.get("seconds_per_click", (CLICK_S, 0))))


@dataclass
class Answer:
    """One recorded answer, as the models see it."""

    type: str
    features: dict[str, float]
    seconds: float
    accepted: bool | None = None  # VERIFY
    clicks: int | None = None  # SEGMENT
    from_proposal: bool = False  # SEGMENT started from a shown proposal


def fit(answers: list[Answer]) -> Estimates:
    est = Estimates()
    for qtype in (VERIFY, LABEL_REGION):
        rows = [a for a in answers if a.type == qtype]
        if rows:
            est.models[f"seconds:{qtype}"] = fit_ridge(SECONDS_FEATURES, [a.features for a in rows],
                                                      [a.seconds for a in rows], PRIORS[qtype].seconds)
    segments = [a for a in answers if a.type == SEGMENT and a.clicks is not None]
    for start, prior in (("scratch", SCRATCH_CLICKS), ("proposal", CORRECTION_CLICKS)):
        rows = [a for a in segments if a.from_proposal == (start == "proposal")]
        if rows:
            est.models[f"clicks:{start}"] = fit_ridge(CLICK_FEATURES, [a.features for a in rows],
                                                     [float(a.clicks) for a in rows], prior, strength=2.0,
                                                     prior=pretrained.model(f"clicks:{start}"))
    clicked = [a for a in segments if a.clicks and a.clicks > 0]
    if clicked:
        per_click = sum(a.seconds for a in clicked) / sum(a.clicks for a in clicked)
        # shrink towards the prior as if 5 clicks at the prior had been seen
        total = sum(a.clicks for a in clicked)
        est.seconds_per_click = ((per_click * total + CLICK_S * 5) / (total + 5), len(clicked))
    return est


class CostModel:
    """Expected seconds for a candidate, from the most specific usable estimates."""

    def __init__(self, project: Estimates | None = None, annotator: Estimates | None = None) -> None:
        self.scopes = [s for s in (annotator, project) if s is not None]

    def _model(self, key: str) -> Linear | None:
        for scope in self.scopes:
            if (model := scope.usable(key)) is not None:
                return model
        return None

    @property
    def seconds_per_click(self) -> float:
        for scope in self.scopes:
            if scope.seconds_per_click[1] >= MIN_OBSERVATIONS:
                return scope.seconds_per_click[0]
        return CLICK_S

    def seconds(self, qtype: str, features: dict[str, float]) -> float:
        if qtype == SEGMENT:
            return self.segment_seconds(features, from_proposal=False)
        model = self._model(f"seconds:{qtype}")
        prior = PRIORS[qtype].seconds if qtype in PRIORS else 0.0
        return max(0.2, model.predict(features)) if model else prior

    def expected_clicks(self, features: dict[str, float], from_proposal: bool) -> float:
        key = f"clicks:{'proposal' if from_proposal else 'scratch'}"
        model = self._model(key) or pretrained.model(key)
        if model is None:
            return CORRECTION_CLICKS if from_proposal else SCRATCH_CLICKS
        return max(0.0 if from_proposal else 1.0, model.predict(features))

    def segment_seconds(self, features: dict[str, float], from_proposal: bool) -> float:
        """Seconds of interactive segmentation; from a proposal the object is already in view (the
        look at the proposal is priced by the VERIFY step before it)."""
        clicks = self.expected_clicks(features, from_proposal)
        if from_proposal:
            return clicks * self.seconds_per_click
        return FIRST_CLICK_S + max(0.0, clicks - 1) * self.seconds_per_click
