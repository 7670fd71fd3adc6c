"""Triton Python-backend task model for the selection service: runs the TorchScript network
``model.pt`` beside this file.

Input ``IMAGE`` [N, 3, H, W] float32 in [0, 1], optional ``DROPOUT`` [N] bool; outputs
``PROBABILITIES`` [N, K, H, W] (softmax of the network's logits) and ``EMBEDDING`` [N, D]. The network
returns ``(logits, embedding)``; images with DROPOUT set run with its dropout layers in training mode
(MC dropout), everything else in eval mode.
"""

import json
import os
import site
import sys
from pathlib import Path

# As in deploy/triton/models/clickseg: the stub's interpreter ignores PYTHONPATH, so the local
# launcher names the venv holding torch; the venv goes first (the stub is built against numpy 1.x).
for _dir in filter(None, os.environ.get("TRITON_MODEL_SITE_PACKAGES", "").split(os.pathsep)):
    _before = list(sys.path)
    site.addsitedir(_dir)
    sys.path[:] = [p for p in sys.path if p not in _before] + _before

import numpy as np  # noqa: E402
import torch  # noqa: E402
import triton_python_backend_utils as pb_utils  # noqa: E402

DROPOUT_LAYERS = ("Dropout", "Dropout1d", "Dropout2d", "Dropout3d", "AlphaDropout")


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
        # Scripted submodules are not nn.Dropout instances; their original class name tells.
        self.dropout = [m for m in self.net.modules()
                        if getattr(m, "original_name", type(m).__name__) in DROPOUT_LAYERS]

    def _forward(self, x, dropout):
        for module in self.dropout:
            module.train(dropout)
        try:
            with torch.inference_mode():
                logits, embedding = self.net(torch.from_numpy(x).to(self.device))
                probs = torch.softmax(logits.float(), dim=1)
            return probs.cpu().numpy(), embedding.float().cpu().numpy()
        finally:
            for module in self.dropout:
                module.eval()

    def execute(self, requests):
        responses = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "IMAGE").as_numpy()
            flag = pb_utils.get_input_tensor_by_name(request, "DROPOUT")
            flags = np.zeros(len(x), bool) if flag is None else flag.as_numpy().astype(bool).reshape(-1)
            if x.ndim != 4 or x.shape[1] != 3 or min(x.shape) < 1 or min(x.shape[2:]) < 4 or len(flags) != len(x):
                responses.append(pb_utils.InferenceResponse(error=pb_utils.TritonError(
                    f"IMAGE must be (N, 3, H, W) with N >= 1, H, W >= 4 and DROPOUT (N,), "
                    f"got {x.shape} and {flags.shape}")))
                continue
            probs = embedding = None
            for on in (False, True):  # one forward pass per dropout setting present in the request
                rows = np.flatnonzero(flags == on)
                if len(rows) == 0:
                    continue
                p, e = self._forward(np.ascontiguousarray(x[rows]), on)
                if probs is None:
                    probs = np.empty((len(x), *p.shape[1:]), np.float32)
                    embedding = np.empty((len(x), e.shape[1]), np.float32)
                probs[rows], embedding[rows] = p, e
            responses.append(pb_utils.InferenceResponse(output_tensors=[
                pb_utils.Tensor("PROBABILITIES", probs), pb_utils.Tensor("EMBEDDING", embedding)]))
        return responses
