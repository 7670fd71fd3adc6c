"""The whole per-click computation of the pretrained click network, in torch: zoom-in crop, click
encoding, the network, paste-back, and the FocalClick-style focus pass.

One module that TorchScript compiles (``torch.jit.script``), so Triton runs exactly what training
validated, on CPU or GPU, and the segmentation service only sends the image, the clicks and the previous
probability. Inputs per request: ``image`` (H, W, 3) uint8 RGB, ``clicks`` (K, 3) int32 rows
``(x, y, positive)`` in image pixels, ``prev`` (H, W) float32 probability or an empty tensor for none.
Output: the object probability (H, W) float32. ``forward`` takes lists, so the network passes of
several requests (Triton's dynamic batching) run as one batch.

1. Zoom-in (RITM, as ``click_encoding.zoom_crop``): the whole image at first, later a square around the
   previous object estimate and the positive clicks, resized to ``size``.
2. Focus (FocalClick): the part of the new mask that the last click changed, the connected region that
   holds the click, gets a second pass on a square crop around it taken from the full-resolution image,
   with the first pass's map as the previous mask; its result replaces the map inside that crop. It runs
   only when the crop is seen at a finer scale than the first pass saw it.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

THRESHOLD = 0.49


class ClickPipeline(nn.Module):
    def __init__(
        self,
        net: nn.Module,
        size: int = 256,
        radius: float = 5.0,
        expand: float = 1.4,
        min_fraction: float = 0.2,
        focus: bool = True,
        focus_size: int = 256,
        focus_expand: float = 1.6,
        focus_min_px: int = 64,
        focus_min_gain: float = 1.25,
    ) -> None:
        super().__init__()
        self.net = net
        self.threshold = THRESHOLD
        self.size, self.radius = size, radius
        self.expand, self.min_fraction = expand, min_fraction
        self.focus, self.focus_size = focus, focus_size
        self.focus_expand, self.focus_min_px = focus_expand, focus_min_px
        # the focus pass must see its crop at least this much finer than the first pass did
        self.focus_min_gain = focus_min_gain
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1) * 255, persistent=False)
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1) * 255, persistent=False)

    # --- geometry ------------------------------------------------------------------------------
    def zoom_window(self, height: int, width: int, clicks: torch.Tensor, prev: torch.Tensor) -> list[int]:
        """[x0, y0, side] of the zoom-in square (may reach outside the image)."""
        full = max(height, width)
        positive = clicks[clicks[:, 2] > 0]
        obj = prev > self.threshold if prev.numel() > 0 else torch.zeros(0, dtype=torch.bool)
        if positive.shape[0] == 0 or obj.numel() == 0 or not bool(obj.any()):
            return [(width - full) // 2, (height - full) // 2, full]
        rows = torch.nonzero(obj.any(1)).flatten()
        cols = torch.nonzero(obj.any(0)).flatten()
        y_lo = min(int(rows.min()), int(positive[:, 1].min()))
        y_hi = max(int(rows.max()), int(positive[:, 1].max())) + 1
        x_lo = min(int(cols.min()), int(positive[:, 0].min()))
        x_hi = max(int(cols.max()), int(positive[:, 0].max())) + 1
        side = min(float(full), max(max(y_hi - y_lo, x_hi - x_lo) * self.expand, self.min_fraction * full))
        return self._square(height, width, (x_lo + x_hi) / 2.0, (y_lo + y_hi) / 2.0, side)

    def _square(self, height: int, width: int, cx: float, cy: float, side: float) -> list[int]:
        """A square of ``side`` centred at (cx, cy), moved inside the image where it fits."""
        side_px = max(1, int(round(side)))
        x0 = cx - side_px / 2.0
        y0 = cy - side_px / 2.0
        if side_px <= width:
            x0 = min(max(x0, 0.0), float(width - side_px))
        if side_px <= height:
            y0 = min(max(y0, 0.0), float(height - side_px))
        return [int(round(x0)), int(round(y0)), side_px]

    def cut(self, array: torch.Tensor, window: list[int], size: int) -> torch.Tensor:
        """(C, H, W) float -> (C, size, size): the window, zero outside the image, resized."""
        x0, y0, side = window[0], window[1], window[2]
        height, width = array.shape[-2], array.shape[-1]
        xa, ya = max(x0, 0), max(y0, 0)
        xb, yb = min(x0 + side, width), min(y0 + side, height)
        part = array[:, ya:yb, xa:xb]
        part = F.pad(part, [xa - x0, x0 + side - xb, ya - y0, y0 + side - yb])
        return F.interpolate(part[None], size=[size, size], mode="bilinear", align_corners=False,
                             antialias=side > size)[0]

    def paste(self, prob: torch.Tensor, window: list[int], base: torch.Tensor) -> torch.Tensor:
        """``base`` (H, W) with the window replaced by ``prob`` (size, size) resized to the window."""
        x0, y0, side = window[0], window[1], window[2]
        height, width = base.shape[0], base.shape[1]
        xa, ya = max(x0, 0), max(y0, 0)
        xb, yb = min(x0 + side, width), min(y0 + side, height)
        if xb <= xa or yb <= ya:
            return base
        up = F.interpolate(prob[None, None], size=[side, side], mode="bilinear", align_corners=False,
                           antialias=prob.shape[-1] > side)[0, 0]
        out = base.clone()
        out[ya:yb, xa:xb] = up[ya - y0:yb - y0, xa - x0:xb - x0]
        return out

    def disks(self, clicks: torch.Tensor, window: list[int], size: int) -> torch.Tensor:
        """(2, size, size): positive and negative click disks of ``radius`` px in the resized window."""
        maps = torch.zeros(2, size, size, device=clicks.device)
        if clicks.shape[0] == 0:
            return maps
        scale = size / float(window[2])
        xy = clicks[:, :2].float()
        x = torch.round((xy[:, 0] + 0.5 - window[0]) * scale - 0.5)
        y = torch.round((xy[:, 1] + 0.5 - window[1]) * scale - 0.5)
        grid = torch.arange(size, device=clicks.device, dtype=torch.float32)
        inside = ((grid[None, :, None] - y[:, None, None]) ** 2
                  + (grid[None, None, :] - x[:, None, None]) ** 2) <= self.radius ** 2
        positive = clicks[:, 2] > 0
        if bool(positive.any()):
            maps[0] = inside[positive].any(0).float()
        if bool((~positive).any()):
            maps[1] = inside[~positive].any(0).float()
        return maps

    def encode(self, image: torch.Tensor, clicks: torch.Tensor, prev: torch.Tensor, window: list[int],
               size: int) -> torch.Tensor:
        """(6, size, size) network input: normalised RGB, positive / negative disks, previous map."""
        rgb = (self.cut(image.permute(2, 0, 1).float(), window, size) - self.mean) / self.std
        prev_c = self.cut(prev[None], window, size) if prev.numel() > 0 else torch.zeros(
            1, size, size, device=image.device)
        return torch.cat([rgb, self.disks(clicks, window, size), prev_c], 0)

    def changed_region(self, new: torch.Tensor, old: torch.Tensor, click: torch.Tensor,
                       window: list[int]) -> list[int]:
        """[x0, y0, x1, y1] in image pixels of the region the last click changed, the connected part
        that holds the click (on the first pass's grid, halved: morphological reconstruction by
        repeated 3x3 max-pooling), or the click alone when it changed nothing around itself."""
        changed = ((new > self.threshold) != (old > self.threshold)).float()[None, None]
        changed = F.max_pool2d(changed, 2)
        grid = changed.shape[-1]
        scale = grid / float(window[2])
        cx = int((float(click[0]) + 0.5 - window[0]) * scale)
        cy = int((float(click[1]) + 0.5 - window[1]) * scale)
        cx, cy = min(max(cx, 0), grid - 1), min(max(cy, 0), grid - 1)
        region = torch.zeros_like(changed)
        region[0, 0, max(cy - 1, 0):cy + 2, max(cx - 1, 0):cx + 2] = 1.0
        region = region * changed
        if not bool(region.any()):
            x, y = int(click[0]), int(click[1])
            return [x, y, x + 1, y + 1]
        for _ in range(grid * 2):
            grown = F.max_pool2d(region, 3, 1, 1) * changed
            if torch.equal(grown, region):
                break
            region = grown
        rows = torch.nonzero(region[0, 0].any(1)).flatten()
        cols = torch.nonzero(region[0, 0].any(0)).flatten()
        x0 = window[0] + int(cols.min()) / scale
        x1 = window[0] + (int(cols.max()) + 1) / scale
        y0 = window[1] + int(rows.min()) / scale
        y1 = window[1] + (int(rows.max()) + 1) / scale
        return [int(x0), int(y0), int(x1 + 0.999), int(y1 + 0.999)]

    def focus_window(self, height: int, width: int, box: list[int], zoom: list[int]) -> list[int]:
        """[x0, y0, side] around ``box``, or [] when it would not see finer than the first pass."""
        side = max(box[2] - box[0], box[3] - box[1]) * self.focus_expand
        side = min(max(side, float(self.focus_min_px), 0.15 * zoom[2]), float(zoom[2]))
        if self.focus_size / side < self.focus_min_gain * self.size / float(zoom[2]):
            return []
        return self._square(height, width, (box[0] + box[2]) / 2.0, (box[1] + box[3]) / 2.0, side)

    # --- the passes ----------------------------------------------------------------------------
    # Three exported stages around the two network passes, so that Triton's model can run the network
    # itself on another runtime (ONNX Runtime on CPU) and this module does all the rest; ``forward`` is
    # the same stages with the network in torch.
    def run_net(self, batch: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.net(batch))[:, 0]

    @torch.jit.export
    def first_pass_inputs(self, images: list[torch.Tensor], clicks: list[torch.Tensor],
                          prevs: list[torch.Tensor]) -> tuple[list[list[int]], torch.Tensor]:
        """(zoom windows, the first pass's (N, 6, size, size) network input)."""
        windows: list[list[int]] = []
        inputs: list[torch.Tensor] = []
        for i, image in enumerate(images):
            window = self.zoom_window(image.shape[0], image.shape[1], clicks[i], prevs[i])
            windows.append(window)
            inputs.append(self.encode(image, clicks[i], prevs[i], window, self.size))
        return windows, torch.stack(inputs)

    @torch.jit.export
    def focus_pass_inputs(self, images: list[torch.Tensor], clicks: list[torch.Tensor], prevs: list[torch.Tensor],
                          windows: list[list[int]], inputs: torch.Tensor, crops: torch.Tensor
                          ) -> tuple[list[torch.Tensor], list[int], list[list[int]], torch.Tensor]:
        """The first pass's maps pasted into the images, and what the focus pass needs: which requests,
        their windows and its network input (an empty tensor when no request gets a focus pass)."""
        outputs: list[torch.Tensor] = []
        for i, image in enumerate(images):
            base = prevs[i] if prevs[i].numel() > 0 else torch.zeros(
                image.shape[0], image.shape[1], device=image.device)
            outputs.append(self.paste(crops[i], windows[i], base))
        focus_ids: list[int] = []
        focus_windows: list[list[int]] = []
        focus_inputs: list[torch.Tensor] = []
        if not self.focus:
            return outputs, focus_ids, focus_windows, torch.zeros(0)
        for i, image in enumerate(images):
            if clicks[i].shape[0] == 0:
                continue
            old = inputs[i][5]
            box = self.changed_region(crops[i], old, clicks[i][-1], windows[i])
            window = self.focus_window(image.shape[0], image.shape[1], box, windows[i])
            if len(window) == 0:
                continue
            focus_ids.append(i)
            focus_windows.append(window)
            focus_inputs.append(self.encode(image, clicks[i], outputs[i], window, self.focus_size))
        if len(focus_ids) == 0:
            return outputs, focus_ids, focus_windows, torch.zeros(0)
        return outputs, focus_ids, focus_windows, torch.stack(focus_inputs)

    @torch.jit.export
    def paste_focus_pass(self, outputs: list[torch.Tensor], focus_ids: list[int], focus_windows: list[list[int]],
                         refined: torch.Tensor) -> list[torch.Tensor]:
        for j, i in enumerate(focus_ids):
            outputs[i] = self.paste(refined[j], focus_windows[j], outputs[i])
        return outputs

    def forward(self, images: list[torch.Tensor], clicks: list[torch.Tensor],
                prevs: list[torch.Tensor]) -> list[torch.Tensor]:
        windows, inputs = self.first_pass_inputs(images, clicks, prevs)
        crops = self.run_net(inputs)
        outputs, focus_ids, focus_windows, focus_inputs = self.focus_pass_inputs(
            images, clicks, prevs, windows, inputs, crops)
        if len(focus_ids) == 0:
            return outputs
        return self.paste_focus_pass(outputs, focus_ids, focus_windows, self.run_net(focus_inputs))


class _NetworkProbability(nn.Module):
    """What ``run_net`` computes, as one graph: the object probability (N, size, size) of a batch."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, batch: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.net(batch))[:, 0]


def from_config(net: nn.Module, config: dict, focus: bool | None = None) -> ClickPipeline:
    """The pipeline a training config describes (``size``, ``radius``, ``focus``, ``focus_size``)."""
    return ClickPipeline(
        net.eval(), size=config.get("size", 256), radius=float(config.get("radius", 5)),
        focus=config.get("focus", True) if focus is None else focus,
        focus_size=config.get("focus_size", config.get("size", 256)),
    ).eval()


def segmenter(pipeline: nn.Module, image):
    """A ``Segmenter`` ((clicks, prev) -> probability, numpy) for one image, run in-process."""
    import numpy as np

    image_t = torch.from_numpy(np.array(image, dtype=np.uint8))  # a writable copy: torch warns on read-only

    def run(clicks, prev):
        rows = [[c.x, c.y, int(c.positive)] for c in clicks]
        clicks_t = torch.tensor(rows, dtype=torch.int32).reshape(-1, 3)
        prev_t = torch.zeros(0) if prev is None else torch.from_numpy(np.asarray(prev, np.float32))
        with torch.inference_mode():
            return pipeline([image_t], [clicks_t], [prev_t])[0].numpy()

    return run


def served_segmenters(model_dir: str | Path):
    """``image -> Segmenter`` running a pipeline model folder (``1/model.pt``, ``config.pbtxt``) in process
    as its Triton model does: the focus pass and the refinement as its config's parameters set them. For
    simulations that click thousands of times, where a server round trip per click buys nothing."""
    from services.models import click_repository, grabcut

    model_dir = Path(model_dir)
    params = click_repository.parameters((model_dir / "config.pbtxt").read_text())
    try:
        refine = click_repository.pipeline_refinement(params)
    except ValueError as exc:
        raise ValueError(f"{model_dir}: {exc}") from None
    if refine is None:
        raise ValueError(f"{model_dir} is not a pipeline click model (parameter interface)")
    pipeline = torch.jit.load(str(model_dir / "1" / "model.pt"), map_location="cpu").eval()
    pipeline.focus = params.get("focus", "true").lower() == "true"

    def make(image):
        network = segmenter(pipeline, image)
        if refine == "none":
            return network
        return lambda clicks, prev: grabcut.refine(image, network(clicks, prev), clicks)

    return make


def network_onnx_path(scripted: str | Path) -> Path:
    """The network's ONNX graph kept beside a pipeline's TorchScript (``model.pt`` -> ``model.onnx``)."""
    return Path(scripted).with_suffix(".onnx")


def export(pipeline: ClickPipeline, path: str | Path) -> Path:
    """TorchScript of the whole pipeline (what the Triton model loads) and, beside it, the network alone
    as ONNX (``network_onnx_path``; what the CPU Triton model runs on ONNX Runtime, 1.7x torch's speed
    for this network here), batch and crop size dynamic."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pipeline = pipeline.eval()
    torch.jit.script(pipeline).save(str(path))
    example = torch.zeros(1, 6, pipeline.size, pipeline.size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript-based exporter's deprecation notices
        torch.onnx.export(_NetworkProbability(pipeline.net).eval(), (example,), str(network_onnx_path(path)),
                          input_names=["INPUT"], output_names=["PROB"], opset_version=17, dynamo=False,
                          dynamic_axes={"INPUT": {0: "batch", 2: "height", 3: "width"},
                                        "PROB": {0: "batch", 1: "height", 2: "width"}})
    return path
