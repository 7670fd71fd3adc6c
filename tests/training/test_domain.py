"""The training wing's domain, in process: snapshots, the task-model job, the gate, the registry, resume."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from services.common import annotation_events
from services.common.errors import FailedPrecondition, InvalidArgument, NotFound
from services.common.masks import encode_rle
from services.common.settings import Settings
from services.common.storage import make_engine, make_session_factory, migrate
from services.training import job_context, task_job, task_model
from services.training.annotations import REJECTED, AnnotationStore
from services.training.promotion import promote, rollback
from services.training.registry import PROMOTED, ROLLED_BACK, Registry
from services.training.registry import REJECTED as MODEL_REJECTED
from services.training.snapshots import Entry, SnapshotStore, is_heldout
from services.training.task_config import TaskConfig, task_config
from tests.training.helpers import event, write_project

pytestmark = pytest.mark.unit
P = "proj-1"
FAST = {"steps": 120, "image_size": 32, "batch_size": 8, "checkpoint_every": 40}


class FakePublisher:
    """Records what would be published (the Triton path is tested in test_service.py)."""

    def __init__(self) -> None:
        self.published: list[int] = []
        self.withdrawn = 0

    def publish(self, mv) -> str:
        self.published.append(mv.version)
        return f"task-{mv.project_id}"

    def withdraw(self, project_id, kind) -> None:
        self.withdrawn += 1


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


def test_a_snapshot_is_stable_same_annotations_same_id_and_split(stores, tmp_path):
    annotations, snapshots, _ = stores
    items = write_project(tmp_path / "images", P, 30)
    for a in reversed(items):  # arrival order does not matter
        assert annotations.record(a)
    assert not annotations.record(replace(items[0], label="dog"))  # a repeated event changes nothing
    first, created = snapshots.freeze(P, 20)
    again, created_again = snapshots.freeze(P, 20)
    assert created and not created_again and again == first
    assert len(first.snapshot_id) == 32 and first.class_names == ["background", "cat", "dog"]
    assert (first.annotation_count, first.image_count) == (30, 30)
    assert first.heldout_image_count == sum(is_heldout(P, a.image_id, 20) for a in items) > 0
    assert first.train_image_count + first.heldout_image_count == 30

    # The same annotations in another store (another deployment, another order): the same id and split.
    url = f"sqlite:///{tmp_path / 'other.sqlite'}"
    migrate(url)
    other_sessions = make_session_factory(make_engine(url))
    other = AnnotationStore(other_sessions)
    for a in items[::2] + items[1::2]:
        other.record(a)
    twin, _ = SnapshotStore(other_sessions, other).freeze(P, 20)
    assert twin.snapshot_id == first.snapshot_id
    split = {e.image_id: e.heldout for e in snapshots.entries(P, first.snapshot_id)}
    assert split == {e.image_id: e.heldout for e in SnapshotStore(other_sessions, other).entries(P, twin.snapshot_id)}

    # A new annotation makes a new snapshot; every image keeps its side of the split.
    more = write_project(tmp_path / "more", P, 32, seed=0, id_prefix="b")[30:]
    for a in more:
        annotations.record(a)
    grown, created = snapshots.freeze(P, 20)
    assert created and grown.snapshot_id != first.snapshot_id and grown.annotation_count == 32
    assert {e.image_id: e.heldout for e in snapshots.entries(P, grown.snapshot_id)
            if e.image_id in split} == split
    # A rejected annotation leaves later snapshots, never the frozen one.
    annotations.set_state(P, "a000", REJECTED)
    fewer, _ = snapshots.freeze(P, 20)
    assert fewer.annotation_count == 31 and snapshots.get(P, first.snapshot_id).annotation_count == 30


def test_projects_sharing_a_split_key_hold_out_the_same_images_and_the_key_is_fixed(stores, tmp_path):
    annotations, snapshots, _ = stores
    items = write_project(tmp_path / "images", "arm-a", 40)
    for project in ("arm-a", "arm-b", "arm-c"):
        for a in items:
            annotations.record(replace(a, project_id=project))
    own_a, _ = snapshots.freeze("arm-a", 20)
    own_b, _ = snapshots.freeze("arm-b", 20)
    shared, _ = snapshots.freeze("arm-c", 20, split_key="arm-a")

    def split(project, snapshot):
        return {e.image_id: e.heldout for e in snapshots.entries(project, snapshot.snapshot_id)}

    assert (own_a.split_key, own_b.split_key, shared.split_key) == ("arm-a", "arm-b", "arm-a")
    assert split("arm-a", own_a) != split("arm-b", own_b)  # by default each project draws its own split
    assert split("arm-c", shared) == split("arm-a", own_a)
    assert own_a.heldout_image_count == sum(is_heldout("arm-a", a.image_id, 20) for a in items) > 0

    # The key is fixed at the first snapshot: another would hold out images the project's models trained on.
    for project, key in (("arm-c", ""), ("arm-a", "arm-c")):
        with pytest.raises(FailedPrecondition) as moved:
            snapshots.freeze(project, 20, split_key=key)
        assert moved.value.field == "project_id" and "split by key" in moved.value.message
    assert snapshots.freeze("arm-c", 20, split_key="arm-a") == (shared, False)
    # The setting refuses a key the snapshot table could not hold.
    for bad in ("", "k" * 129):
        with pytest.raises(ValidationError, match="training_split_keys"):
            Settings(training_split_keys={"arm-a": bad})


def test_the_split_key_migration_keys_earlier_snapshots_by_their_project(tmp_path):
    from alembic import command  # noqa: PLC0415
    from sqlalchemy import text  # noqa: PLC0415

    from services.common.storage import alembic_config  # noqa: PLC0415

    url = f"sqlite:///{tmp_path / 'old.sqlite'}"
    migrate(url, "0011_training_reviews")
    with make_engine(url).begin() as db:
        db.execute(text("INSERT INTO training_snapshots (project_id, snapshot_id, annotation_count, image_count, "
                        "train_image_count, heldout_image_count, heldout_percent, class_names, created_at) "
                        "VALUES ('old', 'abc', 1, 1, 1, 0, 20, '[\"background\"]', '2026-01-01 00:00:00')"))
    migrate(url)
    sessions = make_session_factory(make_engine(url))
    assert SnapshotStore(sessions, AnnotationStore(sessions)).get("old", "abc").split_key == "old"
    command.downgrade(alembic_config(url), "0011_training_reviews")


def test_snapshot_errors_name_the_field(stores, tmp_path):
    annotations, snapshots, _ = stores
    with pytest.raises(NotFound) as unknown:
        snapshots.freeze("nobody", 20)
    assert unknown.value.field == "project_id"
    pseudo = [replace(a, pseudo_label=True) for a in write_project(tmp_path / "p", "pseudo-only", 3)]
    for a in pseudo:
        annotations.record(a)
    with pytest.raises(FailedPrecondition) as empty:
        snapshots.freeze("pseudo-only", 20)
    assert empty.value.field == "project_id" and "empty" in empty.value.message
    with pytest.raises(NotFound) as missing:
        snapshots.get("pseudo-only", "0" * 32)
    assert missing.value.field == "snapshot_id"


def test_the_event_codec_round_trips_and_refuses_bad_events(tmp_path):
    a = write_project(tmp_path, P, 1)[0]
    message = event(a)
    payload = annotation_events.encode(message)
    assert payload["annotation_id"] == "a000" and payload["clicks"][0]["t_ms"] == 500
    assert annotation_events.decode(payload) == message
    cases = {"label": {**payload, "label": ""}, "mask.size": {**payload, "mask": {**payload["mask"], "size": [3, 3]}},
             "clicks[0]": {**payload, "clicks": [{"x": 999, "y": 1}]}, "annotation_id": {**payload, "annotation_id": ""},
             "payload": {**payload, "no_such_field": 1}}
    for field, bad in cases.items():
        with pytest.raises(InvalidArgument) as refused:
            annotation_events.decode(bad)
        assert refused.value.field == field, (field, refused.value)


def test_task_config_defaults_and_ranges():
    assert task_config({}) == TaskConfig()
    assert task_config({"steps": 10, "checkpoint_every": 50}).checkpoint_every == 10
    for field, value in (("image_size", 8), ("batch_size", 1000), ("learning_rate", 2.0), ("width", 1)):
        with pytest.raises(InvalidArgument) as refused:
            task_config({field: value})
        assert refused.value.field == f"task.{field}"


def _job(stores, tmp_path, publisher, op_id: str, snapshot_id: str, **config):
    _, snapshots, registry = stores
    context = job_context.Context(snapshots, registry, publisher, tmp_path / "var")
    return task_job.run(context, op_id, P, snapshot_id, {**FAST, **config})


def test_gate_promotes_a_real_model_and_rejects_one_trained_on_shuffled_masks(stores, tmp_path):
    annotations, snapshots, registry = stores
    real = write_project(tmp_path / "images", P, 50)
    for a in real:
        annotations.record(a)
    snapshot, _ = snapshots.freeze(P, 20)
    publisher = FakePublisher()
    first = _job(stores, tmp_path, publisher, "op-real", snapshot.snapshot_id)
    assert first["state"] == "PROMOTED", first
    assert first["gate"]["current_version"] == 0 and first["figures"]["miou"] > first["gate"]["current"] + 0.2
    assert first["figures"]["miou"] > 0.75 and publisher.published == [1]
    v1 = registry.get(P, "task", 1)
    assert v1.snapshot_id == snapshot.snapshot_id and v1.parent_version == 0 and "StartTraining" in v1.command
    assert v1.config["steps"] == FAST["steps"] and registry.current(P, "task").version == 1

    # The same images re-annotated, each with another image's mask (labels that are noise); the held-out
    # images keep their true masks, so both versions are judged on the same truth.
    for a in write_project(tmp_path / "images", P, 50, shuffled=True, id_prefix="z"):
        annotations.record(a)
        heldout = is_heldout(P, a.image_id, 20)
        annotations.set_state(P, a.annotation_id if heldout else "a" + a.annotation_id[1:], REJECTED)
    bad_snapshot, _ = snapshots.freeze(P, 20)
    second = _job(stores, tmp_path, publisher, "op-shuffled", bad_snapshot.snapshot_id)
    assert second["state"] == "REJECTED", second
    assert second["gate"]["current_version"] == 1 and second["figures"]["miou"] < second["gate"]["current"]
    assert "does not beat version 1" in second["gate"]["reason"]
    assert publisher.published == [1] and registry.current(P, "task").version == 1
    assert registry.get(P, "task", 2).parent_version == 1


def test_a_redelivered_job_resumes_and_never_promotes_twice(stores, tmp_path):
    annotations, snapshots, registry = stores
    for a in write_project(tmp_path / "images", P, 30):
        annotations.record(a)
    snapshot, _ = snapshots.freeze(P, 20)
    publisher = FakePublisher()
    context = job_context.Context(snapshots, registry, publisher, tmp_path / "var")

    def dies_at_step(step):
        def progress(done, total, message):
            if message.startswith(f"step {step}/"):
                raise SystemExit("worker killed")
        return progress

    config = {**FAST, "steps": 60, "checkpoint_every": 20}
    with pytest.raises(SystemExit):
        task_job.run(context, "op-1", P, snapshot.snapshot_id, config, dies_at_step(45))
    checkpoint = job_context.checkpoint_path(tmp_path / "var", "op-1")
    assert torch.load(checkpoint, weights_only=True)["step"] == 40 and registry.by_operation("op-1") is None
    steps_seen = []
    result = task_job.run(context, "op-1", P, snapshot.snapshot_id, config,
                          lambda done, total, message: steps_seen.append(message))
    assert next(m for m in steps_seen if m.startswith("step ")).startswith("step 41/60")  # resumed, not restarted
    assert result["state"] == "PROMOTED" and publisher.published == [1] and not checkpoint.exists()

    # Uninterrupted, the same configuration ends with the same weights.
    fresh = f"sqlite:///{tmp_path / 'fresh.sqlite'}"
    migrate(fresh)
    uninterrupted = job_context.Context(snapshots, Registry(make_session_factory(make_engine(fresh))), FakePublisher(),
                                     tmp_path / "var2")
    task_job.run(uninterrupted, "op-2", P, snapshot.snapshot_id, config)
    resumed = torch.load(registry.get(P, "task", 1).artifact, weights_only=True)
    straight = torch.load(uninterrupted.registry.get(P, "task", 1).artifact, weights_only=True)
    for name in resumed:
        torch.testing.assert_close(resumed[name], straight[name], rtol=1e-4, atol=1e-5)

    # Redelivered once more after it finished (the worker died before the ack): nothing happens again.
    again = task_job.run(context, "op-1", P, snapshot.snapshot_id, config)
    assert again["state"] == "PROMOTED" and again["model_version"] == 1 and publisher.published == [1]
    assert len(registry.list(P, "task", 0, 10)[0]) == 1


def test_promote_and_rollback_rules(stores, tmp_path):
    annotations, snapshots, registry = stores
    for a in write_project(tmp_path / "images", P, 30):
        annotations.record(a)
    snapshot, _ = snapshots.freeze(P, 20)
    publisher = FakePublisher()
    assert _job(stores, tmp_path, publisher, "op-1", snapshot.snapshot_id)["state"] == "PROMOTED"
    # A much weaker second model (2 steps) is rejected at the gate ...
    assert _job(stores, tmp_path, publisher, "op-2", snapshot.snapshot_id, steps=2)["state"] == "REJECTED"
    v2 = registry.get(P, "task", 2)
    assert v2.state == MODEL_REJECTED
    # ... and promoted only with force and a reason, which the gate record keeps.
    with pytest.raises(FailedPrecondition) as refused:
        promote(registry, publisher, v2)
    assert refused.value.field == "force"
    with pytest.raises(InvalidArgument) as no_reason:
        promote(registry, publisher, v2, force=True)
    assert no_reason.value.field == "reason"
    forced = promote(registry, publisher, v2, force=True, reason="A/B test")
    assert forced.state == PROMOTED and forced.gate["forced"] and forced.gate["forced_over_version"] == 1
    assert registry.current(P, "task").version == 2 and publisher.published == [1, 2]
    with pytest.raises(FailedPrecondition) as current:
        promote(registry, publisher, registry.get(P, "task", 2))
    assert current.value.field == "version"

    rolled, now = rollback(registry, publisher, P, "task", "worse in review")
    assert rolled.version == 2 and rolled.state == ROLLED_BACK and now.version == 1
    assert publisher.published == [1, 2, 1] and registry.current(P, "task").version == 1
    rolled, now = rollback(registry, publisher, P, "task")
    assert rolled.version == 1 and now is None and publisher.withdrawn == 1
    assert registry.current(P, "task") is None
    with pytest.raises(FailedPrecondition) as base:
        rollback(registry, publisher, P, "task")
    assert base.value.field == "kind"


def test_job_refuses_a_snapshot_without_held_out_or_readable_images(stores, tmp_path):
    annotations, snapshots, registry = stores
    items = write_project(tmp_path / "images", "tiny", 30)
    train_only = [a for a in items if not is_heldout("tiny", a.image_id, 20)][:3]
    for a in train_only:
        annotations.record(a)
    snapshot, _ = snapshots.freeze("tiny", 20)
    assert snapshot.heldout_image_count == 0
    context = job_context.Context(snapshots, registry, FakePublisher(), tmp_path / "var")
    with pytest.raises(FailedPrecondition) as refused:
        task_job.run(context, "op", "tiny", snapshot.snapshot_id, FAST)
    assert refused.value.field == "snapshot_id" and "held-out" in refused.value.message

    heldout = [a for a in items if is_heldout("tiny", a.image_id, 20)][:1]
    for a in heldout:
        annotations.record(replace(a, uri="file:///no/such/image.png"))
    snapshot, _ = snapshots.freeze("tiny", 20)
    with pytest.raises(FailedPrecondition) as unreadable:
        task_job.run(context, "op", "tiny", snapshot.snapshot_id, FAST)
    assert "could be read" in unreadable.value.message


def test_dataset_paints_annotations_in_submit_order(tmp_path):
    items = write_project(tmp_path, P, 2)
    counts = encode_rle(np.ones((40, 40), bool))[1]
    a = items[0]
    entries = [Entry("x1", a.image_id, a.uri, 40, 40, "dog", counts, False),
               Entry(a.annotation_id, a.image_id, a.uri, 40, 40, "cat", a.mask_counts, False)]
    data = task_model.build_dataset(entries, ["background", "cat", "dog"], 40, False)
    assert set(np.unique(data.targets[0])) == {1, 2}  # the disc (cat, painted last) over the whole-image dog
