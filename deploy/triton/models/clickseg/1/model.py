"""Triton Python-backend model: runs the TorchScript click-segmentation network (``model.pt`` beside
this file) on CPU or GPU, whichever instance kind the model config gives.

Input ``INPUT`` (N, C, H, W) float32, the click encoding made by the segmentation service; output
``PROB`` (N, 1, H, W) float32 object probability. Requests of one dynamic batch that share a shape
run as one forward pass.
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
        self.net = torch.jit.load(str(path), map_location=self.device).eval()
        self.in_channels = int(config["input"][0]["dims"][0])

    def execute(self, requests):
        arrays = [pb_utils.get_input_tensor_by_name(r, "INPUT").as_numpy() for r in requests]
        responses = [None] * len(requests)
        by_shape = {}
        for i, array in enumerate(arrays):
            if array.ndim != 4 or array.shape[1] != self.in_channels or min(array.shape[2:]) < 16:
                responses[i] = pb_utils.InferenceResponse(error=pb_utils.TritonError(
                    f"INPUT must be (N, {self.in_channels}, H, W) with H, W >= 16, got {array.shape}"))
                continue
            by_shape.setdefault(array.shape[1:], []).append(i)
        for indices in by_shape.values():
            batch = np.concatenate([arrays[i] for i in indices], axis=0)
            with torch.inference_mode():
                x = torch.from_numpy(batch).to(self.device)
                prob = torch.sigmoid(self.net(x)).float().cpu().numpy()
            start = 0
            for i in indices:
                n = arrays[i].shape[0]
                out = pb_utils.Tensor("PROB", np.ascontiguousarray(prob[start:start + n]))
                responses[i] = pb_utils.InferenceResponse(output_tensors=[out])
                start += n
        return responses
