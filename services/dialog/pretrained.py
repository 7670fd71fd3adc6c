"""Pretrained priors of the acceptance and click-count models, fitted by ``pretrain.py`` on outcomes
measured on the training images (every proposal verified, every start segmented, so the answers are
not filtered by any policy's choices). Recorded answers then shrink the per-project and per-annotator
models towards these instead of towards constants; without the file, the documented constants.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

from services.dialog.regression import Linear

PRIORS_PATH = Path(__file__).resolve().parent / "weights" / "priors.json"


@lru_cache(maxsize=4)
def _load(path: Path) -> dict[str, Linear]:
    if not path.exists():
        return {}
    return {key: Linear.from_dict(params) for key, params in json.loads(path.read_text())["models"].items()}


def model(key: str, path: Path = PRIORS_PATH) -> Linear | None:
    """``acceptance``, ``clicks:scratch`` or ``clicks:proposal``; None without a priors file."""
    return _load(path).get(key)
