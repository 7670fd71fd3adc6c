"""gRPC adapter of ``annotation.v1.Segmentation``: proto <-> sessions / predictor, network in Triton."""

from __future__ import annotations

import time

import grpc
from tritonclient.utils import InferenceServerException

from annotation.v1 import common_pb2, segmentation_pb2, segmentation_pb2_grpc
from services.common import annotation_events
from services.common.errors import InvalidArgument
from services.common.grpc_server import Kit, redis_check, serve
from services.common.images import decode_image
from services.common.masks import decode_rle, encode_rle
from services.common.proto_time import to_timestamp
from services.common.request_context import caller
from services.models import grabcut
from services.models.click_predictor import Predictor
from services.segmentation import sessions as sess
from services.segmentation.foundation_sessions import FoundationSessionStore, ProjectModels
from services.segmentation.probability_stats import probability_stats
from services.segmentation.triton_client import TritonNetwork

OUTCOMES = {
    common_pb2.SESSION_OUTCOME_UNSPECIFIED: "SUBMITTED",
    common_pb2.SESSION_OUTCOME_SUBMITTED: "SUBMITTED",
    common_pb2.SESSION_OUTCOME_SKIPPED: "SKIPPED",
    common_pb2.SESSION_OUTCOME_ABANDONED: "ABANDONED",
}


def _mask_pb(mask) -> common_pb2.Mask:
    size, counts = encode_rle(mask)
    return common_pb2.Mask(size=size, counts=counts)


def _box_pb(xywh: list | None) -> common_pb2.Box | None:
    return None if not xywh else common_pb2.Box(x=xywh[0], y=xywh[1], width=xywh[2], height=xywh[3])


def _click_pb(click: dict) -> common_pb2.Click:
    return common_pb2.Click(x=click["x"], y=click["y"], positive=click["positive"],
                            t_ms=click.get("t_ms", 0), index=click.get("index", 0))


# The loop's event of a finished session, on each queue that may need it (annotation_events.receivers).
EVENT_TASKS = {"byproducts": "byproducts.annotation_submitted", "quality": "quality.annotation_submitted",
               "dialog": "dialog.annotation_submitted", "selection": "selection.annotation_submitted",
               "training": "training.annotation_submitted"}

class SegmentationServicer(segmentation_pb2_grpc.SegmentationServicer):
    def __init__(self, kit: Kit, network: TritonNetwork) -> None:
        self.kit = kit
        self.settings = s = kit.settings
        self.network = network
        self._networks = {network.model: network}
        # The project's interactive model: its click network or a foundation model (foundation_sessions).
        models = ProjectModels(s.triton_grpc_url, s.triton_model_name, s.segmentation_project_models,
                               s.default_deadline_s)
        self.store = FoundationSessionStore(kit.redis, self._predictor, s.segmentation_session_ttl_s,
                                            s.segmentation_finished_ttl_s, s.segmentation_threshold,
                                            s.segmentation_max_clicks, models)

    def _predictor(self, model: str = "") -> Predictor:
        network = self._networks.get(model or self.network.model)
        if network is None:
            network = self._networks.setdefault(model, TritonNetwork(
                self.settings.triton_grpc_url, model, "", self.settings.default_deadline_s))
        return Predictor(network, network.encoding(),
                         refine=grabcut.refine if self.settings.segmentation_refine else None)

    def _image(self, request) -> "object":
        if not request.image_data:
            raise InvalidArgument("image_data", "required: this deployment takes the image bytes in the "
                                  "request (loading by image.uri or image.image_id is not supported)")
        return decode_image(request.image_data, self.settings.segmentation_max_image_bytes,
                            self.settings.segmentation_max_image_pixels)

    def _session_pb(self, session: sess.Session) -> segmentation_pb2.SegmentationSession:
        m = session.meta
        ttl = self.settings.segmentation_session_ttl_s if m["state"] == sess.ACTIVE \
            else self.settings.segmentation_finished_ttl_s
        return segmentation_pb2.SegmentationSession(
            session_id=m["session_id"], project_id=m["project_id"],
            image=common_pb2.ImageRef(image_id=m["image_id"], uri=m["uri"], width=m["width"], height=m["height"]),
            annotator_id=m["annotator_id"],
            task_id=m["task_id"], label=m.get("label", ""), question_id=m.get("question_id", ""),
            state=segmentation_pb2.SEGMENTATION_SESSION_STATE_ACTIVE if m["state"] == sess.ACTIVE
            else segmentation_pb2.SEGMENTATION_SESSION_STATE_FINISHED,
            clicks=[_click_pb(s["click"]) for s in session.steps], mask=_mask_pb(session.current_mask()),
            redo_depth=session.redo_depth,
            outcome=common_pb2.SessionOutcome.Value(f"SESSION_OUTCOME_{m['outcome']}") if m["outcome"]
            else common_pb2.SESSION_OUTCOME_UNSPECIFIED,
            create_time=to_timestamp(m["create_time"]), update_time=to_timestamp(m["update_time"]),
            expire_time=to_timestamp(m["update_time"] + ttl),
            box=_box_pb(session.steps[0].get("box") if session.steps else None),
        )

    def _update_pb(self, update: sess.Update, started: float) -> segmentation_pb2.MaskUpdate:
        return segmentation_pb2.MaskUpdate(
            mask=_mask_pb(update.mask), stats=segmentation_pb2.ProbabilityStats(**update.stats),
            iou_with_previous=update.iou_with_previous, model_latency_ms=update.model_latency_ms,
            service_latency_ms=(time.perf_counter() - started) * 1000,
            click_count=len(update.session.steps), redo_depth=update.session.redo_depth,
            model_version=(update.session.steps[-1].get("model_version") or update.session.meta.get("model_version", ""))
            if update.session.steps else "",
        )

    # --- RPCs --------------------------------------------------------------------------------------
    def Predict(self, request, context):
        started = time.perf_counter()
        image = self._image(request)
        height, width = image.shape[:2]
        clicks = sess.validate_clicks(request.clicks, width, height, self.settings.segmentation_max_clicks)
        previous = None
        if request.HasField("previous_mask"):
            previous = decode_rle(request.previous_mask.size, request.previous_mask.counts,
                                  (height, width), "previous_mask").astype("float32")
        threshold = request.threshold or self.settings.segmentation_threshold
        if not 0 < threshold < 1:
            raise InvalidArgument("threshold", f"{threshold} is not in (0, 1)")
        timings: dict = {}
        prob, network_prob = self._predictor().predict_with_network(image, clicks, previous, timings)
        mask = prob > threshold
        version = f"{self.network.model}:{self.network.version or 'latest'}"
        image_ref = common_pb2.ImageRef()
        image_ref.CopyFrom(request.image)
        image_ref.width, image_ref.height = width, height
        return segmentation_pb2.PredictResponse(
            mask=_mask_pb(mask), stats=segmentation_pb2.ProbabilityStats(
                **probability_stats(prob, threshold, clicks[-1], network_prob)),
            model_latency_ms=timings.get("model_ms", 0.0),
            service_latency_ms=(time.perf_counter() - started) * 1000, model_version=version,
            image=image_ref,
        )

    def StartSession(self, request, context):
        image = self._image(request)
        height, width = image.shape[:2]
        initial = None
        if request.HasField("initial_mask"):
            decode_rle(request.initial_mask.size, request.initial_mask.counts, (height, width),
                       "initial_mask")
            initial = {"size": list(request.initial_mask.size), "counts": request.initial_mask.counts}
        session = self.store.start(
            request.project_id, image, session_id=request.session_id, image_id=request.image.image_id,
            uri=request.image.uri, annotator_id=caller().acting_as(request.annotator_id), task_id=request.task_id,
            label=request.label, initial_mask=initial, question_id=request.question_id)
        return segmentation_pb2.StartSessionResponse(session=self._session_pb(session))

    def AddClick(self, request, context):
        started = time.perf_counter()
        if not request.HasField("click"):
            raise InvalidArgument("click", "required")
        c = request.click
        update = self.store.add_click(request.project_id, request.session_id, c.x, c.y, c.positive, c.t_ms,
                                      owner=caller().owner_scope)
        return segmentation_pb2.AddClickResponse(click=_click_pb(update.click),
                                                 update=self._update_pb(update, started))

    def AddBox(self, request, context):
        started = time.perf_counter()
        if not request.HasField("box"):
            raise InvalidArgument("box", "required: the box around the object (x, y, width, height)")
        b = request.box
        update = self.store.add_box(request.project_id, request.session_id, b.x, b.y, b.width, b.height,
                                    request.t_ms, owner=caller().owner_scope)
        return segmentation_pb2.AddBoxResponse(box=_box_pb(update.box), click=_click_pb(update.click),
                                               update=self._update_pb(update, started))

    def Undo(self, request, context):
        started = time.perf_counter()
        update = self.store.undo(request.project_id, request.session_id, owner=caller().owner_scope)
        return segmentation_pb2.UndoResponse(undone_click=_click_pb(update.click),
                                             update=self._update_pb(update, started), undone_box=_box_pb(update.box))

    def Redo(self, request, context):
        started = time.perf_counter()
        update = self.store.redo(request.project_id, request.session_id, owner=caller().owner_scope)
        return segmentation_pb2.RedoResponse(redone_click=_click_pb(update.click),
                                             update=self._update_pb(update, started), redone_box=_box_pb(update.box))

    def FinishSession(self, request, context):
        outcome = OUTCOMES.get(request.outcome)
        if outcome is None:
            raise InvalidArgument("outcome", f"unknown outcome {request.outcome}")
        session, finished_now = self.store.finish(request.project_id, request.session_id, outcome,
                                                  request.label, owner=caller().owner_scope)
        # One typed event to every queue that needs it. A server that died (or lost Redis) between marking the
        # session finished and sending left no operations; a retried FinishSession sends now, under the same
        # derived task ids (the receivers are idempotent by annotation id).
        if finished_now or "operations" not in session.meta:
            event = sess.annotation_event(session, sess.served_version(session) or self._served_version())
            session.meta["operations"] = annotation_events.send(self.kit.celery, event, EVENT_TASKS)
            self.store.save_meta(session, ttl=self.settings.segmentation_finished_ttl_s)
        operations = session.meta["operations"]
        return segmentation_pb2.FinishSessionResponse(
            session=self._session_pb(session),
            quality_operation_id=operations.get("quality", ""),
            byproducts_operation_id=operations.get("byproducts", ""),
        )

    def _served_version(self) -> str:
        """``model:version`` of the default click network, for a session that recorded none (no click): the
        configured version, else the newest one Triton has READY (what its default version policy serves);
        empty when Triton cannot say (unknown)."""
        if self.network.version:
            return f"{self.network.model}:{self.network.version}"
        try:
            index = self.network.client.get_model_repository_index(as_json=True, client_timeout=1.0)
        except InferenceServerException:
            return ""
        ready = [m.get("version", "") for m in index.get("models", [])
                 if m.get("name") == self.network.model and m.get("state") == "READY"]
        ready = [int(v) for v in ready if v.isdigit()]
        return f"{self.network.model}:{max(ready)}" if ready else ""

    def GetSession(self, request, context):
        session = self.store.load(request.project_id, request.session_id, owner=caller().owner_scope)
        return segmentation_pb2.SegmentationGetSessionResponse(session=self._session_pb(session))

    def GetModelInfo(self, request, context):
        status = self.network.status()
        s = self.settings
        response = segmentation_pb2.SegmentationGetModelInfoResponse(
            model_name=self.network.model, model_version=self.network.version,
            triton=segmentation_pb2.TritonStatus(**status), max_image_pixels=s.segmentation_max_image_pixels,
            max_image_bytes=s.segmentation_max_image_bytes, default_threshold=s.segmentation_threshold,
            session_ttl_s=s.segmentation_session_ttl_s,
        )
        if status["model_ready"]:
            encoding = self.network.encoding()
            response.click_radius_px = int(encoding.radius)
            response.input_long_side_px = encoding.size
        return response


def register(server: grpc.Server, kit: Kit) -> None:
    s = kit.settings
    network = TritonNetwork(s.triton_grpc_url, s.triton_model_name, s.triton_model_version,
                            s.default_deadline_s)
    segmentation_pb2_grpc.add_SegmentationServicer_to_server(SegmentationServicer(kit, network), server)


if __name__ == "__main__":
    # Readiness follows Redis only: with Triton down the service still answers (GetSession, Undo,
    # GetModelInfo) and clicks fail fast with UNAVAILABLE instead of the pod leaving the Service.
    serve("segmentation", register, checks=(redis_check,))
