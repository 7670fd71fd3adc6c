"""Predictors: where predictions come from when a client did not stream them in.

A predictor maps an image to a ``Prediction`` (probabilities, optional MC-dropout members,
test-time-augmented predictions mapped back, an embedding). ``TorchPredictor`` wraps an in-process
``torch.nn.Module`` (the benchmark's task model); ``TritonPredictor`` calls a task model served by
Triton. Both share the TTA / MC-dropout logic, so a Triton model needs only the plain forward pass.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from services.common.active_learning.transforms import apply, invert
from services.common.errors import Unavailable
from services.selection.predictions import Prediction, on_classes


class Predictor(Protocol):
    def predict(self, image: np.ndarray) -> Prediction:
        """``image``: (H, W, 3) uint8 RGB."""


def softmax(logits: np.ndarray, axis: int = 1) -> np.ndarray:
    z = np.exp(logits - logits.max(axis=axis, keepdims=True))
    return z / z.sum(axis=axis, keepdims=True)


class ForwardPredictor:
    """Turns a batched forward pass ``forward(x [N, 3, H, W] float32, dropout: bool) ->
    (probabilities [N, K, H', W'], embedding [N, D] | None)`` into full predictions."""

    def __init__(self, mc_samples: int = 0, tta: tuple[tuple[str, float], ...] = (("hflip", 1.0),),
                 model_version: str = "") -> None:
        self.mc_samples, self.tta, self.model_version = mc_samples, tta, model_version

    def forward(self, x: np.ndarray, dropout: bool) -> tuple[np.ndarray, np.ndarray | None]:
        raise NotImplementedError

    def predict_batch(self, images: np.ndarray) -> list[Prediction]:
        """images: [N, 3, H, W] float32 in [0, 1], all the same size."""
        size = images.shape[2:]
        probs, embedding = self.forward(images, False)
        members = [self.forward(images, True)[0] for _ in range(self.mc_samples)]
        augmented = []
        for transform, scale in self.tta:
            x = np.stack([apply(im, transform, scale) for im in images])
            q = self.forward(np.ascontiguousarray(x), False)[0]
            augmented.append([invert(qi, transform, size) for qi in q])
        names = [t if t != "scale" else f"scale{s:g}" for t, s in self.tta]
        return [Prediction(probs[n], np.stack([m[n] for m in members]) if members else None,
                           np.stack([a[n] for a in augmented]) if augmented else None,
                           None if embedding is None else embedding[n], self.model_version, names)
                for n in range(len(images))]

    def predict(self, image: np.ndarray) -> Prediction:
        x = image.astype(np.float32).transpose(2, 0, 1)[None] / 255.0
        return self.predict_batch(x)[0]


class TorchPredictor(ForwardPredictor):
    """An in-process module (or TorchScript model) returning logits ``[N, K, H, W]`` (or ``(logits,
    embedding)``); MC dropout switches only its dropout layers to training mode."""

    def __init__(self, model, **kwargs) -> None:
        super().__init__(**kwargs)
        self.model = model

    def forward(self, x, dropout):
        import torch  # noqa: PLC0415 - torch only where a torch model is used

        self.model.eval()
        if dropout:
            for module in self.model.modules():
                # A TorchScript model's layers are ScriptModules: their original class name tells.
                if isinstance(module, (torch.nn.Dropout, torch.nn.Dropout2d)) or \
                        getattr(module, "original_name", "") in ("Dropout", "Dropout2d"):
                    module.train()
        with torch.no_grad():
            out = self.model(torch.from_numpy(x))
        logits, embedding = out if isinstance(out, tuple) else (out, None)
        self.model.eval()
        return softmax(logits.numpy()), None if embedding is None else embedding.numpy()


class TritonPredictor(ForwardPredictor):
    """A task model on Triton: input ``IMAGE`` [N, 3, H, W] FP32 in [0, 1]; outputs ``PROBABILITIES``
    [N, K, H, W] FP32 and optionally ``EMBEDDING`` [N, D]. MC-dropout members need a model that
    takes a ``DROPOUT`` BOOL [N] input; without one, set ``mc_samples=0``."""

    def __init__(self, url: str, model_name: str, timeout_s: float = 10.0, **kwargs) -> None:
        super().__init__(**kwargs)
        self.url, self.model_name, self.timeout_s = url, model_name, timeout_s
        self._client = None

    def forward(self, x, dropout):
        import tritonclient.grpc as triton  # noqa: PLC0415
        from tritonclient.utils import InferenceServerException  # noqa: PLC0415

        try:
            if self._client is None:
                self._client = triton.InferenceServerClient(self.url)
            inputs = [triton.InferInput("IMAGE", list(x.shape), "FP32")]
            inputs[0].set_data_from_numpy(x.astype(np.float32))
            if dropout:
                inputs.append(triton.InferInput("DROPOUT", [len(x)], "BOOL"))
                inputs[1].set_data_from_numpy(np.ones(len(x), bool))
            result = self._client.infer(self.model_name, inputs, client_timeout=self.timeout_s)
        except InferenceServerException as exc:
            raise Unavailable(f"Triton model {self.model_name!r} at {self.url}: {exc.message()}")
        embedding = result.as_numpy("EMBEDDING")
        return result.as_numpy("PROBABILITIES"), embedding


class ClassMapped:
    """A predictor over the model's classes, answering on the pool's class axis (``predictions.on_classes``)."""

    def __init__(self, predictor, model_classes: list[str], pool_classes: list[str]) -> None:
        self.predictor, self.model_classes, self.pool_classes = predictor, model_classes, pool_classes

    def predict(self, image):
        return on_classes(self.predictor.predict(image), self.model_classes, self.pool_classes)
