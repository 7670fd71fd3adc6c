"""Triton Python-backend model that runs ``model.onnx`` beside it with onnxruntime (CPU).

Copied as ``1/model.py`` into every folder that ``services/segmentation/export_foundation.py`` writes (the SAM /
SAM 2 image encoder and prompt decoder). On GPU the same folder is served by NVIDIA's native onnxruntime
backend (``configs/gpu.pbtxt``) and this file is not used. The inputs and outputs are the graph's own, named
in ``config.pbtxt``; requests of one dynamic batch whose shapes agree (the decoder's point count varies by
session) run as one batch.
"""

import json
import os
import site
import sys
from pathlib import Path

# The stub's embedded interpreter ignores PYTHONPATH; the local launcher names .venv-triton (onnxruntime).
for _dir in filter(None, os.environ.get("TRITON_MODEL_SITE_PACKAGES", "").split(os.pathsep)):
    _before = list(sys.path)
    site.addsitedir(_dir)
    sys.path[:] = [p for p in sys.path if p not in _before] + _before

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        config = json.loads(args["model_config"])
        params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
        options = ort.SessionOptions()
        # Shared CPU cores: a few threads per instance (instance_group count scales further).
        options.intra_op_num_threads = int(params.get("onnx_threads", "1"))
        options.inter_op_num_threads = 1
        path = Path(__file__).resolve().parent / "model.onnx"
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.inputs = [i["name"] for i in config["input"]]
        self.outputs = [o["name"] for o in config["output"]]

    def execute(self, requests):
        arrays = []
        for request in requests:
            arrays.append({name: pb_utils.get_input_tensor_by_name(request, name).as_numpy() for name in self.inputs})
        responses = [None] * len(requests)
        groups: dict = {}
        for i, inputs in enumerate(arrays):
            key = tuple((name, inputs[name].shape[1:], str(inputs[name].dtype)) for name in self.inputs)
            groups.setdefault(key, []).append(i)
        for members in groups.values():
            feed = {name: np.concatenate([arrays[i][name] for i in members]) for name in self.inputs}
            try:
                results = self.session.run(self.outputs, feed)
            except Exception as exc:  # noqa: BLE001 - the caller gets the graph's message, not a dead model
                for i in members:
                    responses[i] = pb_utils.InferenceResponse(error=pb_utils.TritonError(str(exc)))
                continue
            start = 0
            for i in members:
                n = arrays[i][self.inputs[0]].shape[0]
                tensors = [pb_utils.Tensor(name, np.ascontiguousarray(r[start:start + n]))
                           for name, r in zip(self.outputs, results)]
                responses[i] = pb_utils.InferenceResponse(output_tensors=tensors)
                start += n
        return responses
