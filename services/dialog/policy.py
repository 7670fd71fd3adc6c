"""Policies: given candidates and the cost and acceptance models, which question to ask next.

A policy plans a sequence of questions per candidate (e.g. verify proposal 0, then segment starting
from it if rejected); the first step is asked, the rest become follow-ups. Registry by name; an
unknown name is an error.

- ``greedy``: per candidate, the plan of least expected seconds among segment from scratch and
  verify proposals (best first, up to ``max_verify``) then segment from scratch or from the last
  proposal; candidates ranked by expected gain (the selection score) per expected second; candidates
  whose gain per second is under ``min_gain_per_second`` are skipped.
- fixed baselines: ``always_segment``; ``verify_k_then_segment`` (k proposals, then from scratch);
  ``verify_then_correct`` (verify proposal 0, then correct it).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

from services.common.errors import InvalidArgument
from services.dialog.acceptance import AcceptanceModel
from services.dialog.cost_model import CostModel
from services.dialog.questions import SEGMENT, VERIFY, Candidate, Step


@dataclass
class Plan:
    candidate: Candidate
    steps: list[Step]
    expected_seconds: float
    acceptance: list[float] = field(default_factory=list)  # per VERIFY step
    reason: str = ""

    @property
    def expected_gain(self) -> float:
        return max(0.0, self.candidate.selection_score)

    @property
    def gain_per_second(self) -> float:
        return self.expected_gain / max(self.expected_seconds, 1e-6)


@dataclass
class Models:
    cost: CostModel
    acceptance: AcceptanceModel


def plan_cost(candidate: Candidate, steps: list[Step], models: Models) -> tuple[float, list[float]]:
    """Expected seconds of a plan: each step is reached only when every verification before it
    was rejected."""
    reach, total, probabilities, verified = 1.0, 0.0, [], 0
    for step in steps:
        if step.type == VERIFY:
            features = candidate.proposal_features(step.proposal)
            p = models.acceptance.probability(features)
            if verified:  # after a rejection, a proposal much like the rejected one is likely bad too
                p *= 1.0 - min(1.0, max(0.0, features.get("proposal_agreement", 0.0)))
            verified += 1
            total += reach * models.cost.seconds(VERIFY, features)
            probabilities.append(p)
            reach *= 1 - p
        elif step.type == SEGMENT:
            if step.proposal is None:
                features = candidate.proposal_features(0) if candidate.proposals else candidate.features
            else:
                features = candidate.proposal_features(step.proposal)
            total += reach * models.cost.segment_seconds(features, step.proposal is not None)
        else:
            total += reach * models.cost.seconds(step.type, candidate.features)
    return total, probabilities


class Policy(ABC):
    name: str = ""
    description: str = ""
    kind: str = "fixed"  # greedy | fixed | learned
    parameters: dict[str, float] = {}

    @abstractmethod
    def plan(self, candidate: Candidate, models: Models) -> Plan: ...

    def plan_allowed(self, candidate: Candidate, models: Models, allowed: frozenset[str] | None) -> Plan | None:
        """The plan with the steps a client cannot show left out; None when nothing is left."""
        plan = self.plan(candidate, models)
        if allowed is None or all(s.type in allowed for s in plan.steps):
            return plan
        steps = [s for s in plan.steps if s.type in allowed]
        if not steps:
            return None
        return self._make(candidate, steps, models, plan.reason + f" (only {', '.join(sorted(allowed))} allowed)")

    def choose(self, candidates: list[Candidate], models: Models,
               allowed: frozenset[str] | None = None) -> Plan | None:
        """The plan to start now, or None when nothing is worth asking."""
        plans = [p for c in candidates if (p := self.plan_allowed(c, models, allowed)) is not None]
        return max(plans, key=lambda p: p.gain_per_second, default=None)

    def _make(self, candidate: Candidate, steps: list[Step], models: Models, reason: str) -> Plan:
        seconds, probabilities = plan_cost(candidate, steps, models)
        return Plan(candidate, steps, seconds, probabilities, reason)


class AlwaysSegment(Policy):
    name, description = "always_segment", "Segment every candidate interactively from scratch."

    def plan(self, candidate, models):
        return self._make(candidate, [Step(SEGMENT)], models, "fixed: always segment")


class VerifyKThenSegment(Policy):
    name = "verify_k_then_segment"
    description = "Verify up to k proposals in order; segment from scratch when all are rejected."

    def __init__(self, k: int = 1, correct: bool = False) -> None:
        self.k, self.correct = k, correct
        self.parameters = {"k": float(k), "correct": float(correct)}
        if correct:
            self.name = "verify_then_correct" if k == 1 else f"verify_{k}_then_correct"
            self.description = (f"Verify up to {k} proposal(s); when rejected, correct the last one "
                                "interactively.")
        elif k != 1:
            self.name = f"verify_{k}_then_segment"

    def plan(self, candidate, models):
        k = min(self.k, len(candidate.proposals))
        steps = [Step(VERIFY, i) for i in range(k)]
        steps.append(Step(SEGMENT, k - 1 if self.correct and k else None))
        return self._make(candidate, steps, models, f"fixed: verify {k} then "
                          f"{'correct' if self.correct and k else 'segment'}")


class Greedy(Policy):
    name, kind = "greedy", "greedy"
    description = ("Per candidate the plan of least expected human seconds (verify likely proposals, then "
                   "segment from scratch or correct); candidates by expected gain per expected second.")

    def __init__(self, max_verify: int = 2, min_gain_per_second: float = 0.0) -> None:
        self.max_verify, self.min_gain_per_second = max_verify, min_gain_per_second
        self.parameters = {"max_verify": float(max_verify), "min_gain_per_second": min_gain_per_second}

    def options(self, candidate: Candidate, models: Models) -> list[list[Step]]:
        ranked = sorted(range(len(candidate.proposals)), key=lambda i: -models.acceptance.probability(
            candidate.proposal_features(i)))
        options = [[Step(SEGMENT)]]
        for k in range(1, min(self.max_verify, len(ranked)) + 1):
            verify = [Step(VERIFY, i) for i in ranked[:k]]
            options.append(verify + [Step(SEGMENT)])
            options.append(verify + [Step(SEGMENT, ranked[k - 1])])
        return options

    def plan(self, candidate, models):
        best = min((self._make(candidate, steps, models, "") for steps in self.options(candidate, models)),
                   key=lambda p: p.expected_seconds)
        scratch = plan_cost(candidate, [Step(SEGMENT)], models)[0]
        if best.steps[0].type == VERIFY:
            best.reason = (f"cheapest expected plan (p_accept {best.acceptance[0]:.2f}): "
                           + " then ".join(_describe(s) for s in best.steps)
                           + f", expected {best.expected_seconds:.1f} s vs {scratch:.1f} s segmenting")
        else:
            best.reason = (f"no proposal likely to pass (best p_accept "
                           f"{max([0.0] + [models.acceptance.probability(candidate.proposal_features(i)) for i in range(len(candidate.proposals))]):.2f})"
                           f": segment, expected {scratch:.1f} s")
        return best

    def choose(self, candidates, models, allowed=None):
        plan = super().choose(candidates, models, allowed)
        if plan is None or plan.gain_per_second < self.min_gain_per_second:
            return None
        return plan


def _describe(step: Step) -> str:
    if step.type == VERIFY:
        return f"verify proposal {step.proposal}"
    if step.type == SEGMENT:
        return "correct it" if step.proposal is not None else "segment from scratch"
    return step.type


def registry() -> dict[str, Policy]:
    policies: list[Policy] = [Greedy(), AlwaysSegment(), VerifyKThenSegment(1), VerifyKThenSegment(2),
                              VerifyKThenSegment(1, correct=True), VerifyKThenSegment(2, correct=True)]
    return {p.name: p for p in policies}


DEFAULT = "greedy"


def get_policy(name: str, field_name: str = "policy") -> Policy:
    policies = registry()
    name = name or DEFAULT
    if name not in policies:
        raise InvalidArgument(field_name, f"unknown policy {name!r}; choose from {sorted(policies)}")
    return policies[name]
