"""Publishing model versions to Triton without a restart.

A promoted version is written into the Triton model repository the training worker shares with Triton
(``Settings.resolved_model_repository``: a shared volume in Kubernetes) as a new numbered version of the
project's model (``<kind>-<project slug>-<hash>``), the model's ``config.pbtxt`` is set to serve exactly
that version, and Triton is asked to load it through its model repository API (explicit model control:
Triton runs with ``--model-control-mode=explicit``). Triton keeps serving the loaded version until the
reload is ready, then swaps. Rolling back re-points the config at the earlier version and loads again;
rolling back the only version unloads the model and removes its folder (the project is back on the base
model). The weights stay in the registry's artifact folder, so any version can be published again.

A quality model is not served by Triton (the quality service runs it in process): publishing one sends its
weights to the quality service as the Celery task ``quality.project_model_published`` (withdrawing: version
0), through the ``send`` callable the server and the worker give (this module stays free of Celery).

A task model is the selection example's model (``services/models/task_repository.py``); an interactive
network is shaped like the served base click network it was fine-tuned from (``click_repository.py``:
the base's config and ``model.py``, so clients encode clicks for it as for the base).
"""

from __future__ import annotations

import base64
import shutil
import time
from collections.abc import Callable
from pathlib import Path

from services.common.errors import FailedPrecondition, Unavailable
from services.common.published_models import triton_model_name
from services.common.settings import Settings, served_model_dir
from services.models import click_repository
from services.models.task_repository import write_config, write_version
from services.training.registry import ModelVersion

TRITON_KINDS = ("task", "interactive")
QUALITY_MODEL_PUBLISHED = "quality.project_model_published"  # args (project, version, weights b64, figures, ns)
Send = Callable[[str, str, list], None]  # (task name, queue, args)
# The default served click network (``Settings.triton_model_name``'s default)
CLICK_BASE = served_model_dir()


def click_base(settings: Settings) -> Path:
    """The served click network's model folder, which interactive jobs fine-tune and publish beside."""
    return Path(settings.training_interactive_base) if settings.training_interactive_base else \
        served_model_dir(settings.triton_model_name)


def scripted_path(weights: Path) -> Path:
    """The TorchScript file kept beside a version's weights (what Triton runs)."""
    return weights.with_name("model.pt")


class TritonPublisher:
    """``publish(version)`` / ``withdraw(project, kind)``; ``url`` empty: write the repository only."""

    def __init__(self, repository: Path, url: str, timeout_s: float = 120.0, click_base: Path = CLICK_BASE,
                 send: Send | None = None) -> None:
        self.repository, self.url, self.timeout_s = Path(repository), url, timeout_s
        self.click_base, self.send = Path(click_base), send

    def _client(self):
        import tritonclient.grpc as triton  # noqa: PLC0415 - only where a model is published

        return triton.InferenceServerClient(self.url)

    def _call(self, what: str, call) -> None:
        from tritonclient.utils import InferenceServerException  # noqa: PLC0415

        try:
            call(self._client())
        except InferenceServerException as exc:
            raise Unavailable(f"Triton at {self.url} could not {what}: {exc.message()}") from None

    def write(self, mv: ModelVersion) -> Path:
        """The version's folder in the repository (written once) and the config serving it."""
        model_dir = self.repository / triton_model_name(mv.project_id, mv.kind)
        fresh = not (model_dir / str(mv.version) / "model.pt").is_file()
        if mv.kind == "task":
            if fresh:
                write_version(model_dir, mv.version, scripted_path(Path(mv.artifact)))
            write_config(model_dir, len(mv.class_names), [mv.version])
        elif mv.kind == "interactive":
            if fresh:
                click_repository.write_version(model_dir, mv.version, scripted_path(Path(mv.artifact)),
                                               self.click_base)
            click_repository.write_config(model_dir, self.click_base, [mv.version])
        else:
            raise FailedPrecondition(f"{mv.kind} models are not served by Triton", field="kind")
        return model_dir

    def _send_quality(self, project_id: str, version: int, weights: bytes, figures: dict) -> None:
        if self.send is not None:
            self.send(QUALITY_MODEL_PUBLISHED, "quality", [project_id, version, base64.b64encode(weights).decode(),
                                                           figures, time.time_ns()])

    def publish(self, mv: ModelVersion) -> str:
        """Writes ``mv`` and has Triton serve it; the model's name. UNAVAILABLE when Triton refuses. A quality
        model goes to the quality service in a message: no Triton model, no name."""
        if mv.kind == "quality":
            self._send_quality(mv.project_id, mv.version, Path(mv.artifact).read_bytes(), dict(mv.figures))
            return ""
        if mv.kind not in TRITON_KINDS:
            return ""
        name = self.write(mv).name
        if self.url:
            self._call(f"load {name} version {mv.version}",
                       lambda client: client.load_model(name, client_timeout=self.timeout_s))
            ready = []
            self._call(f"report {name} version {mv.version} ready",
                       lambda client: ready.append(client.is_model_ready(name, str(mv.version))))
            if not ready[0]:
                raise Unavailable(f"Triton at {self.url} loaded {name} but version {mv.version} is not ready")
        return name

    def withdraw(self, project_id: str, kind: str) -> None:
        """Triton stops serving the project's model of ``kind``; its folder leaves the repository (a quality
        model: the quality service goes back to its shipped model)."""
        if kind == "quality":
            self._send_quality(project_id, 0, b"", {})
            return
        if kind not in TRITON_KINDS:
            return
        name = triton_model_name(project_id, kind)
        if self.url:
            self._call(f"unload {name}", lambda client: client.unload_model(name, client_timeout=self.timeout_s))
        shutil.rmtree(self.repository / name, ignore_errors=True)


def publisher_for(settings: Settings, send: Send | None) -> TritonPublisher:
    """The deployment's publisher (the server's and the worker's alike): Triton when ``training_publish``."""
    return TritonPublisher(settings.resolved_model_repository,
                           settings.triton_grpc_url if settings.training_publish else "",
                           click_base=click_base(settings), send=send)
