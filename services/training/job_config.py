"""Training configurations of the interactive network and the quality model, checked (no torch here: the
server checks requests with them). The task model's is ``task_config.py``; the same rule holds for all:
a request's 0 / empty field takes the default, a value out of range is INVALID_ARGUMENT naming the field.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from services.common.errors import InvalidArgument


@dataclass(frozen=True)
class InteractiveConfig:
    """Fine-tuning of the served click network (``click_training.train_step``: the iterative click
    simulation) on a project's masks. Small on purpose: a few minutes of CPU per job."""

    iterations: int = 100
    crop_size: int = 0  # 0: the size the base network was trained and is served at (its training card)
    batch_size: int = 8
    learning_rate: float = 2e-4  # a tenth of training from scratch: the network keeps what it knows
    max_steps: int = 3  # corrective clicks simulated on the network's own prediction before the loss
    seed: int = 0
    checkpoint_every: int = 25


@dataclass(frozen=True)
class QualityConfig:
    """Retraining of the quality model (an ensemble of ``quality_gru.ClickGRU``) on reviewed sessions."""

    members: int = 3
    epochs: int = 60
    hidden: int = 16
    learning_rate: float = 3e-3
    seed: int = 0


INTERACTIVE_LIMITS = {"iterations": (1, 100000), "crop_size": (32, 512), "batch_size": (1, 64),
                      "max_steps": (1, 10), "seed": (0, 2**31 - 1), "checkpoint_every": (1, 100000)}
QUALITY_LIMITS = {"members": (1, 10), "epochs": (1, 1000), "hidden": (4, 256), "seed": (0, 2**31 - 1)}


def checked(cls, limits: dict, values: dict, prefix: str):
    """``cls`` from request values, 0 meaning the default, each within ``limits`` (``learning_rate`` in (0, 1]);
    INVALID_ARGUMENT naming the field."""
    defaults = cls()
    chosen = {}
    for f in fields(cls):
        value = values.get(f.name) or getattr(defaults, f.name)
        if value == 0:  # only where 0 is the default: a seed, or a size the job takes from the base
            chosen[f.name] = 0
            continue
        if f.name == "learning_rate":
            if not 0 < float(value) <= 1:
                raise InvalidArgument(f"{prefix}{f.name}", "must be in (0, 1]", reason="OUT_OF_RANGE")
            chosen[f.name] = float(value)
            continue
        low, high = limits[f.name]
        if not low <= int(value) <= high:
            raise InvalidArgument(f"{prefix}{f.name}", f"must be in [{low}, {high}]", reason="OUT_OF_RANGE")
        chosen[f.name] = int(value)
    return cls(**chosen)


def interactive_config(values: dict, prefix: str = "interactive.") -> InteractiveConfig:
    config = checked(InteractiveConfig, INTERACTIVE_LIMITS, values, prefix)
    return InteractiveConfig(**{**config.__dict__, "checkpoint_every": min(config.checkpoint_every,
                                                                           config.iterations)})


def quality_config(values: dict, prefix: str = "quality.") -> QualityConfig:
    return checked(QualityConfig, QUALITY_LIMITS, values, prefix)
