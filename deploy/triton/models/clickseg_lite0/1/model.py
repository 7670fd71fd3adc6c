"""Triton Python-backend model: the whole per-click computation of the pretrained click network
(``model.pt`` beside this file: TorchScript of ``services/models/click_pipeline.py``), on CPU or GPU,
then, with the parameter ``refine`` = ``grabcut``, GrabCut seeded by the network's map
(``services/models/grabcut.py``, numpy + OpenCV on the CPU), so no per-click compute stays in the service.

Inputs per request (leading batch dimension N, usually 1): ``IMAGE`` (N, H, W, 3) uint8 RGB, ``CLICKS``
(N, K, 3) int32 rows ``(x, y, positive)``, optional ``PREV`` (N, H, W) uint8 previous probability x 255.
Outputs ``PROB`` (N, H, W) float32 object probability, ``NET_PROB`` the network's own before the
refinement (what confidence is read off). All requests of one dynamic batch, whatever their
image sizes, go through the pipeline together, so their network passes run as one batch.
"""

import json
import os
import site
import sys
from pathlib import Path

# The backend stub's embedded interpreter ignores PYTHONPATH; the local launcher
# (deploy/local/tritonserver.sh) names the virtual environment that holds torch this way.
# NVIDIA's container has torch installed system-wide and leaves it unset. The venv goes first: the
# stub is built against numpy 1.x and must not pick up a numpy 2 from the base installation.
for _dir in filter(None, os.environ.get("TRITON_MODEL_SITE_PACKAGES", "").split(os.pathsep)):
    _before = list(sys.path)
    site.addsitedir(_dir)
    sys.path[:] = [p for p in sys.path if p not in _before] + _before

import numpy as np  # noqa: E402
import torch  # noqa: E402
import triton_python_backend_utils as pb_utils  # noqa: E402


class _Click:
    __slots__ = ("x", "y", "positive")

    def __init__(self, x, y, positive):
        self.x, self.y, self.positive = int(x), int(y), bool(positive)


def _check(image, clicks, prev):
    """None, or what is wrong with one request's arrays (the message names the input)."""
    if image.ndim != 4 or image.shape[3] != 3 or min(image.shape[1:3]) < 1:
        return f"IMAGE must be (N, H, W, 3) with H, W >= 1, got {image.shape}"
    if clicks.ndim != 3 or clicks.shape[0] != image.shape[0] or clicks.shape[2] != 3 or clicks.shape[1] < 1:
        return f"CLICKS must be (N, K, 3) with K >= 1 and N as IMAGE's, got {clicks.shape}"
    height, width = image.shape[1:3]
    xs, ys = clicks[..., 0], clicks[..., 1]
    if (xs < 0).any() or (xs >= width).any() or (ys < 0).any() or (ys >= height).any():
        return f"CLICKS must lie inside the {width}x{height} image"
    if prev is not None and prev.shape != image.shape[:3]:
        return f"PREV must be (N, H, W) as IMAGE, got {prev.shape} for IMAGE {image.shape}"
    return None


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        threads = int(params.get("torch_threads", "0"))
        if threads > 0:
            torch.set_num_threads(threads)
        if args["model_instance_kind"] == "GPU":
            self.device = torch.device(f"cuda:{args['model_instance_device_id']}")
        else:
            self.device = torch.device("cpu")
        path = Path(__file__).resolve().parent / "model.pt"
        self.pipeline = torch.jit.load(str(path), map_location=self.device).eval()
        self.pipeline.focus = params.get("focus", "true").lower() == "true"
        runtime = params.get("network_runtime", "torch").lower()
        if runtime not in ("torch", "onnxruntime"):
            raise ValueError(f"parameter network_runtime must be torch or onnxruntime, got {runtime!r}")
        self.onnx = None
        if runtime == "onnxruntime" and self.device.type != "cpu":
            raise ValueError("network_runtime onnxruntime is for CPU instances (configs/gpu.pbtxt runs torch)")
        if runtime == "onnxruntime":
            # The network passes on ONNX Runtime (1.7x torch's CPU speed for this network), the rest of the
            # pipeline in TorchScript around them. The export writes model.onnx beside model.pt.
            import onnxruntime

            options = onnxruntime.SessionOptions()
            options.intra_op_num_threads = int(params.get("onnx_threads", str(max(threads, 0))))
            options.inter_op_num_threads = 1
            self.onnx = onnxruntime.InferenceSession(str(path.with_suffix(".onnx")), options,
                                                     providers=["CPUExecutionProvider"])
        refine = params.get("refine", "none").lower()
        if refine not in ("none", "grabcut"):
            raise ValueError(f"parameter refine must be none or grabcut, got {refine!r}")
        self.refine = None
        if refine == "grabcut":
            # The project's own module: on sys.path through TRITON_MODEL_SITE_PACKAGES locally, copied
            # into the image's /opt/model-deps by deploy/docker/triton.Dockerfile.
            from services.models import grabcut

            self.refine = grabcut.refine
        self._warm_up()

    def _warm_up(self):
        """TorchScript optimises a graph on its first two runs (about 0.7 s each on this CPU); do
        that at load, not on the first annotator's first clicks."""
        generator = torch.Generator().manual_seed(0)
        image = torch.randint(0, 256, (320, 320, 3), dtype=torch.uint8, generator=generator).to(self.device)
        clicks = torch.tensor([[160, 160, 1], [40, 40, 0]], dtype=torch.int32, device=self.device)
        with torch.inference_mode():
            prev = torch.zeros(0, device=self.device)
            for n in (1, 2, 2):
                prev = self._run([image], [clicks[:n]], [prev])[0]

    def _net(self, batch):
        return torch.from_numpy(self.onnx.run(None, {"INPUT": batch.cpu().numpy()})[0])

    def _run(self, images, clicks, prevs):
        """The pipeline's probabilities, its network passes on ONNX Runtime when that is configured."""
        if self.onnx is None:
            return self.pipeline(images, clicks, prevs)
        windows, inputs = self.pipeline.first_pass_inputs(images, clicks, prevs)
        outputs, ids, focus_windows, focus_inputs = self.pipeline.focus_pass_inputs(
            images, clicks, prevs, windows, inputs, self._net(inputs))
        if not ids:
            return outputs
        return self.pipeline.paste_focus_pass(outputs, ids, focus_windows, self._net(focus_inputs))

    def execute(self, requests):
        responses = [None] * len(requests)
        images, clicks, prevs, owners = [], [], [], []
        for i, request in enumerate(requests):
            image = pb_utils.get_input_tensor_by_name(request, "IMAGE").as_numpy()
            click = pb_utils.get_input_tensor_by_name(request, "CLICKS").as_numpy()
            prev_tensor = pb_utils.get_input_tensor_by_name(request, "PREV")
            prev = None if prev_tensor is None else prev_tensor.as_numpy()
            error = _check(image, click, prev)
            if error:
                responses[i] = pb_utils.InferenceResponse(error=pb_utils.TritonError(error))
                continue
            for n in range(image.shape[0]):
                images.append(torch.from_numpy(np.ascontiguousarray(image[n])).to(self.device))
                clicks.append(torch.from_numpy(np.ascontiguousarray(click[n], dtype=np.int32)).to(self.device))
                prevs.append(torch.zeros(0, device=self.device) if prev is None else
                             torch.from_numpy(prev[n].astype(np.float32) / 255.0).to(self.device))
                owners.append(i)
        if images:
            with torch.inference_mode():
                nets = [p.float().cpu().numpy() for p in self._run(images, clicks, prevs)]
            probs = nets
            if self.refine is not None:
                probs = [self.refine(image.cpu().numpy(), prob, [_Click(*row) for row in click.cpu().tolist()])
                         for image, click, prob in zip(images, clicks, nets)]
            for i in sorted(set(owners)):
                mine = [j for j, owner in enumerate(owners) if owner == i]
                responses[i] = pb_utils.InferenceResponse(output_tensors=[
                    pb_utils.Tensor("PROB", np.stack([probs[j] for j in mine])),
                    pb_utils.Tensor("NET_PROB", np.stack([nets[j] for j in mine]))])
        return responses
