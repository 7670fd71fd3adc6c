"""Names of the project models the training service publishes into Triton.

The training wing writes a promoted version under this name; the segmentation and selection wings look a
project's model up by it. One function on the ground floor, so the writer and the readers cannot disagree.
"""

from __future__ import annotations

import hashlib
import re


def triton_model_name(project_id: str, kind: str) -> str:
    """A Triton model (folder) name for the project's model of ``kind`` (``interactive``, ``task``):
    readable, unique, path-safe."""
    slug = re.sub(r"[^a-z0-9]+", "-", project_id.lower()).strip("-")[:40] or "project"
    return f"{kind}-{slug}-{hashlib.sha256(project_id.encode()).hexdigest()[:8]}"
