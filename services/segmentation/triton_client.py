"""The segmentation network as Triton serves it: a ``Network`` callable over tritonclient gRPC.

Failures become domain errors: Triton unreachable, not ready or past the deadline -> Unavailable
(the caller's deadline bounds every call). The gRPC channel reconnects by itself with a short
backoff, so the service recovers without a restart when Triton comes back.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np
import tritonclient.grpc as triton
from tritonclient.utils import InferenceServerException

from services.common.clicks import Click
from services.common.errors import DomainError, Unavailable
from services.common.request_context import time_remaining
from services.models.click_predictor import EncodingConfig

# A restarted Triton is found within about a second, not after gRPC's default backoff of minutes.
CHANNEL_ARGS = [
    ("grpc.initial_reconnect_backoff_ms", 200),
    ("grpc.min_reconnect_backoff_ms", 200),
    ("grpc.max_reconnect_backoff_ms", 1000),
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
]
UNAVAILABLE_STATUSES = ("StatusCode.UNAVAILABLE", "StatusCode.DEADLINE_EXCEEDED", "StatusCode.CANCELLED")


def _unavailable(exc: InferenceServerException) -> bool:
    status = str(exc.status() or "")
    message = str(exc.message() or "").lower()
    # "has no available versions": the model is loading (Triton starting) or unloading (stopping), a
    # transient state that a retry outlives, not a refusal (found by tests/chaos/test_triton_outage.py)
    return status in UNAVAILABLE_STATUSES or "unavailable" in message or "not ready" in message or (
        "deadline" in message
    ) or "no available versions" in message


class TritonNetwork:
    """Calls the model with the remaining request deadline; thread-safe (one channel, many calls)."""

    def __init__(self, url: str, model: str, version: str = "", default_timeout_s: float = 10.0) -> None:
        self.url, self.model, self.version = url, model, version
        self.default_timeout_s = default_timeout_s
        self.client = triton.InferenceServerClient(url, channel_args=CHANNEL_ARGS)
        self._encoding: EncodingConfig | None = None
        self._lock = threading.Lock()

    def _timeout(self) -> float:
        return max(0.05, time_remaining(self.default_timeout_s) - 0.05)

    def _error(self, exc: InferenceServerException, what: str) -> Exception:
        if _unavailable(exc):
            return Unavailable(f"Triton at {self.url} cannot {what}: {exc.message()}")
        return DomainError(f"Triton refused to {what}: {exc.message()}")

    def encoding(self) -> EncodingConfig:
        """The click encoding the deployed model expects, read once from its config's parameters."""
        with self._lock:
            if self._encoding is None:
                try:
                    config = self.client.get_model_config(
                        self.model, self.version, as_json=True, client_timeout=self._timeout()
                    )["config"]
                except InferenceServerException as exc:
                    raise self._error(exc, f"describe model {self.model!r}") from None
                params = {k: v["string_value"] for k, v in config.get("parameters", {}).items()}
                outputs = {o["name"] for o in config.get("output", [])}
                self._encoding = EncodingConfig(
                    size=int(params.get("input_size", 192)),
                    radius=float(params.get("click_radius", 5)),
                    with_prior=params.get("colour_prior", "true").lower() == "true",
                    pipeline=params.get("interface", "encoded") == "pipeline",
                    network_output="NET_PROB" in outputs,
                )
            return self._encoding

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        tensor = triton.InferInput("INPUT", list(batch.shape), "FP32")
        tensor.set_data_from_numpy(batch)
        try:
            result = self.client.infer(
                self.model, [tensor], model_version=self.version,
                outputs=[triton.InferRequestedOutput("PROB")], client_timeout=self._timeout(),
            )
        except InferenceServerException as exc:
            raise self._error(exc, "run the model") from None
        return result.as_numpy("PROB")

    def segment(self, image: np.ndarray, clicks: Sequence[Click],
                prev: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """A pipeline model's probability (H, W) for the image, its clicks and the previous map, and the
        network's own before the model's refinement (``NET_PROB``; the same map when the model has none).

        The previous map travels as uint8 (probability x 255): what the session store keeps anyway,
        a quarter of the bytes of float32.
        """
        image = np.ascontiguousarray(image, dtype=np.uint8)[None]
        rows = np.array([[[c.x, c.y, int(c.positive)] for c in clicks]], dtype=np.int32).reshape(1, -1, 3)
        inputs = [triton.InferInput("IMAGE", list(image.shape), "UINT8"),
                  triton.InferInput("CLICKS", list(rows.shape), "INT32")]
        inputs[0].set_data_from_numpy(image)
        inputs[1].set_data_from_numpy(rows)
        if prev is not None:
            prev_u8 = np.clip(np.rint(np.asarray(prev, np.float32) * 255), 0, 255).astype(np.uint8)[None]
            inputs.append(triton.InferInput("PREV", list(prev_u8.shape), "UINT8"))
            inputs[2].set_data_from_numpy(prev_u8)
        names = ["PROB", "NET_PROB"] if self.encoding().network_output else ["PROB"]
        try:
            result = self.client.infer(
                self.model, inputs, model_version=self.version,
                outputs=[triton.InferRequestedOutput(name) for name in names], client_timeout=self._timeout(),
            )
        except InferenceServerException as exc:
            raise self._error(exc, "run the model") from None
        prob = result.as_numpy("PROB")[0]
        return prob, result.as_numpy(names[-1])[0]

    def status(self) -> dict:
        """What GetModelInfo reports; never raises (ready = false and the error instead)."""
        status = {"url": self.url, "server_live": False, "server_ready": False, "model_ready": False,
                  "server_version": "", "ready_versions": [], "error": ""}
        timeout = min(2.0, self._timeout())
        try:
            status["server_live"] = self.client.is_server_live(client_timeout=timeout)
            status["server_ready"] = self.client.is_server_ready(client_timeout=timeout)
            status["server_version"] = self.client.get_server_metadata(
                as_json=True, client_timeout=timeout).get("version", "")
            status["model_ready"] = self.client.is_model_ready(
                self.model, self.version, client_timeout=timeout)
            index = self.client.get_model_repository_index(as_json=True, client_timeout=timeout)
            status["ready_versions"] = sorted(
                m.get("version", "") for m in index.get("models", [])
                if m.get("name") == self.model and m.get("state") == "READY"
            )
        except InferenceServerException as exc:
            status["error"] = str(exc.message())
        return status

    def close(self) -> None:
        self.client.close()
