"""Interactive segmentation sessions: the image decoded once, its clicks and masks, in Redis.

Keys of session ``S`` (all with the session's time-to-live, renewed by every call):
  ``seg:S``        hash: ``meta`` (JSON: the session, its applied steps and its redo stack, without
                   pixels) and ``image`` (raw RGB bytes, decoded once)
  ``seg:S:probs``  list: the probability map after each applied step (zlib'd uint8), oldest first
  ``seg:S:redo``   list: the maps of undone steps, most recent last
A click reads the meta, the image and only the last map, whatever the session's length.
Calls on one session are serialised by a Redis lock; a refused call changes nothing.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
import uuid
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from redis import Redis
from redis.exceptions import LockError, RedisError

from annotation.v1 import common_pb2
from services.common.annotation_events import MAX_ID, MAX_LABEL
from services.common.clicks import Click
from services.common.errors import (
    AlreadyExists,
    DeadlineExceeded,
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unavailable,
)
from services.common.masks import decode_rle, encode_rle, iou
from services.common.request_context import time_remaining
from services.models import box_prompt
from services.models.box_prompt import Box
from services.models.click_predictor import Predictor
from services.segmentation.probability_stats import probability_stats

ACTIVE, FINISHED = "ACTIVE", "FINISHED"


def check_click(x: float, y: float, width: int, height: int, field_name: str) -> Click:
    """A click in image pixels -> the pixel it falls on; refuses NaN and points outside the image."""
    if not math.isfinite(x) or not 0 <= x < width:
        raise InvalidArgument(f"{field_name}.x", f"x={x} is outside the image columns [0, {width})")
    if not math.isfinite(y) or not 0 <= y < height:
        raise InvalidArgument(f"{field_name}.y", f"y={y} is outside the image rows [0, {height})")
    return Click(int(x), int(y), True)


def checked_box(x: float, y: float, width: float, height: float, image_width: int, image_height: int) -> Box:
    """A box (left, top, width, height) inside the image, at least a pixel each way; else INVALID_ARGUMENT."""
    try:
        return box_prompt.check_box(x, y, width, height, image_width, image_height, "box")
    except ValueError as exc:
        raise InvalidArgument(*exc.args) from None


def check_text(value: str, field_name: str) -> None:
    """Ids and labels travel in the AnnotationSubmitted event: within its codec's limits."""
    limit = MAX_LABEL if field_name == "label" else MAX_ID
    if len(value) > limit or "\x00" in value:
        raise InvalidArgument(field_name, f"at most {limit} characters, no NUL")


def pack_prob(prob: np.ndarray) -> bytes:
    return zlib.compress(np.clip(np.rint(prob * 255), 0, 255).astype(np.uint8).tobytes(), 1)


def unpack_prob(blob: bytes, shape: tuple[int, int]) -> np.ndarray:
    return np.frombuffer(zlib.decompress(blob), np.uint8).reshape(shape).astype(np.float32) / 255.0


@dataclass
class Session:
    """``meta["steps"]``: one dict per applied click (click, stats, iou, model_ms; a box step, only ever the
    first, also ``box`` [x, y, w, h] and its centre as the click); ``meta["redo"]``: undone steps, most recent
    last. ``last_prob``: the map of the last applied step."""

    meta: dict
    image: np.ndarray | None = None
    last_prob: np.ndarray | None = None

    @property
    def shape(self) -> tuple[int, int]:
        return self.meta["height"], self.meta["width"]

    @property
    def steps(self) -> list[dict]:
        return self.meta["steps"]

    @property
    def redo_depth(self) -> int:
        return len(self.meta["redo"])

    def initial_prob(self) -> np.ndarray | None:
        initial = self.meta.get("initial_mask")
        if initial is None:
            return None
        return decode_rle(initial["size"], initial["counts"], self.shape, "initial_mask").astype(np.float32)

    def current_prob(self) -> np.ndarray | None:
        return self.last_prob if self.steps else self.initial_prob()

    def current_mask(self) -> np.ndarray:
        prob = self.current_prob()
        return np.zeros(self.shape, bool) if prob is None else prob > self.meta["threshold"]

    def clicks(self) -> list[Click]:
        return [Click(int(s["click"]["x"]), int(s["click"]["y"]), s["click"]["positive"]) for s in self.steps]

    def box(self) -> Box | None:
        """The box the object was started from, while that step is applied."""
        first = self.steps[0] if self.steps else {}
        return Box.from_xywh(first["box"]) if first.get("box") else None

    def user_clicks(self) -> list[Click]:
        """The clicks after the box step (all of them without one)."""
        return [c for s, c in zip(self.steps, self.clicks()) if not s.get("box")]

    def prompt_clicks(self) -> list[Click]:
        """What a click network gets: the box's guidance clicks, then the person's clicks."""
        box = self.box()
        return (box_prompt.guidance_clicks(box, self.shape) if box else []) + self.user_clicks()


@dataclass
class Update:
    """What a click, an undo or a redo returns."""

    session: Session
    click: dict
    mask: np.ndarray
    stats: dict
    iou_with_previous: float
    model_latency_ms: float
    box: list | None = None  # [x, y, w, h] when the step was a box


class SessionStore:
    def __init__(self, redis: Redis, predictor_factory, ttl_s: int, finished_ttl_s: int,
                 threshold: float, max_clicks: int) -> None:
        self.redis = redis
        self.predictor_factory = predictor_factory  # () -> Predictor, resolved lazily (Triton may be down)
        self.ttl_s, self.finished_ttl_s = ttl_s, finished_ttl_s
        self.threshold, self.max_clicks = threshold, max_clicks

    # --- keys and low-level access -------------------------------------------------------------
    @staticmethod
    def _keys(session_id: str) -> tuple[str, str, str]:
        base = f"seg:{session_id}"
        return base, f"{base}:probs", f"{base}:redo"

    def _touch(self, pipe, session_id: str, ttl: int) -> None:
        for key in self._keys(session_id):
            pipe.expire(key, ttl)

    def _lock(self, session_id: str):
        return self.redis.lock(f"seg:{session_id}:lock", timeout=60,
                               blocking_timeout=max(0.01, time_remaining(30.0)))

    def load(self, project_id: str, session_id: str, with_image: bool = False, owner: str | None = None) -> Session:
        """``owner``: the annotator the caller is limited to (None: any, for reviewers and admins)."""
        if not session_id:
            raise InvalidArgument("session_id", "required")
        base, probs_key, _ = self._keys(session_id)
        try:
            pipe = self.redis.pipeline()
            pipe.hget(base, "meta")
            pipe.hget(base, "image") if with_image else pipe.exists(base)
            pipe.lindex(probs_key, -1)
            meta, image, last = pipe.execute()
        except RedisError as exc:
            raise Unavailable(f"session store (Redis): {exc}") from None
        if meta is None:
            raise NotFound(f"no session {session_id!r} (unknown, or expired after "
                           f"{self.ttl_s} s without activity)")
        meta = json.loads(meta)
        if meta["project_id"] != project_id:
            raise NotFound(f"no session {session_id!r} in project {project_id!r}")
        if owner is not None and meta.get("annotator_id") != owner:
            raise PermissionDenied(f"session {session_id!r} belongs to another annotator; an annotator sees and "
                                   "changes only their own sessions", field="session_id")
        session = Session(meta)
        if with_image and image is not None:  # a finished session no longer holds its pixels
            session.image = np.frombuffer(image, np.uint8).reshape(meta["height"], meta["width"], 3)
        if last is not None and session.steps:
            session.last_prob = unpack_prob(last, session.shape)
        return session

    # --- operations --------------------------------------------------------------------------------
    def start(self, project_id: str, image: np.ndarray, *, session_id: str = "", image_id: str = "",
              uri: str = "", annotator_id: str = "", task_id: str = "", label: str = "",
              initial_mask: dict | None = None, question_id: str = "") -> Session:
        session_id = session_id or uuid.uuid4().hex
        if len(session_id) > 128 or not all(c.isalnum() or c in "-_." for c in session_id):
            raise InvalidArgument("session_id", "at most 128 characters of [A-Za-z0-9-_.]")
        for name, value in (("task_id", task_id), ("question_id", question_id), ("label", label)):
            check_text(value, name)
        now = time.time()
        height, width = image.shape[:2]
        # A caller that names no image still gets one id per image in the event: its pixels' digest.
        digest = hashlib.sha256(np.ascontiguousarray(image).tobytes()).hexdigest()[:32]
        meta = {"session_id": session_id, "project_id": project_id, "image_id": image_id, "uri": uri,
                "image_digest": digest,
                "width": width, "height": height, "annotator_id": annotator_id, "task_id": task_id,
                "question_id": question_id, "label": label, "state": ACTIVE, "outcome": "", "create_time": now, "update_time": now,
                "threshold": self.threshold, "initial_mask": initial_mask, "steps": [], "redo": []}
        base, *_ = self._keys(session_id)
        try:
            if not self.redis.hsetnx(base, "meta", json.dumps(meta)):
                raise AlreadyExists(f"session {session_id!r} exists", field="session_id")
            pipe = self.redis.pipeline()
            pipe.hset(base, "image", np.ascontiguousarray(image).tobytes())
            pipe.expire(base, self.ttl_s)
            pipe.execute()
        except RedisError as exc:
            raise Unavailable(f"session store (Redis): {exc}") from None
        return Session(meta, image)

    def add_click(self, project_id: str, session_id: str, x: float, y: float, positive: bool,
                  t_ms: int = 0, owner: str | None = None) -> Update:
        with self._locked(session_id):
            session = self.load(project_id, session_id, with_image=True, owner=owner)
            self._require_active(session)
            if len(session.steps) >= self.max_clicks:
                raise FailedPrecondition(f"the session has the maximum of {self.max_clicks} clicks")
            height, width = session.shape
            pixel = check_click(x, y, width, height, "click")
            new = Click(pixel.x, pixel.y, positive)
            clicks = [*session.prompt_clicks(), new]
            previous = session.current_prob()
            timings: dict = {}
            predictor: Predictor = self.predictor_factory()
            prob, network_prob = predictor.predict_with_network(session.image, clicks, previous, timings)
            box = session.box()
            if box is not None:  # outside the box stays background until a positive click lands there
                person = [*session.user_clicks(), new]
                prob, network_prob = box_prompt.limit(prob, box, person), box_prompt.limit(network_prob, box, person)
            click = {"x": float(x), "y": float(y), "positive": bool(positive), "t_ms": int(t_ms),
                     "index": len(session.steps)}
            return self._apply(session, click, new, prob, network_prob, timings.get("model_ms", 0.0))

    def add_box(self, project_id: str, session_id: str, x: float, y: float, width: float, height: float,
                t_ms: int = 0, owner: str | None = None) -> Update:
        """A box as the object's first input (box_prompt: the click network's box encoding)."""
        with self._locked(session_id):
            session = self.load(project_id, session_id, with_image=True, owner=owner)
            box = self._check_box_step(session, x, y, width, height)
            timings: dict = {}
            predictor: Predictor = self.predictor_factory()
            prob, network_prob = box_prompt.predict(predictor, session.image, box, timings)
            centre = box_prompt.centre_click(box, session.shape)
            click = {"x": float(centre.x), "y": float(centre.y), "positive": True, "t_ms": int(t_ms), "index": 0}
            return self._apply(session, click, centre, prob, network_prob, timings.get("model_ms", 0.0), box=box)

    def _check_box_step(self, session: Session, x: float, y: float, width: float, height: float) -> Box:
        self._require_active(session)
        if session.steps:
            raise InvalidArgument("box", f"a box is the first input of an object and this session has "
                                  f"{len(session.steps)} click(s): undo them, or start a new session")
        return checked_box(x, y, width, height, session.meta["width"], session.meta["height"])

    def _apply(self, session: Session, click: dict, last: Click, prob: np.ndarray, network_prob: np.ndarray,
               model_ms: float, box: Box | None = None, extra: dict | None = None, pipe=None) -> Update:
        """Records one new step (its map, the meta; the redo stack dropped) and returns its update."""
        before = session.current_mask()
        mask = prob > session.meta["threshold"]
        step = {"click": click, "stats": probability_stats(prob, session.meta["threshold"], last, network_prob),
                "iou": iou(mask, before), "model_ms": model_ms, **(extra or {})}
        if box is not None:
            step["box"] = box.as_xywh()
        session_id = session.meta["session_id"]
        base, probs_key, redo_key = self._keys(session_id)
        session.meta["steps"].append(step)
        session.meta["redo"] = []
        session.meta["update_time"] = time.time()
        pipe = pipe if pipe is not None else self.redis.pipeline()
        pipe.rpush(probs_key, pack_prob(prob))
        pipe.delete(redo_key)
        pipe.hset(base, "meta", json.dumps(session.meta))
        self._touch(pipe, session_id, self.ttl_s)
        try:
            pipe.execute()
        except RedisError as exc:
            raise Unavailable(f"session store (Redis): {exc}") from None
        session.last_prob = prob
        return Update(session, click, mask, step["stats"], step["iou"], step["model_ms"], step.get("box"))

    def undo(self, project_id: str, session_id: str, owner: str | None = None) -> Update:
        return self._move(project_id, session_id, undo=True, owner=owner)

    def redo(self, project_id: str, session_id: str, owner: str | None = None) -> Update:
        return self._move(project_id, session_id, undo=False, owner=owner)

    def _move(self, project_id: str, session_id: str, undo: bool, owner: str | None = None) -> Update:
        """Undo: the last step and its map go to the redo stack; redo: back. No model call."""
        with self._locked(session_id):
            session = self.load(project_id, session_id, owner=owner)
            self._require_active(session)
            base, probs_key, redo_key = self._keys(session_id)
            source, target = (session.meta["steps"], session.meta["redo"]) if undo else \
                (session.meta["redo"], session.meta["steps"])
            if not source:
                raise FailedPrecondition("there is no click to undo" if undo else "there is no undone click to redo")
            before = session.current_mask()
            moved = source.pop()
            target.append(moved)
            session.meta["update_time"] = time.time()
            pipe = self.redis.pipeline()
            pipe.lmove(probs_key, redo_key, "RIGHT", "RIGHT") if undo else pipe.lmove(redo_key, probs_key, "RIGHT", "RIGHT")
            pipe.hset(base, "meta", json.dumps(session.meta))
            self._touch(pipe, session_id, self.ttl_s)
            pipe.lindex(probs_key, -1)
            last = pipe.execute()[-1]
            session.last_prob = unpack_prob(last, session.shape) if last is not None and session.steps else None
            mask = session.current_mask()
            prob = session.current_prob()
            stats = session.steps[-1]["stats"] if session.steps else probability_stats(
                np.zeros(session.shape, np.float32) if prob is None else prob, session.meta["threshold"], None)
            return Update(session, moved["click"], mask, stats, iou(mask, before), 0.0, moved.get("box"))

    def finish(self, project_id: str, session_id: str, outcome: str, label: str = "",
               owner: str | None = None) -> tuple[Session, bool]:
        """Marks the session finished; returns it and whether this call finished it (idempotent)."""
        check_text(label, "label")
        with self._locked(session_id):
            session = self.load(project_id, session_id, owner=owner)
            if session.meta["state"] == FINISHED:
                return session, False
            session.meta.update(state=FINISHED, outcome=outcome, update_time=time.time(),
                                finish_time=time.time())
            if label:
                session.meta["label"] = label
            self.save_meta(session, ttl=self.finished_ttl_s)
            return session, True

    def save_meta(self, session: Session, ttl: int | None = None) -> None:
        base, *_ = self._keys(session.meta["session_id"])
        pipe = self.redis.pipeline()
        pipe.hset(base, "meta", json.dumps(session.meta))
        if session.meta["state"] == FINISHED:
            pipe.hdel(base, "image")  # the finished record keeps clicks and masks, not the pixels
        self._touch(pipe, session.meta["session_id"], ttl or self.ttl_s)
        pipe.execute()

    @staticmethod
    def _require_active(session: Session) -> None:
        if session.meta["state"] != ACTIVE:
            raise FailedPrecondition(f"session {session.meta['session_id']!r} is finished")

    def _locked(self, session_id: str):
        return _SessionLock(self._lock(session_id), session_id)


class _SessionLock:
    """Serialises calls on one session; Redis down -> Unavailable, lock not had in time -> deadline."""

    def __init__(self, lock, session_id: str) -> None:
        self.lock, self.session_id = lock, session_id

    def __enter__(self):
        try:
            acquired = self.lock.acquire()
        except RedisError as exc:
            raise Unavailable(f"session store (Redis): {exc}") from None
        if not acquired:
            raise DeadlineExceeded(f"session {self.session_id!r} is busy with another call")
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            self.lock.release()
        except (LockError, RedisError):
            pass  # expired or Redis gone: the lock times out by itself


def served_version(session: Session) -> str:
    """The model version behind the session's current mask: its last step's, else the session's own."""
    return (session.steps[-1].get("model_version") if session.steps else "") or session.meta.get("model_version", "")


def annotation_event(session: Session, model_version: str = "") -> common_pb2.AnnotationSubmitted:
    """The loop's one event of a finished session (``AnnotationSubmitted``; the annotation id is the session
    id): what FinishSession enqueues to every queue that needs it, whatever the outcome."""
    m = session.meta
    size, counts = encode_rle(session.current_mask())
    finish = float(m.get("finish_time") or m["update_time"])
    event = common_pb2.AnnotationSubmitted(
        project_id=m["project_id"], annotation_id=m["session_id"], session_id=m["session_id"],
        task_id=m.get("task_id", ""), question_id=m.get("question_id", ""), annotator_id=m.get("annotator_id", ""),
        image=common_pb2.ImageRef(image_id=m.get("image_id") or f"sha256-{m.get('image_digest', '')}",
                                  uri=m.get("uri", ""), width=m["width"],
                                  height=m["height"]),
        label=m.get("label", ""), mask=common_pb2.Mask(size=size, counts=counts),
        clicks=[common_pb2.Click(x=s["click"]["x"], y=s["click"]["y"], positive=s["click"]["positive"],
                                 t_ms=s["click"].get("t_ms", 0), index=s["click"].get("index", i))
                for i, s in enumerate(session.steps)],
        steps=[common_pb2.AnnotationSubmitted.Step(
            iou_with_previous=s["iou"], model_latency_ms=s["model_ms"], area_px=int(s["stats"].get("area_px", 0)),
            click_confidence=s["stats"].get("click_confidence", 0.0),
            mean_confidence=s["stats"].get("mean_confidence", 0.0),
            uncertain_fraction=s["stats"].get("uncertain_fraction", 0.0),
            mean_foreground_probability=s["stats"].get("mean_foreground_probability", 0.0)) for s in session.steps],
        model_version=model_version, total_time_ms=max(0, round((finish - float(m["create_time"])) * 1000)),
        outcome=common_pb2.SessionOutcome.Value(f"SESSION_OUTCOME_{m['outcome'] or 'SUBMITTED'}"))
    event.submit_time.FromNanoseconds(int(finish * 1e9))
    return event


def validate_clicks(clicks: Sequence, width: int, height: int, max_clicks: int) -> list[Click]:
    """The clicks of a stateless request, in order, each inside the image."""
    if not clicks:
        raise InvalidArgument("clicks", "at least one click is needed")
    if len(clicks) > max_clicks:
        raise InvalidArgument("clicks", f"{len(clicks)} clicks is over the limit of {max_clicks}")
    out = []
    for i, c in enumerate(clicks):
        pixel = check_click(c.x, c.y, width, height, f"clicks[{i}]")
        out.append(Click(pixel.x, pixel.y, bool(c.positive)))
    return out
