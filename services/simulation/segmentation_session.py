"""One interactive segmentation session driven through the gRPC API, for simulations and evaluation.

The NoC evaluation, the quality simulation and the dialog simulation all click through the real
service this way (DESIGN.md: the simulated annotator reaches services only through their APIs).

    with SegmentationSession(stub, metadata, "eval", png, shape) as session:
        update = session.click(x, y, positive)      # session.mask: the decoded mask after it
"""

from __future__ import annotations

import numpy as np

from annotation.v1 import common_pb2, segmentation_pb2
from services.common.masks import decode_rle, encode_rle


class SegmentationSession:
    def __init__(self, stub, metadata, project: str, image_png: bytes, shape: tuple[int, int], *,
                 annotator_id: str = "", task_id: str = "", image_id: str = "",
                 initial_mask: np.ndarray | None = None, timeout_s: float = 60.0) -> None:
        self.stub, self.project, self.shape = stub, project, shape
        self.call = {"metadata": metadata, "timeout": timeout_s}
        request = segmentation_pb2.StartSessionRequest(
            project_id=project, image_data=image_png, annotator_id=annotator_id, task_id=task_id,
            image=common_pb2.ImageRef(image_id=image_id))
        if initial_mask is not None:
            size, counts = encode_rle(initial_mask)
            request.initial_mask.CopyFrom(common_pb2.Mask(size=size, counts=counts))
        self.session_id = stub.StartSession(request, **self.call).session.session_id
        self.mask: np.ndarray | None = initial_mask
        self.finished: segmentation_pb2.SegmentationSession | None = None

    def _apply(self, update: segmentation_pb2.MaskUpdate) -> segmentation_pb2.MaskUpdate:
        self.mask = decode_rle(update.mask.size, update.mask.counts, self.shape, "mask")
        return update

    def click(self, x: float, y: float, positive: bool, t_ms: int = 0) -> segmentation_pb2.MaskUpdate:
        return self._apply(self.stub.AddClick(segmentation_pb2.AddClickRequest(
            project_id=self.project, session_id=self.session_id,
            click=common_pb2.Click(x=x, y=y, positive=positive, t_ms=t_ms)), **self.call).update)

    def undo(self) -> segmentation_pb2.MaskUpdate:
        return self._apply(self.stub.Undo(segmentation_pb2.UndoRequest(
            project_id=self.project, session_id=self.session_id), **self.call).update)

    def finish(self, outcome: int = common_pb2.SESSION_OUTCOME_SUBMITTED) -> segmentation_pb2.SegmentationSession:
        if self.finished is None:
            self.finished = self.stub.FinishSession(segmentation_pb2.FinishSessionRequest(
                project_id=self.project, session_id=self.session_id, outcome=outcome), **self.call).session
        return self.finished

    def __enter__(self) -> "SegmentationSession":
        return self

    def __exit__(self, *exc) -> None:
        self.finish()
