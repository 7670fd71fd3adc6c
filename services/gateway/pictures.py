"""What a task, a session or an annotation is about: one of the project's images (the catalog) or one frame of
one of its videos (the video store; image id ``<video_id>/<index>``, as selection's FRAME items). The routes
resolve either kind here, so a question about a frame is asked, answered, stored and reviewed as one about an
image is."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from annotation.v1 import common_pb2
from services.gateway.routes_projects import image_out
from services.gateway.videos import parse_frame_image_id


@dataclass(frozen=True)
class Picture:
    image_id: str
    width: int
    height: int
    path: Path
    out: dict  # as the page and API clients see it (an image's fields; a frame's also video_id, frame_index)
    video_id: str | None = None
    frame_index: int | None = None

    def read(self) -> bytes:
        return self.path.read_bytes()

    def image_ref(self) -> common_pb2.ImageRef:
        ref = common_pb2.ImageRef(image_id=self.image_id, uri=self.path.resolve().as_uri())
        if self.video_id is not None:
            ref.video_id, ref.frame_index = self.video_id, self.frame_index
        return ref


def picture(state, project_id: str, image_id: str) -> Picture:
    """The image or frame ``image_id`` of the project (``state``: the app's, with ``catalog`` and ``videos``);
    NotFound naming it when there is none."""
    frame = parse_frame_image_id(image_id)
    if frame is None:
        row = state.catalog.image(project_id, image_id)
        return Picture(row.image_id, row.width, row.height, state.catalog.image_dir / row.stored_name,
                       image_out(row))
    video_id, index = frame
    meta = state.videos.video(project_id, video_id)
    path, content_type = state.videos.frame(project_id, video_id, index)
    out = {"image_id": image_id, "filename": f"{meta['name']} · frame {index}", "width": meta["width"],
           "height": meta["height"], "content_type": content_type, "size_bytes": path.stat().st_size,
           "position": index, "url": f"/v1/projects/{project_id}/videos/{video_id}/frames/{index}",
           "video_id": video_id, "frame_index": index, "frames": meta["frames"]}
    return Picture(image_id, meta["width"], meta["height"], path, out, video_id, index)
