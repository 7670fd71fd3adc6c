"""The quality-model job in process: reviewed sessions (``training.session_reviewed`` messages) -> an
ensemble of click-sequence GRUs -> ROC-AUC gate on the held-out reviewed sessions.

Synthetic sessions whose true IoU follows one session feature (and noise): a model fitted on them flags the
bad ones; one fitted on shuffled IoUs cannot, and is rejected against the promoted one.
"""

from __future__ import annotations

import pytest
import torch

from services.common.errors import FailedPrecondition, InvalidArgument
from services.common.storage import make_engine, make_session_factory, migrate
from services.models.quality_gru import Ensemble
from services.training import quality_job
from services.training.annotations import AnnotationStore
from services.training.job_context import Context
from services.training.registry import PROMOTED, Registry
from services.training.reviews import ReviewStore, decode
from services.training.snapshots import SnapshotStore, is_heldout
from tests.training.helpers import reviewed, write_project

pytestmark = pytest.mark.unit
P = "proj-quality"
FAST = {"members": 2, "epochs": 150, "hidden": 8, "learning_rate": 0.01}


class FakePublisher:
    def __init__(self) -> None:
        self.published: list[int] = []

    def publish(self, mv) -> str:
        self.published.append(mv.version)
        return ""

    def withdraw(self, project_id, kind) -> None:
        pass


@pytest.fixture
def context(tmp_path):
    url = f"sqlite:///{tmp_path / 'db.sqlite'}"
    migrate(url)
    sessions = make_session_factory(make_engine(url))
    annotations = AnnotationStore(sessions)
    for a in write_project(tmp_path / "images", P, 30):
        annotations.record(a)
    return Context(SnapshotStore(sessions, annotations), Registry(sessions), FakePublisher(), tmp_path / "var",
                   reviews=ReviewStore(sessions))


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def test_a_message_is_checked_before_it_is_stored():
    good = reviewed(["img000"], P, per_image=1)[0]
    assert decode(good).true_iou == pytest.approx(good["true_iou"])
    for change, field in (({"project_id": ""}, "project_id"), ({"true_iou": 1.5}, "true_iou"),
                          ({"steps": []}, "steps"), ({"steps": [{"values": [1.0]}, {"values": [1.0, 2.0]}]}, "steps"),
                          ({"session_features": [1.0]}, "session_features"), ({"nope": 1}, "session_reviewed")):
        with pytest.raises(InvalidArgument) as refused:
            decode({**good, **change})
        assert refused.value.field == field


def test_retraining_on_reviews_beats_the_base_and_shuffled_ious_are_rejected(context):
    image_ids = [f"img{i:03d}" for i in range(30)]
    for payload in reviewed(image_ids, P):
        context.reviews.record(decode(payload))
    snapshot, _ = context.snapshots.freeze(P, 20)
    first = quality_job.run(context, "op-q1", P, snapshot.snapshot_id, FAST)
    assert first["state"] == "PROMOTED", first
    gate = first["gate"]
    assert gate["metric"] == "roc_auc" and gate["current_version"] == 0 and gate["candidate"] > gate["current"] + 0.2
    held = [i for i in image_ids if is_heldout(P, i, 20)]
    assert first["figures"]["heldout_sessions"] == 4 * len(held)
    v1 = context.registry.get(P, "quality", 1)
    assert v1.state == PROMOTED and context.publisher.published == [1] and "MODEL_KIND_QUALITY" in v1.command
    Ensemble.from_state(torch.load(v1.artifact, weights_only=True))  # the quality service's weights format

    # The same sessions reviewed again with shuffled IoUs on the training images (a later verdict replaces the
    # earlier one); the held-out sessions keep theirs, so both versions are judged on the same truth.
    for payload in reviewed([i for i in image_ids if i not in held], P, shuffled=True):
        context.reviews.record(decode(payload))
    second = quality_job.run(context, "op-q2", P, snapshot.snapshot_id, FAST)
    assert second["state"] == "REJECTED", second
    assert second["gate"]["current_version"] == 1 and second["gate"]["candidate"] < second["gate"]["current"]
    assert context.registry.current(P, "quality").version == 1 and context.publisher.published == [1]
    again = quality_job.run(context, "op-q2", P, snapshot.snapshot_id, FAST)  # redelivered after the decision
    assert again["state"] == "REJECTED" and again["model_version"] == 2


def test_too_few_reviews_or_one_kind_of_held_out_session_is_refused(context):
    snapshot, _ = context.snapshots.freeze(P, 20)
    with pytest.raises(FailedPrecondition) as few:
        quality_job.run(context, "op", P, snapshot.snapshot_id, FAST)
    assert few.value.field == "kind" and "review more" in few.value.message
    for payload in reviewed([f"img{i:03d}" for i in range(30)], P):
        context.reviews.record(decode({**payload, "true_iou": 0.99}))
    with pytest.raises(FailedPrecondition) as one_kind:
        quality_job.run(context, "op", P, snapshot.snapshot_id, FAST)
    assert "both kinds" in one_kind.value.message
