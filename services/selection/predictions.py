"""Model predictions of one pool item: decoding from the wire format, validation, storage bytes.

A prediction is a class-probability map ``[K, H, W]`` plus optional ensemble / MC-dropout members
``[M, K, H, W]``, predictions on transformed inputs (mapped back to the original frame here, so that
everything stored is pixel-aligned) and an image embedding. Every check names the offending field.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass, field

import numpy as np

from services.common.active_learning.transforms import TRANSFORMS, invert
from services.common.errors import InvalidArgument

# Wire dtypes: name -> (numpy dtype, tolerance of the per-pixel sum of K probabilities, per class).
DTYPES = {"FLOAT32": ("<f4", 1e-3), "FLOAT16": ("<f2", 1e-3), "UINT8_UNIT": ("u1", 1 / 255)}


@dataclass
class Prediction:
    probabilities: np.ndarray  # [K, H, W] float32
    members: np.ndarray | None = None  # [M, K, H, W] float32
    augmented: np.ndarray | None = None  # [A, K, H, W] float32, already in the original frame
    embedding: np.ndarray | None = None  # [D] float32
    model_version: str = ""
    augment_names: list[str] = field(default_factory=list)

    @property
    def classes(self) -> int:
        return self.probabilities.shape[0]

    def to_bytes(self) -> bytes:
        """Compact storage (float16 maps, npz); ``from_bytes`` restores float32."""
        arrays = {"probabilities": self.probabilities.astype(np.float16)}
        if self.members is not None:
            arrays["members"] = self.members.astype(np.float16)
        if self.augmented is not None:
            arrays["augmented"] = self.augmented.astype(np.float16)
            arrays["augment_names"] = np.array(self.augment_names)
        if self.embedding is not None:
            arrays["embedding"] = self.embedding.astype(np.float32)
        buffer = io.BytesIO()
        np.savez(buffer, **arrays)
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, blob: bytes, model_version: str = "") -> "Prediction":
        with np.load(io.BytesIO(blob)) as npz:
            get = lambda name: npz[name].astype(np.float32) if name in npz else None  # noqa: E731
            names = [str(n) for n in npz["augment_names"]] if "augment_names" in npz else []
            return cls(get("probabilities"), get("members"), get("augmented"), get("embedding"),
                       model_version, names)


def digest(blob: bytes) -> str:
    return hashlib.sha256(blob).hexdigest()[:32]


def decode_tensor(shape: list[int], dtype: str, data: bytes, field: str) -> np.ndarray:
    """Raw little-endian C-order bytes -> float32 array of ``shape``."""
    if dtype not in DTYPES:
        raise InvalidArgument(f"{field}.dtype", f"must be one of {', '.join(DTYPES)}", reason="REQUIRED")
    if not shape or any(int(s) <= 0 for s in shape):
        raise InvalidArgument(f"{field}.shape", f"dimensions must be positive, got {list(shape)}")
    np_dtype = np.dtype(DTYPES[dtype][0])
    expected = int(np.prod(shape)) * np_dtype.itemsize
    if len(data) != expected:
        raise InvalidArgument(f"{field}.data", f"has {len(data)} bytes; shape {list(shape)} of {dtype} "
                              f"needs {expected}", reason="SHAPE_MISMATCH")
    array = np.frombuffer(data, dtype=np_dtype).reshape([int(s) for s in shape]).astype(np.float32)
    return array / 255.0 if dtype == "UINT8_UNIT" else array


def check_probabilities(p: np.ndarray, field: str, classes: int, dtype: str = "FLOAT32",
                        size: tuple[int, int] | None = None) -> None:
    """[K, H, W] with K == classes, values in [0, 1], each pixel's K values summing to 1."""
    if p.ndim != 3 or p.shape[0] != classes:
        raise InvalidArgument(f"{field}.shape", f"must be [K={classes}, H, W], got {list(p.shape)}",
                              reason="SHAPE_MISMATCH")
    if size is not None and p.shape[1:] != size:
        raise InvalidArgument(f"{field}.shape", f"must be [{classes}, {size[0]}, {size[1]}] like "
                              f"`probabilities`, got {list(p.shape)}", reason="SHAPE_MISMATCH")
    if not np.isfinite(p).all() or p.min() < 0 or p.max() > 1:
        raise InvalidArgument(field, "values must be finite and in [0, 1]", reason="OUT_OF_RANGE")
    tolerance = DTYPES.get(dtype, DTYPES["FLOAT32"])[1] * classes
    error = np.abs(p.sum(axis=0) - 1.0)
    worst = int(error.argmax())
    if error.flat[worst] > tolerance:
        row, col = divmod(worst, p.shape[2])
        raise InvalidArgument(field, f"class probabilities must sum to 1 within {tolerance:.3g}; pixel "
                              f"(row {row}, col {col}) sums to {float(p.sum(axis=0).flat[worst]):.4f}",
                              reason="NOT_NORMALISED")


def build(index_field: str, classes: int, probabilities: tuple, members: list[tuple] = (),
          augmented: list[tuple] = (), embedding: list[float] = (), model_version: str = "",
          embedding_dim: int | None = None) -> Prediction:
    """A validated Prediction from decoded wire parts.

    ``probabilities`` and each member are ``(shape, dtype, data)``; each augmented entry is
    ``(transform, scale, (shape, dtype, data), inverse_applied)``.
    """
    field = f"{index_field}.probabilities"
    p = decode_tensor(*probabilities, field)
    check_probabilities(p, field, classes, probabilities[1])
    size = p.shape[1:]
    stack = []
    for j, (shape, dtype, data) in enumerate(members):
        f = f"{index_field}.ensemble_members[{j}]"
        m = decode_tensor(shape, dtype, data, f)
        check_probabilities(m, f, classes, dtype, size)
        stack.append(m)
    augs, names = [], []
    for j, (transform, scale, tensor, inverse_applied) in enumerate(augmented):
        f = f"{index_field}.augmented[{j}]"
        if transform not in TRANSFORMS:
            raise InvalidArgument(f"{f}.transform", f"must be one of {', '.join(TRANSFORMS)}", reason="REQUIRED")
        if transform == "scale" and not scale > 0:
            raise InvalidArgument(f"{f}.scale", "must be > 0 for SCALE", reason="OUT_OF_RANGE")
        q = decode_tensor(*tensor, f"{f}.probabilities")
        check_probabilities(q, f"{f}.probabilities", classes, tensor[1])
        if not inverse_applied:
            q = invert(q, transform, size)
        check_probabilities(q, f"{f}.probabilities", classes, tensor[1], size)
        augs.append(q)
        names.append(transform if transform != "scale" else f"scale{scale:g}")
    emb = np.asarray(embedding, dtype=np.float32) if len(embedding) else None
    if emb is not None:
        if not np.isfinite(emb).all():
            raise InvalidArgument(f"{index_field}.embedding", "values must be finite", reason="OUT_OF_RANGE")
        if embedding_dim and emb.shape[0] != embedding_dim:
            raise InvalidArgument(f"{index_field}.embedding", f"has length {emb.shape[0]}; this pool's "
                                  f"embeddings have length {embedding_dim}", reason="SHAPE_MISMATCH")
    return Prediction(p, np.stack(stack) if stack else None, np.stack(augs) if augs else None, emb,
                      model_version, names)


def on_classes(prediction: Prediction, model_classes: list[str], pool_classes: list[str]) -> Prediction:
    """``prediction`` over the model's classes, laid out on the pool's class axis by name: a pool class the model
    does not know gets probability 0 (a task model trained on the labels annotated so far)."""
    index = [model_classes.index(name) if name in model_classes else -1 for name in pool_classes]

    def remap(array: np.ndarray | None, axis: int) -> np.ndarray | None:
        if array is None:
            return None
        shape = list(array.shape)
        shape[axis] = len(pool_classes)
        out = np.zeros(shape, array.dtype)
        for j, i in enumerate(index):
            if i >= 0:
                if axis == 0:
                    out[j] = array[i]
                else:
                    out[:, j] = array[:, i]
        return out

    return Prediction(remap(prediction.probabilities, 0), remap(prediction.members, 1),
                      remap(prediction.augmented, 1), prediction.embedding, prediction.model_version,
                      list(prediction.augment_names))
