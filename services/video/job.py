"""One propagation job: a folder of ordered frames + human samples -> every frame's mask as COCO RLE.

The body of the Celery task ``video.propagate`` (queue ``video``, ``worker.py``), kept free of celery and
grpc so it runs and is tested directly. The request carries a path and ids, never pixels (tasks re-fetch
what they need), and is self-contained (earlier rounds' samples are sent again), so a redelivered task
computes the same answer.

Request (JSON): ``frames_dir`` (frames ordered by file name), ``samples`` (each ``frame_index``, ``mask``
and optionally ``region``, both COCO RLE ``{"size": [H, W], "counts": str}`` at the frame size; no
region = the whole frame; a region may also be ``{"kind": "box", "x", "y", "width", "height"}``,
``{"kind": "patch", "row", "col", "size_px"}`` or ``{"kind": "superpixel", "segment_id", "n_segments"}``,
the SLIC superpixel recomputed on the frame with the selection service's fixed settings), ``clicks`` per sample (optional, summed), ``method`` (``finetune``,
``flowwarp``, ``interpolate``), ``flow`` (``dis``/``farneback``), ``steps``, ``temporal_weight``,
``short_side``, ``seed``, ``suggest_count`` and ``suggest_granularity`` (``frame``, ``rect16``,
``rect64``, ``superpixel``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from services.common.errors import InvalidArgument
from services.common.masks import decode_rle, encode_rle, resize_mask
from services.video.flow import compute_flows, propagate_interpolate, propagate_nearest
from services.video.frames import load_sequence
from services.video.propagation import FineTuneConfig, Labels, Progress, Propagator
from services.video.selection import GRANULARITIES, candidates, make_grids, select

METHODS = ("finetune", "flowwarp", "interpolate")


def _rle(value: dict, shape: tuple[int, int], field: str) -> np.ndarray:
    if not isinstance(value, dict) or "size" not in value or "counts" not in value:
        raise InvalidArgument(field, "a COCO RLE object {size: [H, W], counts: str} is needed")
    return decode_rle(value["size"], value["counts"], shape, field)


def _region(value: dict | None, video, t: int, field: str) -> np.ndarray:
    """Bool pixels at the original frame size of a region descriptor (see the module docstring)."""
    height, width = video.original_size
    if value is None or value.get("kind") in ("whole_image", "frame"):
        return np.ones((height, width), bool)
    kind = value.get("kind")
    if kind is None:
        return _rle(value, (height, width), field)
    try:
        if kind in ("box", "patch"):
            if kind == "patch":
                size = int(value["size_px"])
                x, y, w, h = int(value["col"]) * size, int(value["row"]) * size, size, size
            else:
                x, y, w, h = (int(round(float(value[k]))) for k in ("x", "y", "width", "height"))
            if w <= 0 or h <= 0 or not (0 <= x < width and 0 <= y < height):
                raise InvalidArgument(field, f"{kind} {value} lies outside the {width}x{height} frame")
            pixels = np.zeros((height, width), bool)
            pixels[y:y + h, x:x + w] = True
            return pixels
        if kind == "superpixel":
            from skimage.segmentation import slic

            from services.common.active_learning.regions import SLIC_SETTINGS

            segments = slic(video.source_frame(t), n_segments=int(value["n_segments"]), channel_axis=-1,
                            **SLIC_SETTINGS)
            pixels = segments == int(value["segment_id"])
            if not pixels.any():
                raise InvalidArgument(field, f"no superpixel {value['segment_id']} at n_segments {value['n_segments']}")
            return pixels
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidArgument(field, f"malformed {kind} region: {exc}") from None
    raise InvalidArgument(field, f"unknown region kind {kind!r}")


def _labels(request: dict, video) -> Labels:
    samples = request.get("samples") or []
    if not samples:
        raise InvalidArgument("samples", "at least one annotated sample is needed")
    labels = Labels.empty(len(video), *video.frames.shape[1:3])
    for i, sample in enumerate(samples):
        t = sample.get("frame_index")
        if not isinstance(t, int) or not 0 <= t < len(video):
            raise InvalidArgument(f"samples[{i}].frame_index", f"{t!r} is not a frame of 0..{len(video) - 1}")
        mask = _rle(sample.get("mask"), video.original_size, f"samples[{i}].mask")
        region = _region(sample.get("region"), video, t, f"samples[{i}].region")
        work = video.frames.shape[1:3]
        labels.add(t, resize_mask(region, work), resize_mask(mask & region, work))
    return labels


def run(request: dict, progress: Progress | None = None) -> dict:
    method = request.get("method", "finetune")
    if method not in METHODS:
        raise InvalidArgument("method", f"{method!r} is not one of {', '.join(METHODS)}")
    granularity = request.get("suggest_granularity", "frame")
    if granularity not in GRANULARITIES:
        raise InvalidArgument("suggest_granularity", f"{granularity!r} is not one of {', '.join(GRANULARITIES)}")
    folder = Path(request.get("frames_dir", ""))
    root = folder.parent if folder.name == "frames" else folder
    if not (root / "frames").is_dir() or not any((root / "frames").iterdir()):
        raise InvalidArgument("frames_dir", f"{folder} is neither <video>/frames nor a folder holding frames/")
    video = load_sequence(root, int(request.get("short_side", 240)))
    labels = _labels(request, video)
    full = labels.full_frames()
    flows = compute_flows(video.frames, request.get("flow", "dis"))
    length = len(video)
    if method == "flowwarp" or method == "interpolate":
        if not full:
            raise InvalidArgument("samples", f"method {method} needs at least one whole annotated frame")
        prob = labels.paste((propagate_nearest if method == "flowwarp" else propagate_interpolate)(full, flows, length))
    else:
        start = propagate_interpolate(full, flows, length) if full else np.full(labels.known.shape, 0.5, np.float32)
        config = FineTuneConfig(steps=int(request.get("steps", 40)),
                                temporal_weight=float(request.get("temporal_weight", 1.0)),
                                seed=int(request.get("seed", 0)))
        prob = Propagator(video.frames, flows, config).propagate(labels, start, progress)
    suggested = []
    if int(request.get("suggest_count", 0)) > 0:
        cands = candidates(prob, video.frames, make_grids(granularity, video.frames, video.original_size),
                           labels.known)
        for row in select(cands, int(request["suggest_count"]), int(request.get("seed", 0))):
            ys, xs = np.nonzero(cands.pixels(row))
            s = 1 / video.scale
            suggested.append({"frame_index": int(cands.frame[row]), "granularity": granularity,
                              "box": [int(xs.min() * s), int(ys.min() * s), int(np.ceil((xs.max() + 1 - xs.min()) * s)),
                                      int(np.ceil((ys.max() + 1 - ys.min()) * s))],
                              "uncertainty": float(cands.uncertainty[row])})
    frames = []
    for t in range(length):
        size, counts = encode_rle(resize_mask(prob[t] > 0.5, video.original_size))
        frames.append({"frame_index": t, "image_id": video.paths[t].stem, "mask": {"size": size, "counts": counts},
                       "confidence": float(np.maximum(prob[t], 1 - prob[t]).mean()),
                       "human_annotated": bool(labels.known[t].all())})
    return {"frames_total": length, "frames": frames, "suggested_samples": suggested,
            "clicks_used": int(sum(int(s.get("clicks", 0)) for s in request["samples"])), "method": method}

