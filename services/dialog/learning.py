"""Fitting the cost and acceptance models on recorded answers and loading them for the policy:
per project (``annotator_id`` "") and per annotator, stored as rows of ``dialog_models``."""

from __future__ import annotations

from services.dialog import cost_model
from services.dialog.acceptance import AcceptanceModel
from services.dialog.cost_model import CostModel, Estimates
from services.dialog.policy import Models
from services.dialog.questions import VERIFY
from services.dialog.regression import Linear
from services.dialog.store import DialogStore

FIT_MODELS = "dialog.fit_models"  # the Celery task that refits after each answer (worker.py)


def refit(store: DialogStore, project_id: str, annotator_id: str = "") -> dict:
    """Refits the project's models (and the annotator's, when given) from every recorded answer;
    idempotent (the same answers give the same models). Returns the observation counts."""
    counts = {}
    scopes = [("", None)] + ([(annotator_id, annotator_id)] if annotator_id else [])
    for scope, who in scopes:
        answers = store.answers(project_id, who)
        store.save_model(project_id, scope, "cost", cost_model.fit(answers).to_dict(), len(answers))
        verifies = [a for a in answers if a.type == VERIFY]
        acceptance = AcceptanceModel.fit([a.features for a in verifies], [bool(a.accepted) for a in verifies])
        store.save_model(project_id, scope, "acceptance", acceptance.model.to_dict(), len(verifies))
        counts[scope or "project"] = {"answers": len(answers), "verifications": len(verifies)}
    return counts


def load_estimates(store: DialogStore, project_id: str, annotator_id: str) -> Estimates | None:
    row = store.model(project_id, annotator_id, "cost")
    return Estimates.from_dict(row.params) if row is not None else None


def load_acceptance(store: DialogStore, project_id: str, annotator_id: str) -> AcceptanceModel:
    for scope in ([annotator_id] if annotator_id else []) + [""]:
        row = store.model(project_id, scope, "acceptance")
        if row is not None:
            model = AcceptanceModel(Linear.from_dict(row.params))
            if model.fitted:
                return model
    return AcceptanceModel()


def load_models(store: DialogStore, project_id: str, annotator_id: str = "") -> Models:
    annotator = load_estimates(store, project_id, annotator_id) if annotator_id else None
    return Models(CostModel(load_estimates(store, project_id, ""), annotator),
                  load_acceptance(store, project_id, annotator_id))
