"""Where a human label lands: the (region key, segment) a labelled region maps to in the score store."""

from __future__ import annotations

from dataclasses import dataclass

from services.common.errors import InvalidArgument
from services.selection.pool import Item


@dataclass(frozen=True)
class LabelRegion:
    """The region of a label, off the wire: ``kind`` is None (no region), "whole_image", "frame",
    "patch", "superpixel" or "box"; the other fields belong to their kind."""
    kind: str | None = None
    patch_row: int = 0
    patch_col: int = 0
    patch_size_px: int = 0
    n_segments: int = 0
    segment_id: int = 0


def patch_segment(row: int, col: int, size_px: int, width: int) -> int:
    """Segment index of patch (row, col) in the patch grid of an image ``width`` pixels wide."""
    return row * -(-width // size_px) + col


def label_key(region: LabelRegion, item: Item | None, field: str) -> tuple[str | None, int | None, dict | None]:
    """``(key, segment, region record)`` of a label; all None for a whole image or frame. A box is
    recorded under key "box", segment -1 (it matches no scored region). ``field`` prefixes the names
    of the InvalidArgument fields (e.g. ``labels[3]``)."""
    kind = region.kind
    key = segment = None
    if kind == "patch":
        if item is None or not item.width:
            raise InvalidArgument(f"{field}.item_id", "unknown item or item of unknown width")
        size = region.patch_size_px
        if size <= 0:
            raise InvalidArgument(f"{field}.region.patch.size_px", "must be > 0")
        key, segment = f"patch:{size}", patch_segment(region.patch_row, region.patch_col, size, item.width)
    elif kind == "superpixel":
        key, segment = f"superpixel:{region.n_segments}", region.segment_id
    elif kind == "box":
        key, segment = "box", -1
    record = None if kind in (None, "whole_image", "frame") else {"kind": kind, "key": key, "segment": segment}
    return key, segment, record
