"""The domain side of NextQuestion and RecordAnswer: pick a plan with the policy and the learned models,
store its first question, record answers once, and issue the plan's follow-up after a rejection."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from services.common.errors import InvalidArgument
from services.dialog.learning import load_models
from services.dialog.policy import Plan, get_policy, plan_cost
from services.dialog.questions import SEGMENT, SKIP, VERIFY, Candidate, Step
from services.dialog.store import DialogStore, Issued
from services.dialog.tables import QuestionRow

# Which answer kinds fit which question type (a skip fits every type).
FITS = {VERIFY: {"verify", "skip"}, SEGMENT: {"segment", "skip"}, "label_region": {"labels", "skip"},
        SKIP: {"skip"}}


@dataclass
class Recorded:
    question: QuestionRow
    follow_up: QuestionRow | None


class Questioner:
    def __init__(self, store: DialogStore, min_gain_per_second: float = 0.0) -> None:
        self.store = store
        self.min_gain_per_second = min_gain_per_second  # under it the question is SKIP (policy.py)

    def next_question(self, project_id: str, annotator_id: str, candidates: list[Candidate],
                      wire: dict[str, bytes], policy_name: str = "",
                      allowed: frozenset[str] | None = None,
                      propose: Callable[[list[Candidate]], list[Candidate]] | None = None) -> QuestionRow | None:
        """Stores and returns the first question of the best plan over candidates not asked yet (SKIP of
        the best candidate when no plan clears the gain threshold); None when none is left worth asking.
        ``wire``: each candidate's serialized form by key. ``propose``: gives the candidates not asked yet
        the live proposals it can (the adapter's call to segmentation; it updates ``wire`` to match)."""
        policy = get_policy(policy_name)
        asked = self.store.asked_keys(project_id, [c.key for c in candidates])
        fresh = [c for c in candidates if c.key not in asked]
        if propose is not None and fresh:
            fresh = propose(fresh)
        models = load_models(self.store, project_id, annotator_id)
        plan = policy.choose(fresh, models, allowed, self.min_gain_per_second)
        if plan is None:
            return None
        return self.store.issue(self._issued(project_id, annotator_id, policy.name, plan, wire[plan.candidate.key], 0))

    @staticmethod
    def _issued(project_id: str, annotator_id: str, policy: str, plan: Plan, wire: bytes, step: int) -> Issued:
        current = plan.steps[step]
        features = plan.candidate.proposal_features(current.proposal) if current.proposal is not None \
            else (plan.candidate.proposal_features(0) if plan.candidate.proposals else dict(plan.candidate.features))
        verifies_before = sum(1 for s in plan.steps[:step] if s.type == VERIFY)
        p_accept = plan.acceptance[verifies_before] if current.type == VERIFY else 0.0
        return Issued(project_id, annotator_id, policy, plan.candidate.key, wire,
                      [[s.type, s.proposal] for s in plan.steps], step, features,
                      plan.expected_seconds, plan.expected_gain, p_accept, plan.reason)

    def record(self, project_id: str, question_id: str, annotator_id: str, kind: str, answer: dict,
               seconds: float, candidate: Candidate | None = None) -> Recorded:
        """Records the answer (once) and issues the plan's next question after a rejected
        verification. ``candidate``: the question's candidate, decoded by the adapter."""
        if not seconds > 0:
            raise InvalidArgument("seconds_taken", "must be > 0 (human time spent on the question)")
        question = self.store.get(project_id, question_id)
        if kind not in FITS.get(question.type, {"skip"}):
            raise InvalidArgument("answer", f"a {kind} answer does not fit a {question.type} question")
        accepted = bool(answer.get("accepted")) if kind == "verify" else None
        clicks = int(answer.get("click_count", 0)) if kind == "segment" else None
        row = self.store.answer(project_id, question_id, annotator_id or question.annotator_id, kind, answer,
                                seconds, accepted, clicks)
        follow_up = None
        if kind == "verify" and not accepted and row.step + 1 < len(row.plan) and candidate is not None:
            steps = [Step(t, p) for t, p in row.plan]
            models = load_models(self.store, project_id, annotator_id or row.annotator_id)
            rest = steps[row.step + 1:]
            seconds_left, probabilities = plan_cost(candidate, rest, models)
            plan = Plan(candidate, steps, seconds_left, [0.0] * sum(s.type == VERIFY for s in steps[:row.step + 1])
                        + probabilities, f"follow-up of rejected verification ({row.reason})")
            follow_up = self.store.issue(self._issued(project_id, annotator_id or row.annotator_id, row.policy,
                                                      plan, row.candidate, row.step + 1))
        return Recorded(row, follow_up)
