"""The interactive-network job in process: fine-tuning the served click network on a project's masks with
the iterative click simulation, its NoC gate, resume, and the Triton model folder it publishes.

Tiny on purpose (64 px images, 96 px crops, a few dozen iterations) and mostly on ``clickseg``, the small
network trained from scratch (served beside the default, fast to fine-tune): it already finds the synthetic
discs in about one click, so the gate's margins are small but deterministic (seeded). The default base,
``clickseg_lite0`` (a whole per-click pipeline around the pretrained network), is fine-tuned and
re-exported here too, and through the training service in ``test_service.py``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from services.common.storage import make_engine, make_session_factory, migrate
from services.models import click_models
from services.training import interactive_job, interactive_model
from services.training.annotations import REJECTED, AnnotationStore
from services.training.job_config import interactive_config
from services.training.job_context import Context
from services.training.publishing import CLICK_BASE, TritonPublisher, scripted_path
from services.training.registry import PROMOTED, Registry
from services.training.registry import REJECTED as MODEL_REJECTED
from services.training.snapshots import Entry, SnapshotStore, is_heldout
from tests.training.helpers import SCRATCH_BASE, write_project

pytestmark = pytest.mark.unit
P = "proj-clicks"
FAST = {"iterations": 30, "crop_size": 96, "batch_size": 4, "max_steps": 2, "learning_rate": 1e-3,
        "checkpoint_every": 10}


class FakePublisher:
    """Records what would be published (the Triton path is tested in test_service.py)."""

    def __init__(self) -> None:
        self.published: list[int] = []

    def publish(self, mv) -> str:
        self.published.append(mv.version)
        return f"interactive-{mv.project_id}"

    def withdraw(self, project_id, kind) -> None:
        pass


@pytest.fixture
def stores(tmp_path):
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    migrate(url)
    sessions = make_session_factory(make_engine(url))
    annotations = AnnotationStore(sessions)
    return annotations, SnapshotStore(sessions, annotations), Registry(sessions)


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_fine_tune_beats_the_base_at_the_gate_and_shuffled_masks_are_rejected(stores, tmp_path):
    annotations, snapshots, registry = stores
    real = write_project(tmp_path / "images", P, 30, size=64)
    for a in real:
        annotations.record(a)
    snapshot, _ = snapshots.freeze(P, 20)
    publisher = FakePublisher()
    context = Context(snapshots, registry, publisher, tmp_path / "var", click_base=SCRATCH_BASE)
    first = interactive_job.run(context, "op-real", P, snapshot.snapshot_id, FAST)
    assert first["state"] == "PROMOTED", first
    gate = first["gate"]
    assert gate["metric"] == "noc85+noc90" and gate["current_version"] == 0 and not gate["higher_is_better"]
    assert gate["candidate"] == first["figures"]["noc85"] + first["figures"]["noc90"] < gate["current"]
    assert first["figures"]["heldout_objects"] == snapshot.heldout_image_count
    assert publisher.published == [1]
    v1 = registry.get(P, "interactive", 1)
    assert v1.state == PROMOTED and v1.parent_version == 0 and "MODEL_KIND_INTERACTIVE" in v1.command
    assert v1.config["iterations"] == 30 and v1.config["base"] == "clickseg" and v1.config["crop_size"] == 96
    net, config = click_models.load(v1.artifact)  # click training's checkpoint format
    assert config["in_channels"] == 7 and scripted_path(Path(v1.artifact)).is_file()
    base, _ = interactive_model.load_base(SCRATCH_BASE)
    assert any(not torch.equal(a, b) for a, b in zip(net.state_dict().values(), base.state_dict().values()))
    again = interactive_job.run(context, "op-real", P, snapshot.snapshot_id, FAST)  # redelivered: decided already
    assert (again["state"], again["model_version"]) == ("PROMOTED", 1) and publisher.published == [1]

    # Training images re-annotated with other images' masks; the held-out images keep their true masks, so
    # both versions are judged on the same truth. The candidate (fine-tuned from version 1) is worse.
    for a in write_project(tmp_path / "images", P, 30, shuffled=True, id_prefix="z", size=64):
        annotations.record(a)
        heldout = is_heldout(P, a.image_id, 20)
        annotations.set_state(P, a.annotation_id if heldout else "a" + a.annotation_id[1:], REJECTED)
    bad_snapshot, _ = snapshots.freeze(P, 20)
    second = interactive_job.run(context, "op-shuffled", P, bad_snapshot.snapshot_id, FAST)
    assert second["state"] == "REJECTED", second
    assert second["gate"]["current_version"] == 1 and second["gate"]["candidate"] > second["gate"]["current"]
    assert "does not beat version 1" in second["gate"]["reason"]
    assert registry.get(P, "interactive", 2).state == MODEL_REJECTED and registry.get(P, "interactive", 2).parent_version == 1
    assert publisher.published == [1] and registry.current(P, "interactive").version == 1


def test_a_killed_fine_tune_resumes_from_its_checkpoint_to_the_same_weights(tmp_path):
    items = write_project(tmp_path / "images", P, 6, size=48)
    entries = [Entry(a.annotation_id, a.image_id, a.uri, a.width, a.height, a.label, a.mask_counts, False)
               for a in items]
    samples, unreadable = interactive_model.build_samples(entries, False)
    assert len(samples) == 6 and not unreadable and samples[0].annotation.max() == 255
    config = interactive_config({"iterations": 6, "crop_size": 48, "batch_size": 2, "max_steps": 1,
                                 "checkpoint_every": 3})
    base_config = interactive_model.load_base(SCRATCH_BASE)[1]

    def dies_at(iteration):
        def progress(done, total, message):
            if done == iteration:
                raise SystemExit("worker killed")
        return progress

    checkpoint = tmp_path / "job" / "checkpoint.pt"
    with pytest.raises(SystemExit):
        interactive_model.fine_tune(interactive_model.load_base(SCRATCH_BASE)[0], base_config, samples, config,
                                    checkpoint, dies_at(4))
    assert torch.load(checkpoint, weights_only=False)["iteration"] == 3
    seen = []
    resumed = interactive_model.fine_tune(interactive_model.load_base(SCRATCH_BASE)[0], base_config, samples, config,
                                          checkpoint, lambda done, total, message: seen.append(done))
    assert seen[0] == 4  # iterations 1-3 came from the checkpoint
    straight = interactive_model.fine_tune(interactive_model.load_base(SCRATCH_BASE)[0], base_config, samples,
                                           config)
    for a, b in zip(resumed.state_dict().values(), straight.state_dict().values()):
        torch.testing.assert_close(a, b)


def test_the_published_folder_is_the_base_model_renamed_serving_one_version(tmp_path):
    weights = tmp_path / "models" / "1" / "weights.pt"
    weights.parent.mkdir(parents=True)
    scripted_path(weights).write_bytes((SCRATCH_BASE / "1" / "model.pt").read_bytes())

    class Version:
        project_id, kind, version, artifact, class_names = "Proj One", "interactive", 3, str(weights), []

    publisher = TritonPublisher(tmp_path / "repo", "", click_base=SCRATCH_BASE)
    name = publisher.publish(Version())
    assert name.startswith("interactive-proj-one-")
    folder = tmp_path / "repo" / name
    config = (folder / "config.pbtxt").read_text()
    assert f'name: "{name}"' in config and 'name: "clickseg"' not in config
    assert "version_policy: { specific: { versions: [ 3 ] } }" in config
    assert 'key: "input_size" value: { string_value: "192" }' in config  # the base's click encoding
    assert (folder / "configs" / "gpu.pbtxt").read_text().count(f'name: "{name}"') == 1
    assert (folder / "3" / "model.py").read_text() == (SCRATCH_BASE / "1" / "model.py").read_text()
    assert (folder / "3" / "model.pt").read_bytes() == (SCRATCH_BASE / "1" / "model.pt").read_bytes()
    publisher.withdraw("Proj One", "interactive")
    assert not folder.exists()


def test_the_default_pipeline_base_fine_tunes_and_is_published_as_a_pipeline(tmp_path):
    """``clickseg_lite0``: the network comes out of the shipped pipeline TorchScript whole (re-exported, it
    answers exactly as shipped), fine-tuning on the project's masks changes its answer, and the published
    version is a pipeline TorchScript in a folder with the base's pipeline config."""
    import numpy as np

    from services.models import click_pipeline
    from services.models.clicker import Clicker

    assert CLICK_BASE.name == "clickseg_lite0"
    net, config = interactive_model.load_base(CLICK_BASE)
    assert config["arch"] == "effnet_lite0"
    items = write_project(tmp_path / "images", P, 6, size=64)
    entries = [Entry(a.annotation_id, a.image_id, a.uri, a.width, a.height, a.label, a.mask_counts, False)
               for a in items]
    samples, _ = interactive_model.build_samples(entries, False)
    sample = samples[0]
    clicker = Clicker(sample.annotation)
    clicker.next_click(None)
    shipped = torch.jit.load(str(CLICK_BASE / "1" / "model.pt"))
    expected = click_pipeline.segmenter(shipped, sample.image)(clicker.clicks, None)

    weights = tmp_path / "v1" / "weights.pt"
    interactive_model.save(net, config, weights, scripted_path(weights))
    again = click_pipeline.segmenter(torch.jit.load(str(scripted_path(weights))), sample.image)
    np.testing.assert_allclose(again(clicker.clicks, None), expected, atol=1e-5)

    tuned = interactive_model.fine_tune(net, config, samples, interactive_config(
        {"iterations": 4, "crop_size": 64, "batch_size": 2, "max_steps": 1, "learning_rate": 1e-3}))
    interactive_model.save(tuned, config, weights, scripted_path(weights))
    after = click_pipeline.segmenter(torch.jit.load(str(scripted_path(weights))), sample.image)(clicker.clicks, None)
    assert np.abs(after - expected).max() > 0.01
    assert click_models.load(weights)[1]["arch"] == "effnet_lite0"

    class Version:
        project_id, kind, version, artifact, class_names = P, "interactive", 1, str(weights), []

    folder = TritonPublisher(tmp_path / "repo", "").write(Version())
    config_text = (folder / "config.pbtxt").read_text()
    assert 'name: "IMAGE"' in config_text and 'key: "interface" value: { string_value: "pipeline" }' in config_text

    def parameters(text):
        return [line for line in text.splitlines() if line.startswith("parameters:")]

    assert parameters(config_text) == parameters((CLICK_BASE / "config.pbtxt").read_text())  # refine, focus, ...
    assert (folder / "1" / "model.py").read_text() == (CLICK_BASE / "1" / "model.py").read_text()
    assert (folder / "1" / "model.onnx").stat().st_size > 1_000_000  # the CPU config runs the network from it


def test_fine_tuning_defaults_follow_the_base_network_recipe():
    """The crop defaults to the size the base was trained and is served at (each base's card), and a
    pretrained encoder learns at the card's ``encoder_lr_mult`` times the job's rate; the scratch network,
    which has no encoder apart, learns at one rate."""
    config = interactive_config({})
    assert config.crop_size == 0
    lite0, lite0_config = interactive_model.load_base(CLICK_BASE)
    scratch, scratch_config = interactive_model.load_base(SCRATCH_BASE)
    assert interactive_model.training_cfg(lite0_config, config)["size"] == lite0_config["size"] == 256
    assert interactive_model.training_cfg(scratch_config, config)["size"] == scratch_config["size"] == 192
    assert interactive_model.training_cfg(lite0_config, interactive_config({"crop_size": 96}))["size"] == 96
    assert interactive_model.resolved(config, lite0_config).crop_size == 256  # what the registry records

    groups = interactive_model.parameter_groups(lite0, lite0_config, 2e-4)
    assert [g["lr"] for g in groups] == pytest.approx([2e-4 * lite0_config["encoder_lr_mult"], 2e-4])
    assert lite0_config["encoder_lr_mult"] < 1
    assert sum(p.numel() for g in groups for p in g["params"]) == sum(p.numel() for p in lite0.parameters())
    assert [g["lr"] for g in interactive_model.parameter_groups(scratch, scratch_config, 2e-4)] == [2e-4]
