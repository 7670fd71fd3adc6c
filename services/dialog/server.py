"""gRPC adapter of ``annotation.v1.Dialog``: proto messages <-> the dialog domain modules.

NextQuestion over a pool asks selection for its pick, and segmentation for live proposals
(``proposals.py``), each with the dialog's own service key (``SERVICE_GRANTS``), never the caller's.
Comparing policies is offline (``python -m services.dialog.simulate``): it drives the simulated annotator,
which no deployed process loads.

Run: ``python -m services.dialog.server``.
"""

from __future__ import annotations

import hashlib

import grpc
import numpy as np
from pycocotools import mask as mask_utils

from annotation.v1 import (
    common_pb2,
    dialog_pb2,
    dialog_pb2_grpc,
    segmentation_pb2,
    segmentation_pb2_grpc,
    selection_pb2,
    selection_pb2_grpc,
)
from services.common import annotation_events
from services.common.errors import (
    DomainError,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unavailable,
)
from services.common.grpc_server import Kit, serve
from services.common.masks import decode_rle
from services.common.proto_time import to_timestamp
from services.common.request_context import caller
from services.common.service_identity import metadata as service_metadata
from services.dialog import accepted_proposals, cost_model
from services.dialog import proposals as live
from services.dialog.features import mask_features
from services.dialog.learning import FIT_MODELS, load_acceptance, load_estimates
from services.dialog.policy import DEFAULT, registry
from services.dialog.questioner import Questioner
from services.dialog.questions import (
    LABEL_REGION,
    SEGMENT,
    SKIP,
    VERIFY,
    Candidate,
    Step,
    prompt,
)
from services.dialog.store import DialogStore

TYPES = {VERIFY: dialog_pb2.QUESTION_TYPE_VERIFY, LABEL_REGION: dialog_pb2.QUESTION_TYPE_LABEL_REGION,
         SEGMENT: dialog_pb2.QUESTION_TYPE_SEGMENT, SKIP: dialog_pb2.QUESTION_TYPE_SKIP}
TYPE_NAMES = {v: k for k, v in TYPES.items()}
KINDS = {"greedy": dialog_pb2.Policy.GREEDY, "fixed": dialog_pb2.Policy.FIXED, "learned": dialog_pb2.Policy.LEARNED}
MAX_CANDIDATES = 1000
# An accepted proposal's event (no session: annotation_events.receivers sends it to these two only).
ACCEPTED_EVENT_TASKS = {"selection": "selection.annotation_submitted", "training": "training.annotation_submitted"}
PREDICT_TIMEOUT_S = 10.0  # one automatic proposal; a slower segmentation service gives none


def _unit(value: float, field: str) -> float:
    if not 0.0 <= value <= 1.0 or value != value:
        raise InvalidArgument(field, f"{value} is not in [0, 1]")
    return float(value)


def candidate_from_pb(c: dialog_pb2.Candidate, field: str) -> Candidate:
    image_id = c.region.image_id or c.image.image_id
    if not image_id:
        raise InvalidArgument(f"{field}.region.image_id", "the candidate's image must be named", reason="REQUIRED")
    features = {}
    for name, value in c.features.items():
        if not np.isfinite(value):
            raise InvalidArgument(f"{field}.features[{name}]", "must be finite")
        features[name] = float(value)
    proposal_features = {}
    if c.HasField("proposal_mask"):
        size, counts = list(c.proposal_mask.size), c.proposal_mask.counts
        if len(size) != 2 or min(size) <= 0 or not counts:
            raise InvalidArgument(f"{field}.proposal_mask", "needs size [height, width] and RLE counts")
        try:
            mask = mask_utils.decode({"size": size, "counts": counts.encode("ascii")}).astype(bool)
        except Exception as exc:  # noqa: BLE001 - any decoding failure is bad input
            raise InvalidArgument(f"{field}.proposal_mask.counts", f"not a COCO RLE: {exc}") from None
        proposal_features = mask_features(mask)
    elif c.HasField("proposal_box") and c.image.width and c.image.height:
        proposal_features = {"relative_size": c.proposal_box.width * c.proposal_box.height
                             / (c.image.width * c.image.height)}
    key = f"{image_id}:{hashlib.sha1(c.region.SerializeToString(deterministic=True)).hexdigest()[:16]}"
    proposals = []
    if c.HasField("proposal_mask") or c.HasField("proposal_box"):
        proposal = {"features": {**proposal_features, **features}}
        if not c.proposal_source:  # a live proposal's confidence is in its network statistics (features)
            proposal["score"] = _unit(c.proposal_score, f"{field}.proposal_score")
        proposals.append(proposal)
    return Candidate(key, image_id, _unit(c.selection_score, f"{field}.selection_score"),
                     {**proposal_features, **features}, proposals, c.proposed_label,
                     region_kind=c.region.WhichOneof("kind") or "whole_image")


def region_box(c: dialog_pb2.Candidate) -> common_pb2.Box | None:
    """The region's bounding box in image pixels: given, a box region's own, or a patch cell clipped to
    the image when its size is known; None for the whole image or when unknown."""
    if c.HasField("region_box"):
        return c.region_box
    kind = c.region.WhichOneof("kind")
    if kind == "box":
        return c.region.box
    if kind == "patch" and c.region.patch.size_px:
        p = c.region.patch
        x, y = float(p.col * p.size_px), float(p.row * p.size_px)
        w = min(float(p.size_px), c.image.width - x) if c.image.width else float(p.size_px)
        h = min(float(p.size_px), c.image.height - y) if c.image.height else float(p.size_px)
        return common_pb2.Box(x=x, y=y, width=w, height=h) if w > 0 and h > 0 else None
    return None


class DialogServicer(dialog_pb2_grpc.DialogServicer):
    def __init__(self, kit: Kit) -> None:
        self.kit = kit
        self.store = DialogStore(kit.sessions)
        self.questioner = Questioner(self.store, kit.settings.dialog_min_gain_per_second)

    # --- conversions -----------------------------------------------------------------------------
    def _question_pb(self, row) -> dialog_pb2.Question:
        candidate = dialog_pb2.Candidate.FromString(row.candidate)
        step = Step(row.type, row.proposal)
        question = dialog_pb2.Question(
            question_id=row.question_id, type=TYPES[row.type], region=candidate.region,
            image=candidate.image, proposed_label=candidate.proposed_label,
            expected_seconds=row.expected_seconds, expected_gain=row.expected_gain,
            acceptance_probability=row.acceptance_probability,
            gain_per_second=row.expected_gain / max(row.expected_seconds, 1e-6), reason=row.reason,
            plan=[TYPES[t] for t, _ in row.plan[row.step:]], policy=row.policy,
            prompt=prompt(step, candidate.proposed_label), create_time=to_timestamp(row.created_at))
        question.image.uri = ""  # where the server reads the pixels is no business of the client
        box = region_box(candidate)
        if box is not None:
            question.region_box.CopyFrom(box)
        if candidate.HasField("region_mask"):
            question.region_mask.CopyFrom(candidate.region_mask)
        if row.proposal is not None:
            if candidate.HasField("proposal_mask"):
                question.proposal_mask.CopyFrom(candidate.proposal_mask)
            elif candidate.HasField("proposal_box"):
                question.proposal_box.CopyFrom(candidate.proposal_box)
            question.proposal_source = candidate.proposal_source
        question.selection_model_version = candidate.selection_model_version
        return question

    def _pool_candidates(self, request, context) -> list[dialog_pb2.Candidate]:
        """Selection's next candidates of the pool, asked with the dialog's own service key (granted
        SelectBatch only), never the caller's: the caller's key was checked against the project here.
        An empty strategy is selection's default (combined once a task model scored the pool, uniform
        before); a pool with fewer eligible regions than asked gives what it has."""
        pool = request.pool
        if not pool.pool_id:
            raise InvalidArgument("pool.pool_id", "must be set", reason="REQUIRED")
        if not self.kit.service_key:
            raise FailedPrecondition("this dialog server has no service key to call selection with "
                                     "(ANNOT_SERVICE_KEY)", field="pool")
        deadline = context.time_remaining()
        try:
            with grpc.insecure_channel(self.kit.settings.service_address("selection")) as channel:
                reply = selection_pb2_grpc.SelectionStub(channel).SelectBatch(selection_pb2.SelectBatchRequest(
                    project_id=request.project_id, pool_id=pool.pool_id, strategy=pool.strategy,
                    granularity=pool.granularity, patch_size_px=pool.patch_size_px,
                    n_superpixels=pool.n_superpixels, budget=pool.candidate_count or 50, up_to_budget=True),
                    metadata=service_metadata(self.kit.service_key),
                    timeout=min(self.kit.settings.default_deadline_s, deadline or self.kit.settings.default_deadline_s))
        except grpc.RpcError as exc:
            code = exc.code()
            if code == grpc.StatusCode.NOT_FOUND:
                raise NotFound(f"selection: {exc.details()}", field="pool.pool_id") from None
            if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                raise Unavailable(f"selection service unavailable: {exc.details()}") from None
            raise FailedPrecondition(f"selection refused the pool's candidates ({code.name}): {exc.details()}",
                                     field="pool") from None
        # selection's scores are already in [0, 1] and comparable across calls: the skip threshold
        # compares them with seconds, so they are not rescaled to the batch's best
        candidates = []
        for r in reply.regions:
            c = dialog_pb2.Candidate(
                region=r.region, image=r.image if r.HasField("image") else common_pb2.ImageRef(),
                selection_score=float(min(1.0, max(0.0, r.score))),
                features={**dict(r.breakdown), "area_px": float(r.area_px)}, selection_model_version=r.model_version)
            c.image.image_id = r.region.image_id or r.image.image_id or r.item_id
            if r.region.WhichOneof("kind") not in ("whole_image", "frame", None) and r.HasField("box"):
                c.region_box.CopyFrom(r.box)
            if r.HasField("mask") and r.mask.counts:
                c.region_mask.CopyFrom(r.mask)
            candidates.append(c)
        return candidates

    def _proposer(self, project_id: str, context, wire: dict[str, dialog_pb2.Candidate],
                  blobs: dict[str, bytes]):
        """The ``propose`` step of NextQuestion: live proposals from the segmentation service for the
        best fresh candidates without one; a candidate it cannot serve keeps none and says why."""
        def propose(fresh: list[Candidate]) -> list[Candidate]:
            chosen = {c.key for c in live.wanting(fresh)}
            if not chosen:
                return fresh
            if not self.kit.service_key:
                reason = "no live proposal: this dialog server has no service key (ANNOT_SERVICE_KEY)"
                return [_noted(c, reason) if c.key in chosen else c for c in fresh]
            out, down = [], ""
            with grpc.insecure_channel(self.kit.settings.service_address("segmentation")) as channel:
                stub = segmentation_pb2_grpc.SegmentationStub(channel)
                for c in fresh:
                    if c.key not in chosen:
                        out.append(c)
                    elif down:
                        out.append(_noted(c, down))
                    else:
                        made, why, down = self._live(stub, project_id, context, wire[c.key], c.key)
                        if made is None:
                            out.append(_noted(c, why))
                        else:
                            out.append(candidate_from_pb(made, "candidate"))
                            wire[c.key] = made
                            blobs[c.key] = made.SerializeToString(deterministic=True)
            return out
        return propose

    def _live(self, stub, project_id: str, context, c: dialog_pb2.Candidate, key: str):
        """(the candidate with its live proposal or None, why not, the outage that stops the others)."""
        data = live.image_at_hand(c.image.uri)
        if data is None:
            return None, "no live proposal: the image's pixels are not readable by the dialog service", ""
        size = live.image_size(data)
        if size is None:
            return None, "no live proposal: the image's file is no image", ""
        width, height = size
        box = region_box(c)
        box = (box.x, box.y, box.width, box.height) if box is not None else None
        remaining = context.time_remaining()
        timeout = min(PREDICT_TIMEOUT_S, remaining) if remaining else PREDICT_TIMEOUT_S
        found, version, first = [], "", None
        try:
            for seed in live.SEEDS:
                clicks = live.seed_clicks(seed, width, height, box)
                first = first or clicks[0]
                reply = stub.Predict(segmentation_pb2.PredictRequest(
                    project_id=project_id, image=common_pb2.ImageRef(image_id=c.image.image_id), image_data=data,
                    clicks=[common_pb2.Click(x=x, y=y, positive=p) for x, y, p in clicks]),
                    metadata=service_metadata(self.kit.service_key), timeout=timeout)
                try:
                    mask = decode_rle(reply.mask.size, reply.mask.counts, (height, width), "mask")
                except DomainError as exc:  # e.g. a mask of another size than the file's header says
                    return None, f"no live proposal: segmentation's mask does not fit the image ({exc.message})", ""
                stats = {name: getattr(reply.stats, name) for name in live.STATS}
                found.append((mask, stats, list(reply.mask.size), reply.mask.counts))
                version = reply.model_version
        except grpc.RpcError as exc:
            code = exc.code()
            why = f"no live proposal: segmentation {code.name}: {exc.details()}"
            outage = code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
            return None, why, why if outage else ""
        proposal = live.live_proposal(found, version, first)
        made = dialog_pb2.Candidate()
        made.CopyFrom(c)
        made.image.width, made.image.height = width, height
        made.proposal_mask.CopyFrom(common_pb2.Mask(size=proposal.size, counts=proposal.counts))
        made.features.update(proposal.features)
        made.proposal_source = proposal.source
        return made, "", ""

    # --- RPCs ----------------------------------------------------------------------------------
    def NextQuestion(self, request, context):
        source = request.WhichOneof("source")
        if source == "candidates":
            wire = list(request.candidates.candidates)
            if not 1 <= len(wire) <= MAX_CANDIDATES:
                raise InvalidArgument("candidates.candidates", f"give 1 to {MAX_CANDIDATES} candidates")
        elif source == "pool":
            wire = self._pool_candidates(request, context)
        else:
            raise InvalidArgument("source", "give candidates or a pool", reason="REQUIRED")
        candidates = [candidate_from_pb(c, f"candidates.candidates[{i}]") for i, c in enumerate(wire)]
        allowed = None
        if request.allowed_types:
            unknown = [t for t in request.allowed_types if t not in TYPE_NAMES]
            if unknown:
                raise InvalidArgument("allowed_types", f"unknown question type(s) {unknown}")
            allowed = frozenset(TYPE_NAMES[t] for t in request.allowed_types)
        blobs = {c.key: w.SerializeToString(deterministic=True) for c, w in zip(candidates, wire)}
        propose = None
        if allowed is None or VERIFY in allowed:  # a proposal is shown only by a VERIFY question
            propose = self._proposer(request.project_id, context, {c.key: w for c, w in zip(candidates, wire)},
                                     blobs)
        row = self.questioner.next_question(request.project_id, caller().acting_as(request.annotator_id),
                                            candidates, blobs, request.policy, allowed, propose)
        if row is None:
            return dialog_pb2.NextQuestionResponse(exhausted=True)
        return dialog_pb2.NextQuestionResponse(question=self._question_pb(row))

    def RecordAnswer(self, request, context):
        if not request.question_id:
            raise InvalidArgument("question_id", "must be set", reason="REQUIRED")
        kind = request.WhichOneof("answer")
        if kind is None:
            raise InvalidArgument("answer", "exactly one answer must be set", reason="REQUIRED")
        if kind == "verify":
            answer = {"accepted": request.verify.accepted}
        elif kind == "labels":
            answer = {"labels": [{"label": x.label, "box": [x.box.x, x.box.y, x.box.width, x.box.height]}
                                 for x in request.labels.labels]}
        elif kind == "segment":
            s = request.segment
            answer = {"mask": {"size": list(s.mask.size), "counts": s.mask.counts}, "label": s.label,
                      "click_count": s.click_count, "segmentation_session_id": s.segmentation_session_id}
        else:
            answer = {"reason": request.skip.reason}
        answer["byproducts_session_id"] = request.byproducts_session_id
        question = self.store.get(request.project_id, request.question_id)
        owner = caller().owner_scope
        if owner is not None and question.annotator_id != owner:
            raise PermissionDenied(f"question {request.question_id!r} was asked of another annotator; an annotator "
                                   "answers only their own questions", field="question_id")
        candidate = candidate_from_pb(dialog_pb2.Candidate.FromString(question.candidate), "candidate")
        recorded = self.questioner.record(request.project_id, request.question_id,
                                          request.annotator_id or owner or "", kind, answer, request.seconds_taken,
                                          candidate)
        self.kit.celery.send_task(FIT_MODELS, args=[request.project_id,
                                                    request.annotator_id or recorded.question.annotator_id],
                                  queue="dialog")
        if kind == "verify" and request.verify.accepted and question.proposal is not None:
            event = accepted_proposals.event_of(request.project_id, request.question_id,
                                                dialog_pb2.Candidate.FromString(question.candidate),
                                                request.annotator_id or owner or question.annotator_id,
                                                request.seconds_taken)
            if event is not None:
                annotation_events.send(self.kit.celery, event, ACCEPTED_EVENT_TASKS)
        reply = dialog_pb2.RecordAnswerResponse()
        if recorded.follow_up is not None:
            reply.follow_up.CopyFrom(self._question_pb(recorded.follow_up))
        return reply

    def ListPolicies(self, request, context):
        return dialog_pb2.ListPoliciesResponse(policies=[
            dialog_pb2.Policy(name=p.name, description=p.description, kind=KINDS[p.kind],
                              parameters=p.parameters, is_default=p.name == DEFAULT)
            for p in registry().values()])

    def GetCostModel(self, request, context):
        project = load_estimates(self.store, request.project_id, "")
        annotator = load_estimates(self.store, request.project_id, request.annotator_id) \
            if request.annotator_id else None
        model = cost_model.CostModel(project, annotator)
        reply = dialog_pb2.GetCostModelResponse(seconds_per_click=model.seconds_per_click)
        for qtype in (VERIFY, LABEL_REGION, SEGMENT):
            prior = cost_model.PRIORS[qtype]
            entry = dialog_pb2.QuestionTypeCost(
                type=TYPES[qtype], prior=dialog_pb2.CostPrior(seconds=prior.seconds, source=prior.source,
                                                              formula=prior.formula),
                effective_seconds=model.seconds(qtype, {}))
            for scope, target in ((project, entry.project_estimate), (annotator, entry.annotator_estimate)):
                estimate = _estimate(scope, qtype, model) if scope is not None else None
                if estimate is not None:
                    target.CopyFrom(estimate)
            reply.costs.append(entry)
        row = self.store.model(request.project_id, "", "acceptance")
        acceptance = load_acceptance(self.store, request.project_id, request.annotator_id)
        if acceptance.fitted:
            m = acceptance.model
            reply.acceptance.CopyFrom(dialog_pb2.AcceptanceModel(
                observations=m.observations, coefficients=m.coefficients, acceptance_rate=m.mean,
                fit_time=to_timestamp(row.fit_time) if row is not None else None))
        elif row is not None:
            reply.acceptance.CopyFrom(dialog_pb2.AcceptanceModel(observations=row.observations,
                                                                 acceptance_rate=row.params.get("mean", 0.0)))
        return reply


def _noted(candidate: Candidate, note: str) -> Candidate:
    candidate.note = note
    return candidate


def _estimate(estimates, qtype: str, model: cost_model.CostModel):
    key = "clicks:scratch" if qtype == SEGMENT else f"seconds:{qtype}"
    fitted = estimates.models.get(key)
    if fitted is None or fitted.observations == 0:
        return None
    coefficients = dict(fitted.coefficients)
    if qtype == SEGMENT:  # clicks -> seconds: first click, then seconds per click
        per_click = model.seconds_per_click
        coefficients = {k: v * per_click for k, v in coefficients.items()}
        coefficients["intercept"] += cost_model.FIRST_CLICK_S - per_click
        mean = cost_model.FIRST_CLICK_S + max(0.0, fitted.mean - 1) * per_click
        std = fitted.std * per_click
    else:
        mean, std = fitted.mean, fitted.std
    return dialog_pb2.CostEstimate(mean_seconds=mean, std_seconds=std, observations=fitted.observations,
                                   coefficients=coefficients)


def register(server: grpc.Server, kit: Kit) -> None:
    dialog_pb2_grpc.add_DialogServicer_to_server(DialogServicer(kit), server)


if __name__ == "__main__":
    serve("dialog", register)
