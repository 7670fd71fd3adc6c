"""Replays a policy over measured outcomes (``outcomes.py``) with the simulated annotator's timing:
every policy of a run sees the same images, proposals, click runs and sampled seconds (each action's
time is drawn from a generator seeded by (seed, image, action)), so totals differ only by the choices.

The greedy policy learns online, as in the service: after each object its cost and acceptance models
are refitted on the answers it has recorded so far (it starts from the documented priors).

``bounds`` prices two plans no deployable policy can follow, as yardsticks for any: one that knows
which proposals pass verification (verify the first that does, else segment from scratch), and the
hindsight minimum over every plan per object.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

import numpy as np

from services.dialog import cost_model
from services.dialog.acceptance import AcceptanceModel
from services.dialog.cost_model import Answer, CostModel
from services.dialog.outcomes import Outcome, clicks_of
from services.dialog.policy import Models, Plan, Policy
from services.dialog.questions import SEGMENT, VERIFY, Candidate, Step
from services.simulation.annotator import Profile
from services.simulation.timing import QuestionTimer


def candidate_of(outcome: Outcome) -> Candidate:
    return Candidate(key=outcome.stem, image_id=outcome.stem, selection_score=1.0,
                     proposals=[{"features": dict(p.features)} for p in outcome.proposals])


@dataclass
class Tally:
    total_seconds: float = 0.0
    questions: int = 0
    objects: int = 0
    objects_reached: int = 0
    by_type: dict = field(default_factory=dict)
    per_object: list = field(default_factory=list)  # [stem, seconds, plan]

    def add(self, qtype: str, seconds: float) -> None:
        entry = self.by_type.setdefault(qtype, {"count": 0, "seconds": 0.0})
        entry["count"] += 1
        entry["seconds"] += seconds
        self.questions += 1
        self.total_seconds += seconds

    def to_dict(self) -> dict:
        return {"total_seconds": round(self.total_seconds, 2), "questions": self.questions,
                "objects": self.objects, "objects_reached": self.objects_reached,
                "by_type": {k: {"count": v["count"], "seconds": round(v["seconds"], 2)}
                            for k, v in self.by_type.items()},
                "per_object": self.per_object}


def _timer(seed: int, stem: str, action: str, profile: Profile) -> QuestionTimer:
    return QuestionTimer(profile, np.random.default_rng([seed, zlib.crc32(f"{stem}/{action}".encode())]))


def run_object(outcome: Outcome, policy: Policy, models: Models, target: float, max_clicks: int,
               seed: int, profile: Profile, tally: Tally, answers: list[Answer]) -> None:
    candidate = candidate_of(outcome)
    plan = policy.plan(candidate, models)
    shape = (outcome.height, outcome.width)
    spent, seen, done, asked = 0.0, False, False, []
    for step in plan.steps:
        if step.type == VERIFY:
            proposal = outcome.proposals[step.proposal]
            seconds = _timer(seed, outcome.stem, f"verify{step.proposal}", profile).verify_s()
            accepted = proposal.iou >= target
            answers.append(Answer(VERIFY, candidate.proposal_features(step.proposal), seconds, accepted=accepted))
            tally.add(VERIFY, seconds)
            spent, seen, done = spent + seconds, True, accepted
            asked.append(f"verify{step.proposal}:{'yes' if accepted else 'no'}")
        elif step.type == SEGMENT:
            start = step.proposal
            run = outcome.scratch if start is None else outcome.proposals[start].correction
            needed = run.clicks_to(target, max_clicks)
            clicks = clicks_of(run)[: needed if needed is not None else max_clicks]
            action = "scratch" if start is None else f"correct{start}"
            seconds = _timer(seed, outcome.stem, action, profile).segment_s(
                clicks, shape, object_seen=seen or start is not None)
            features = candidate.proposal_features(start if start is not None else 0) \
                if candidate.proposals else candidate.features
            answers.append(Answer(SEGMENT, features, seconds, clicks=len(clicks), from_proposal=start is not None))
            tally.add(SEGMENT, seconds)
            spent, done = spent + seconds, needed is not None
            asked.append(f"{action}:{len(clicks)}")
        if done:
            break
    tally.objects += 1
    tally.objects_reached += int(done)
    tally.per_object.append([outcome.stem, round(spent, 2), " ".join(asked)])


def replay(outcomes: list[Outcome], policy: Policy, target: float = 0.85, max_clicks: int = 20,
           seed: int = 0, profile: Profile = Profile(), learn: bool = True) -> Tally:
    tally, answers = Tally(), []
    models = Models(CostModel(), AcceptanceModel())
    for outcome in outcomes:
        run_object(outcome, policy, models, target, max_clicks, seed, profile, tally, answers)
        if learn:
            models = fit_models(answers)
    return tally


def fit_models(answers: list[Answer]) -> Models:
    verifies = [a for a in answers if a.type == VERIFY]
    return Models(CostModel(cost_model.fit(answers)),
                  AcceptanceModel.fit([a.features for a in verifies], [bool(a.accepted) for a in verifies]))


class _Scripted(Policy):
    """Follows a given list of steps, whatever the models say."""

    def __init__(self, steps: list[Step]) -> None:
        self.steps = steps

    def plan(self, candidate, models):
        return Plan(candidate, self.steps, 0.0)


def _plans(proposals: int) -> list[list[Step]]:
    plans = [[Step(SEGMENT)]]
    for first in range(proposals):
        plans += [[Step(VERIFY, first), Step(SEGMENT)], [Step(VERIFY, first), Step(SEGMENT, first)]]
        for second in range(proposals):
            if second != first:
                verify = [Step(VERIFY, first), Step(VERIFY, second)]
                plans += [verify + [Step(SEGMENT)], verify + [Step(SEGMENT, second)]]
    return plans


def bounds(outcomes: list[Outcome], target: float = 0.85, max_clicks: int = 20, seed: int = 0,
           profile: Profile = Profile()) -> dict[str, float]:
    """Total seconds of the two yardstick plans (module docstring), timed like every policy."""
    models = Models(CostModel(), AcceptanceModel())

    def seconds(outcome: Outcome, steps: list[Step]) -> float:
        tally = Tally()
        run_object(outcome, _Scripted(steps), models, target, max_clicks, seed, profile, tally, [])
        return tally.total_seconds

    known = hindsight = 0.0
    for outcome in outcomes:
        passing = [i for i, p in enumerate(outcome.proposals) if p.iou >= target]
        known += seconds(outcome, [Step(VERIFY, passing[0])] if passing else [Step(SEGMENT)])
        hindsight += min(seconds(outcome, steps) for steps in _plans(len(outcome.proposals)))
    return {"known_acceptance": round(known, 2), "hindsight": round(hindsight, 2)}
