"""Policies: given candidates and the cost and acceptance models, which question to ask next.

A policy plans a sequence of questions per candidate (e.g. verify proposal 0, then segment starting
from it if rejected); the first step is asked, the rest become follow-ups. Registry by name; an
unknown name is an error.

- ``greedy``: per candidate, the plan of least expected seconds among segment from scratch and
  verify proposals (best first, up to ``max_verify``) then segment from scratch or from the last
  proposal; candidates ranked by expected gain (the selection score) per expected second.
- fixed baselines: ``always_segment``; ``verify_k_then_segment`` (k proposals, then from scratch);
  ``verify_then_correct`` (verify proposal 0, then correct it).

Every policy asks about a patch or superpixel candidate with LABEL_REGION (greedy: verifying a proposal
first when that is cheaper in expectation), never as one object of the whole image; and when the best
plan's expected gain per second is under ``min_gain_per_second`` (the server's setting
``dialog_min_gain_per_second``), the choice is SKIP of that candidate: asking would cost a person more
than it is expected to teach.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field

from services.common.errors import InvalidArgument
from services.dialog.acceptance import AcceptanceModel
from services.dialog.cost_model import CostModel
from services.dialog.questions import LABEL_REGION, SEGMENT, SKIP, VERIFY, Candidate, Step


@dataclass
class Plan:
    candidate: Candidate
    steps: list[Step]
    expected_seconds: float
    acceptance: list[float] = field(default_factory=list)  # per VERIFY step
    reason: str = ""

    @property
    def skips(self) -> bool:
        return [s.type for s in self.steps] == [SKIP]

    @property
    def expected_gain(self) -> float:
        return 0.0 if self.skips else max(0.0, self.candidate.selection_score)

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
        elif step.type != SKIP:
            total += reach * models.cost.seconds(step.type, candidate.features)
    return total, probabilities


class Policy(ABC):
    name: str = ""
    description: str = ""
    kind: str = "fixed"  # greedy | fixed | learned
    parameters: dict[str, float] = {}
    min_gain_per_second: float = 0.0

    @abstractmethod
    def plan(self, candidate: Candidate, models: Models) -> Plan: ...

    def plan_region(self, candidate: Candidate, models: Models) -> Plan:
        """A patch or superpixel: label the objects in it."""
        return self._make(candidate, [Step(LABEL_REGION)], models,
                          f"selection picked a {candidate.region_kind}: label the objects in it")

    def plan_for(self, candidate: Candidate, models: Models) -> Plan:
        plan = self.plan_region(candidate, models) if candidate.is_region else self.plan(candidate, models)
        if candidate.note:
            plan.reason = f"{plan.reason} ({candidate.note})"
        return plan

    def plan_allowed(self, candidate: Candidate, models: Models, allowed: frozenset[str] | None) -> Plan | None:
        """The plan with the steps a client cannot show left out; None when nothing is left."""
        plan = self.plan_for(candidate, models)
        if allowed is None or all(s.type in allowed for s in plan.steps):
            return plan
        steps = [s for s in plan.steps if s.type in allowed]
        if not steps:
            return None
        return self._make(candidate, steps, models, plan.reason + f" (only {', '.join(sorted(allowed))} allowed)")

    def choose(self, candidates: list[Candidate], models: Models, allowed: frozenset[str] | None = None,
               min_gain_per_second: float | None = None) -> Plan | None:
        """The plan to start now: the best plan by expected gain per second, or SKIP of its candidate
        when even that is under ``min_gain_per_second`` (default: the policy's); None when there is no
        candidate, or when it would be SKIP and the client cannot show SKIP."""
        threshold = self.min_gain_per_second if min_gain_per_second is None else min_gain_per_second
        plans = [p for c in candidates if (p := self.plan_allowed(c, models, allowed)) is not None]
        best = max(plans, key=lambda p: p.gain_per_second, default=None)
        if best is None or best.gain_per_second >= threshold:
            return best
        if allowed is not None and SKIP not in allowed:
            return None
        return Plan(best.candidate, [Step(SKIP)], 0.0, [], (
            f"not worth a person's time: the best plan ({' then '.join(_describe(s) for s in best.steps)}) "
            f"expects gain {best.expected_gain:.3f} for {best.expected_seconds:.1f} s = "
            f"{best.gain_per_second:.4f}/s, under the threshold {threshold:.4f}/s"))

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
        if candidate.is_region:  # a verified proposal inside the region spares labelling it
            return [[Step(LABEL_REGION)]] + [[Step(VERIFY, i) for i in ranked[:k]] + [Step(LABEL_REGION)]
                                             for k in range(1, min(self.max_verify, len(ranked)) + 1)]
        options = [[Step(SEGMENT)]]
        for k in range(1, min(self.max_verify, len(ranked)) + 1):
            verify = [Step(VERIFY, i) for i in ranked[:k]]
            options.append(verify + [Step(SEGMENT)])
            options.append(verify + [Step(SEGMENT, ranked[k - 1])])
        return options

    def plan_region(self, candidate, models):
        best = min((self._make(candidate, steps, models, "") for steps in self.options(candidate, models)),
                   key=lambda p: p.expected_seconds)
        best.reason = (f"selection picked a {candidate.region_kind}: "
                       + " then ".join(_describe(s) for s in best.steps)
                       + f", expected {best.expected_seconds:.1f} s")
        return best

    def plan(self, candidate, models):
        best = min((self._make(candidate, steps, models, "") for steps in self.options(candidate, models)),
                   key=lambda p: p.expected_seconds)
        scratch = plan_cost(candidate, [Step(SEGMENT)], models)[0]
        if best.steps[0].type == VERIFY:
            best.reason = (f"cheapest expected plan (p_accept {best.acceptance[0]:.2f}): "
                           + " then ".join(_describe(s) for s in best.steps)
                           + f", expected {best.expected_seconds:.1f} s vs {scratch:.1f} s segmenting")
        elif not candidate.proposals:
            best.reason = f"no proposal to verify: segment, expected {scratch:.1f} s"
        else:
            best.reason = (f"no proposal likely to pass (best p_accept "
                           f"{max([0.0] + [models.acceptance.probability(candidate.proposal_features(i)) for i in range(len(candidate.proposals))]):.2f})"
                           f": segment, expected {scratch:.1f} s")
        return best


def _describe(step: Step) -> str:
    if step.type == VERIFY:
        return f"verify proposal {step.proposal}"
    if step.type == SEGMENT:
        return "correct it" if step.proposal is not None else "segment from scratch"
    if step.type == LABEL_REGION:
        return "label the objects in the region"
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
