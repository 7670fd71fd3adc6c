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
from services.common.masks import iou
from services.common.published_models import triton_model_name
from services.segmentation.probability_stats import probability_stats
from services.segmentation.sessions import ACTIVE, Session, SessionStore, Update, check_click, pack_prob
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
        # A session's model is fixed at start: reading it before the lock is safe.
        peek = self.load(project_id, session_id, owner=owner).meta
        if peek.get("foundation", False) is None:  # started while Triton was down: decide now
            peek = self._resolve(project_id, session_id, owner)
        if not peek.get("foundation"):
            self._local.model = peek.get("model", self.models.default_model)
            try:
                return super().add_click(project_id, session_id, x, y, positive, t_ms, owner)
            finally:
                self._local.model = self.models.default_model
        pair = self.models.foundation(peek["model"])
        if pair is None:
            raise FailedPrecondition(f"model {peek['model']!r} of this session is no longer a foundation decoder")
        with self._locked(session_id):
            return self._foundation_click(pair, project_id, session_id, x, y, positive, t_ms, owner)

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

    def _foundation_click(self, pair: FoundationModel, project_id: str, session_id: str, x: float, y: float,
                          positive: bool, t_ms: int, owner: str | None) -> Update:
        session = self.load(project_id, session_id, owner=owner)
        if session.meta["state"] != ACTIVE:
            raise FailedPrecondition(f"session {session_id!r} is finished")
        if len(session.steps) >= self.max_clicks:
            raise FailedPrecondition(f"the session has the maximum of {self.max_clicks} clicks")
        height, width = session.shape
        pixel = check_click(x, y, width, height, "click")
        clicks = [*session.clicks(), Click(pixel.x, pixel.y, positive)]
        base, probs_key, redo_key = self._keys(session_id)
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
        logits, predicted_iou, decode_ms = pair.decode(features, clicks, session.shape, previous_logits)
        prob = pair.probability(logits, session.shape)
        before = session.current_mask()
        mask = prob > session.meta["threshold"]
        click = {"x": float(x), "y": float(y), "positive": bool(positive), "t_ms": int(t_ms),
                 "index": len(session.steps)}
        stats = probability_stats(prob, session.meta["threshold"], clicks[-1], prob)
        step = {"click": click, "stats": stats, "iou": iou(mask, before), "model_ms": decode_ms + encode_ms,
                "model_version": session.meta.get("model_version", ""), "predicted_iou": predicted_iou}
        session.meta["steps"].append(step)
        session.meta["redo"] = []
        session.meta["update_time"] = time.time()
        pipe = self.redis.pipeline()
        pipe.rpush(probs_key, pack_prob(prob))
        pipe.delete(redo_key)
        # drop the undone steps' logits (ltrim 0 -1 would keep them all)
        pipe.ltrim(logits_key, 0, len(session.steps) - 2) if len(session.steps) > 1 else pipe.delete(logits_key)
        pipe.rpush(logits_key, pack_logits(logits))
        pipe.hset(base, "meta", json.dumps(session.meta))
        self._touch(pipe, session_id, self.ttl_s)
        self._redis(pipe)
        session.last_prob = prob
        return Update(session, click, mask, stats, step["iou"], step["model_ms"])

    def save_meta(self, session: Session, ttl: int | None = None) -> None:
        super().save_meta(session, ttl)
        if session.meta["state"] != ACTIVE:  # a finished session keeps its masks, not the features
            pipe = self.redis.pipeline()
            pipe.delete(*self._extra_keys(session.meta["session_id"]))
            self._redis(pipe)
