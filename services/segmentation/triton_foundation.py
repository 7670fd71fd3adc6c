"""A foundation model (SAM / SAM 2) as Triton serves it: the image encoder once per session, the prompt
decoder per click, over tritonclient gRPC.

The pair comes from ``services/segmentation/export_foundation.py``; the decoder's config names its encoder
and the geometry (``resize``: SAM ``longest_side`` = long side to 1024 and pad, SAM 2 ``stretch`` = the
square). The service does what is per session or per pixel of the answer: resizing the image once, mapping
clicks into the 1024 frame, upsampling the decoder's 256 x 256 logits to the image (one bilinear resize;
the decoder stays batchable across image sizes). Failures become domain errors as in ``triton_client``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np
import tritonclient.grpc as triton
from tritonclient.utils import InferenceServerException

from services.common.clicks import Click
from services.common.errors import DomainError, FailedPrecondition, Unavailable
from services.common.request_context import time_remaining
from services.segmentation.triton_client import CHANNEL_ARGS, _unavailable

DECODER_INTERFACE = "foundation_decoder"


@dataclass(frozen=True)
class Geometry:
    """How an image of (height, width) maps into the model's square frame."""

    resize: str  # longest_side | stretch
    image_size: int
    low_res: int

    def resized(self, height: int, width: int) -> tuple[int, int]:
        if self.resize == "stretch":
            return self.image_size, self.image_size
        scale = self.image_size / max(height, width)
        return int(height * scale + 0.5), int(width * scale + 0.5)

    def point_scale(self, height: int, width: int) -> tuple[float, float]:
        """(sx, sy): image pixel -> model frame (SAM's ``ResizeLongestSide.apply_coords``)."""
        rh, rw = self.resized(height, width)
        return rw / width, rh / height


@dataclass
class Features:
    """The encoder's outputs for one image (float16, as they travel and are kept)."""

    arrays: dict[str, np.ndarray]
    encode_ms: float

    def to_bytes(self) -> dict[str, bytes]:
        return {name: np.ascontiguousarray(a, np.float16).tobytes() for name, a in self.arrays.items()}


class FoundationModel:
    """One encoder/decoder pair in Triton; thread-safe (one channel, many calls)."""

    def __init__(self, url: str, decoder: str, version: str = "", default_timeout_s: float = 10.0) -> None:
        self.url, self.decoder, self.version = url, decoder, version
        self.default_timeout_s = default_timeout_s
        self.client = triton.InferenceServerClient(url, channel_args=CHANNEL_ARGS)
        self._lock = threading.Lock()
        self._described = False
        self.encoder = ""
        self.geometry = Geometry("longest_side", 1024, 256)
        self.feature_shapes: dict[str, tuple[int, ...]] = {}

    # --- description -----------------------------------------------------------------------------------
    def _timeout(self) -> float:
        return max(0.05, time_remaining(self.default_timeout_s) - 0.05)

    def _error(self, exc: InferenceServerException, what: str) -> Exception:
        if _unavailable(exc):
            return Unavailable(f"Triton at {self.url} cannot {what}: {exc.message()}")
        return DomainError(f"Triton refused to {what}: {exc.message()}")

    def _config(self, model: str) -> dict:
        try:
            return self.client.get_model_config(model, self.version if model == self.decoder else "",
                                                as_json=True, client_timeout=self._timeout())["config"]
        except InferenceServerException as exc:
            raise self._error(exc, f"describe model {model!r}") from None

    def describe(self) -> FoundationModel:
        """Reads the pair's configs once: the encoder's name, the geometry, the feature shapes."""
        with self._lock:
            if not self._described:
                config = self._config(self.decoder)
                params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
                if params.get("interface") != DECODER_INTERFACE:
                    raise FailedPrecondition(f"model {self.decoder!r} is not a foundation decoder (its config "
                                             f"says interface={params.get('interface', '')!r})")
                self.encoder = params["encoder"]
                self.geometry = Geometry(params.get("resize", "longest_side"), int(params.get("image_size", 1024)),
                                         int(params.get("low_res", 256)))
                encoder = self._config(self.encoder)
                self.feature_shapes = {o["name"]: tuple(int(d) for d in o["dims"]) for o in encoder["output"]}
                self._described = True
            return self

    def is_foundation(self) -> bool:
        """True when the named model is a foundation decoder (False for a click network); raises when
        Triton cannot say."""
        config = self._config(self.decoder)
        return config.get("parameters", {}).get("interface", {}).get("string_value") == DECODER_INTERFACE

    # --- calls ------------------------------------------------------------------------------------------
    def _infer(self, model: str, inputs: list, outputs: Sequence[str], what: str):
        try:
            return self.client.infer(model, inputs, model_version=self.version if model == self.decoder else "",
                                     outputs=[triton.InferRequestedOutput(o) for o in outputs],
                                     client_timeout=self._timeout())
        except InferenceServerException as exc:
            raise self._error(exc, what) from None

    def square(self, image: np.ndarray) -> tuple[np.ndarray, tuple[int, int]]:
        """The image resized into the model's square frame (top-left), and its (h, w) there."""
        g = self.describe().geometry
        height, width = image.shape[:2]
        rh, rw = g.resized(height, width)
        square = np.zeros((g.image_size, g.image_size, 3), np.uint8)
        # The official preprocessing (PIL / torchvision resize) smooths when it shrinks: INTER_AREA does too.
        shrink = rh * rw < height * width
        square[:rh, :rw] = cv2.resize(np.ascontiguousarray(image, np.uint8), (rw, rh),
                                      interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
        return square, (rh, rw)

    def encode(self, image: np.ndarray) -> Features:
        """The encoder, once per session."""
        square, size = self.square(image)
        inputs = [triton.InferInput("IMAGE", [1, *square.shape], "UINT8"), triton.InferInput("SIZE", [1, 2], "INT32")]
        inputs[0].set_data_from_numpy(square[None])
        inputs[1].set_data_from_numpy(np.array([size], np.int32))
        started = time.perf_counter()
        result = self._infer(self.encoder, inputs, list(self.feature_shapes), f"encode with {self.encoder!r}")
        elapsed = (time.perf_counter() - started) * 1000
        return Features({name: result.as_numpy(name)[0] for name in self.feature_shapes}, elapsed)

    def features_from_bytes(self, blobs: dict[bytes | str, bytes]) -> Features | None:
        """Features kept as bytes (Redis) -> arrays; None when any is missing."""
        self.describe()
        blobs = {k.decode() if isinstance(k, bytes) else k: v for k, v in blobs.items()}
        if any(name not in blobs for name in self.feature_shapes):
            return None
        return Features({name: np.frombuffer(blobs[name], np.float16).reshape(shape)
                         for name, shape in self.feature_shapes.items()}, 0.0)

    def prompts(self, clicks: Sequence[Click], shape: tuple[int, int],
                box: tuple[float, float, float, float] | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Clicks (and an optional box x0, y0, x1, y1) -> (N, 2) coordinates in the model frame and (N,) labels,
        as the official predictors build them: a padding point when there is no box, box corners last."""
        sx, sy = self.describe().geometry.point_scale(*shape)
        coords = [[c.x * sx, c.y * sy] for c in clicks]
        labels = [1.0 if c.positive else 0.0 for c in clicks]
        if box is None:
            coords.append([0.0, 0.0])
            labels.append(-1.0)
        else:
            coords += [[box[0] * sx, box[1] * sy], [box[2] * sx, box[3] * sy]]
            labels += [2.0, 3.0]
        return np.asarray(coords, np.float32).reshape(-1, 2), np.asarray(labels, np.float32)

    def decode(self, features: Features, clicks: Sequence[Click], shape: tuple[int, int],
               previous_logits: np.ndarray | None,
               box: tuple[float, float, float, float] | None = None) -> tuple[np.ndarray, float, float]:
        """The decoder, per click: (low-resolution logits (low_res, low_res), predicted IoU, ms)."""
        g = self.describe().geometry
        coords, labels = self.prompts(clicks, shape, box)
        mask = np.zeros((1, 1, g.low_res, g.low_res), np.float32) if previous_logits is None else \
            np.asarray(previous_logits, np.float32).reshape(1, 1, g.low_res, g.low_res)
        arrays = [(name, np.ascontiguousarray(a, np.float16)[None], "FP16") for name, a in features.arrays.items()]
        arrays += [("POINT_COORDS", coords[None], "FP32"), ("POINT_LABELS", labels[None], "FP32"),
                   ("MASK_INPUT", mask, "FP32"),
                   ("HAS_MASK_INPUT", np.array([[0.0 if previous_logits is None else 1.0]], np.float32), "FP32")]
        inputs = []
        for name, array, dtype in arrays:
            tensor = triton.InferInput(name, list(array.shape), dtype)
            tensor.set_data_from_numpy(array)
            inputs.append(tensor)
        started = time.perf_counter()
        result = self._infer(self.decoder, inputs, ["LOW_RES_LOGITS", "IOU"], f"decode with {self.decoder!r}")
        elapsed = (time.perf_counter() - started) * 1000
        return result.as_numpy("LOW_RES_LOGITS")[0, 0], float(result.as_numpy("IOU")[0, 0]), elapsed

    def probability(self, low_res_logits: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
        """The logits upsampled to the image and squashed: ``Sam.postprocess_masks`` (to the 1024 frame,
        crop the padding, to the image) / ``SAM2Transforms.postprocess_masks`` (straight to the image)."""
        g = self.describe().geometry
        height, width = shape
        logits = np.asarray(low_res_logits, np.float32)
        if g.resize == "longest_side":
            full = cv2.resize(logits, (g.image_size, g.image_size), interpolation=cv2.INTER_LINEAR)
            rh, rw = g.resized(height, width)
            logits = full[:rh, :rw]
        logits = cv2.resize(np.ascontiguousarray(logits), (width, height), interpolation=cv2.INTER_LINEAR)
        return (1.0 / (1.0 + np.exp(-np.clip(logits, -60, 60)))).astype(np.float32)

    def close(self) -> None:
        self.client.close()
