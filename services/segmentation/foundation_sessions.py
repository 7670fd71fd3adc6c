"""Sessions whose project chose a foundation model (SAM / SAM 2): the image is encoded once, at StartSession,
and every click runs only the prompt decoder on the kept features and the previous step's logits.

Per project the interactive model is a setting (``segmentation_project_models``: project id -> Triton model
name, ``*`` the default, else ``triton_model_name``): the project's own click network or a foundation decoder
(``<name>_decoder``, its config names the encoder). Without a setting for it, a project whose fine-tuned click
network the training service has promoted and published (``published_models.triton_model_name``) is served
with that. A session records its model at start, so a change applies to new sessions only.

Keys beside ``sessions.SessionStore``'s (same time-to-live, renewed by every call):
  ``seg:S:feat``    hash: the encoder's outputs, float16 bytes (SAM: EMBEDDING 256x64x64 = 2 MiB;
                    SAM 2: also HIGH_RES_0/1 = 8 MiB in all)
  ``seg:S:logits``  list: each applied step's 256 x 256 decoder logits (zlib'd float16), by step index.
A box (AddBox) goes to the decoder natively, as SAM's box prompt (its corners with point labels 2 and 3, after
the clicks), in its own step and in every later click of the object.
Undo and redo only move ``SessionStore``'s maps (no model call): the logits list is indexed by step and
trimmed when a new click drops the redo stack, so a redone step finds its logits where it left them.
"""

from __future__ import annotations

import json
import threading
import time
import zlib

import numpy as np
import tritonclient.grpc as triton
from redis.exceptions import RedisError
from tritonclient.utils import InferenceServerException

from services.common.clicks import Click
from services.common.errors import FailedPrecondition, Unavailable
from services.common.published_models import triton_model_name
from services.models import box_prompt
from services.segmentation.sessions import ACTIVE, Session, SessionStore, Update, check_click
from services.segmentation.triton_foundation import FoundationModel


def pack_logits(logits: np.ndarray) -> bytes:
    return zlib.compress(np.asarray(logits, np.float16).tobytes(), 1)


def unpack_logits(blob: bytes, side: int) -> np.ndarray:
    return np.frombuffer(zlib.decompress(blob), np.float16).reshape(side, side).astype(np.float32)


INDEX_TTL_S = 5.0


class ProjectModels:
    """Which Triton model serves a project's clicks, and whether it is a foundation decoder (asked of
    Triton once per model name)."""

    def __init__(self, url: str, default_model: str, per_project: dict[str, str], timeout_s: float) -> None:
        self.url, self.timeout_s = url, timeout_s
        self.default_model = per_project.get("*", default_model)
        self.per_project = {k: v for k, v in per_project.items() if k != "*"}
        self._foundation: dict[str, FoundationModel | None] = {}
        self._index: tuple[float, list[dict]] | None = None
        self._lock = threading.Lock()
        self._client: triton.InferenceServerClient | None = None

    def model_for(self, project_id: str) -> str:
        """The setting's model for the project; else the project's own fine-tuned click network once the
        training service has published a promoted version of it and Triton has it READY; else the default."""
        if project_id in self.per_project:
            return self.per_project[project_id]
        published = triton_model_name(project_id, "interactive")
        return published if self._ready_versions(published) else self.default_model

    def _ready_versions(self, model: str) -> list[int]:
        """The READY versions of ``model`` in Triton's repository index, read at most every
        ``INDEX_TTL_S`` (a promotion is served within that); none, and nothing remembered, when Triton
        cannot say."""
        now = time.monotonic()
        with self._lock:
            if self._index is None or now - self._index[0] >= INDEX_TTL_S:
                if self._client is None:
                    self._client = triton.InferenceServerClient(self.url)
                try:
                    self._index = (now, self._client.get_model_repository_index(
                        as_json=True, client_timeout=5.0).get("models", []))
                except InferenceServerException:
                    return []
            models = self._index[1]
        return [int(m["version"]) for m in models if m.get("name") == model and m.get("state") == "READY"
                and str(m.get("version", "")).isdigit()]

    def version_of(self, model: str) -> str:
        """``model:version`` Triton serves now (the newest READY, what its default policy calls); ``model:``
        when Triton cannot say."""
        ready = self._ready_versions(model)
        return f"{model}:{max(ready)}" if ready else f"{model}:"

    def foundation(self, model: str) -> FoundationModel | None:
        """The pair behind ``model`` when it is a foundation decoder, else None (a click network)."""
        with self._lock:
            if model in self._foundation:
                return self._foundation[model]
        candidate = FoundationModel(self.url, model, default_timeout_s=self.timeout_s)
        found = candidate.describe() if candidate.is_foundation() else None
        if found is None:
            candidate.close()
        with self._lock:
            return self._foundation.setdefault(model, found)


class FoundationSessionStore(SessionStore):
    """``SessionStore`` that sends a foundation-model session's work to its encoder/decoder pair and every
    other session, unchanged, to the base store (with the project's click network)."""

    def __init__(self, redis, predictor_factory, ttl_s: int, finished_ttl_s: int, threshold: float,
                 max_clicks: int, models: ProjectModels) -> None:
        """``predictor_factory(model_name)``: the click network's predictor for a model name."""
        self._local = threading.local()
        super().__init__(redis, lambda: predictor_factory(getattr(self._local, "model", models.default_model)),
                         ttl_s, finished_ttl_s, threshold, max_clicks)
        self.models = models

    @staticmethod
    def _extra_keys(session_id: str) -> tuple[str, str]:
        return f"seg:{session_id}:feat", f"seg:{session_id}:logits"

    def _touch(self, pipe, session_id: str, ttl: int) -> None:
        super()._touch(pipe, session_id, ttl)
        for key in self._extra_keys(session_id):
            pipe.expire(key, ttl)

    def _redis(self, pipe):
        try:
            return pipe.execute()
        except RedisError as exc:
            raise Unavailable(f"session store (Redis): {exc}") from None

    # --- operations ----------------------------------------------------------------------------------
    def _model_version(self, model: str, pair: FoundationModel | None) -> str:
        """Reported with every step's mask (MaskUpdate.model_version)."""
        if pair is None:
            return self.models.version_of(model)
        return f"{self.models.version_of(pair.decoder)}+{self.models.version_of(pair.encoder)}"

    def start(self, project_id: str, image: np.ndarray, **kwargs) -> Session:
        model = self.models.model_for(project_id)
        try:
            pair = self.models.foundation(model)
            known = True
        except Unavailable:  # Triton down: a session starts anyway (as before); its first click decides
            pair, known = None, False
        features = pair.encode(image) if pair is not None else None  # before the session exists: a failure leaves none
        session = super().start(project_id, image, **kwargs)
        session.meta["model"] = model
        session.meta["foundation"] = (pair is not None) if known else None
        session.meta["model_version"] = self._model_version(model, pair) if known else ""
        base, *_ = self._keys(session.meta["session_id"])
        feat_key, _ = self._extra_keys(session.meta["session_id"])
        pipe = self.redis.pipeline()
        if features is not None:
            session.meta["encode_ms"] = features.encode_ms
            pipe.hset(feat_key, mapping=features.to_bytes())
        pipe.hset(base, "meta", json.dumps(session.meta))
        self._touch(pipe, session.meta["session_id"], self.ttl_s)
        self._redis(pipe)
        return session

    def add_click(self, project_id: str, session_id: str, x: float, y: float, positive: bool,
                  t_ms: int = 0, owner: str | None = None) -> Update:
        pair = self._pair(project_id, session_id, owner)
        if pair is None:
            return self._with_model(project_id, session_id, owner, lambda: super(FoundationSessionStore, self)
                                    .add_click(project_id, session_id, x, y, positive, t_ms, owner))
        with self._locked(session_id):
            return self._foundation_step(pair, project_id, session_id, owner, t_ms, click=(x, y, positive))

    def add_box(self, project_id: str, session_id: str, x: float, y: float, width: float, height: float,
                t_ms: int = 0, owner: str | None = None) -> Update:
        pair = self._pair(project_id, session_id, owner)
        if pair is None:
            return self._with_model(project_id, session_id, owner, lambda: super(FoundationSessionStore, self)
                                    .add_box(project_id, session_id, x, y, width, height, t_ms, owner))
        with self._locked(session_id):
            return self._foundation_step(pair, project_id, session_id, owner, t_ms, box=(x, y, width, height))

    def _pair(self, project_id: str, session_id: str, owner: str | None) -> FoundationModel | None:
        """The session's foundation pair, or None for a click-network session."""
        # A session's model is fixed at start: reading it before the lock is safe.
        peek = self.load(project_id, session_id, owner=owner).meta
        if peek.get("foundation", False) is None:  # started while Triton was down: decide now
            peek = self._resolve(project_id, session_id, owner)
        if not peek.get("foundation"):
            return None
        pair = self.models.foundation(peek["model"])
        if pair is None:
            raise FailedPrecondition(f"model {peek['model']!r} of this session is no longer a foundation decoder")
        return pair

    def _with_model(self, project_id: str, session_id: str, owner: str | None, step):
        """Runs the base store's ``step`` with the session's click network."""
        self._local.model = self.load(project_id, session_id, owner=owner).meta.get("model", self.models.default_model)
        try:
            return step()
        finally:
            self._local.model = self.models.default_model

    def _resolve(self, project_id: str, session_id: str, owner: str | None) -> dict:
        with self._locked(session_id):
            session = self.load(project_id, session_id, owner=owner)
            if session.meta.get("foundation", False) is None:
                pair = self.models.foundation(session.meta["model"])  # Unavailable while Triton is still down
                session.meta["foundation"] = pair is not None
                session.meta["model_version"] = self._model_version(session.meta["model"], pair)
                base, *_ = self._keys(session_id)
                pipe = self.redis.pipeline()
                pipe.hset(base, "meta", json.dumps(session.meta))
                self._redis(pipe)
            return session.meta

    def _foundation_step(self, pair: FoundationModel, project_id: str, session_id: str, owner: str | None,
                         t_ms: int, click: tuple | None = None, box: tuple | None = None) -> Update:
        """One click (``click`` = x, y, positive) or the object's box (``box`` = x, y, width, height)."""
        session = self.load(project_id, session_id, owner=owner)
        if session.meta["state"] != ACTIVE:
            raise FailedPrecondition(f"session {session_id!r} is finished")
        height, width = session.shape
        if box is not None:
            new_box = self._check_box_step(session, *box)
            clicks = []
        else:
            if len(session.steps) >= self.max_clicks:
                raise FailedPrecondition(f"the session has the maximum of {self.max_clicks} clicks")
            x, y, positive = click
            pixel = check_click(x, y, width, height, "click")
            clicks = [*session.user_clicks(), Click(pixel.x, pixel.y, positive)]
            new_box = None
        prompt_box = new_box or session.box()
        feat_key, logits_key = self._extra_keys(session_id)
        pipe = self.redis.pipeline()
        pipe.hgetall(feat_key)
        pipe.lindex(logits_key, len(session.steps) - 1) if session.steps else pipe.exists(logits_key)
        blobs, previous = self._redis(pipe)
        features = pair.features_from_bytes(blobs)
        encode_ms = 0.0
        if features is None:  # evicted, or started while Triton was down: encode from the kept pixels
            session = self.load(project_id, session_id, with_image=True, owner=owner)
            if session.image is None:
                raise FailedPrecondition(f"session {session_id!r} lost its image features and pixels")
            features = pair.encode(session.image)
            encode_ms = features.encode_ms
            pipe = self.redis.pipeline()
            pipe.hset(feat_key, mapping=features.to_bytes())
            self._redis(pipe)
        side = pair.geometry.low_res
        previous_logits = unpack_logits(previous, side) if session.steps and previous is not None else None
        corners = None if prompt_box is None else (prompt_box.x0, prompt_box.y0, prompt_box.x1, prompt_box.y1)
        logits, predicted_iou, decode_ms = pair.decode(features, clicks, session.shape, previous_logits, corners)
        prob = pair.probability(logits, session.shape)
        if new_box is not None:
            last = box_prompt.centre_click(new_box, session.shape)
            step_click = {"x": float(last.x), "y": float(last.y), "positive": True, "t_ms": int(t_ms), "index": 0}
        else:
            last = clicks[-1]
            step_click = {"x": float(x), "y": float(y), "positive": bool(positive), "t_ms": int(t_ms),
                          "index": len(session.steps)}
        pipe = self.redis.pipeline()
        # drop the undone steps' logits (ltrim 0 -1 would keep them all)
        pipe.ltrim(logits_key, 0, len(session.steps) - 1) if session.steps else pipe.delete(logits_key)
        pipe.rpush(logits_key, pack_logits(logits))
        return self._apply(session, step_click, last, prob, prob, decode_ms + encode_ms, box=new_box, pipe=pipe,
                           extra={"model_version": session.meta.get("model_version", ""),
                                  "predicted_iou": predicted_iou})

    def save_meta(self, session: Session, ttl: int | None = None) -> None:
        super().save_meta(session, ttl)
        if session.meta["state"] != ACTIVE:  # a finished session keeps its masks, not the features
            pipe = self.redis.pipeline()
            pipe.delete(*self._extra_keys(session.meta["session_id"]))
            self._redis(pipe)
