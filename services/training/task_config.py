"""The task model's training configuration, checked (no torch here: the server checks requests with it)."""

from __future__ import annotations

from dataclasses import dataclass

from services.training.job_config import checked


@dataclass(frozen=True)
class TaskConfig:
    steps: int = 300
    image_size: int = 64
    batch_size: int = 8
    learning_rate: float = 3e-3
    width: int = 8
    seed: int = 0
    checkpoint_every: int = 50


LIMITS = {"steps": (1, 100000), "image_size": (16, 1024), "batch_size": (1, 256), "width": (4, 256),
          "seed": (0, 2**31 - 1), "checkpoint_every": (1, 100000)}


def task_config(values: dict, prefix: str = "task.") -> TaskConfig:
    """A configuration from request values, 0 meaning the default; INVALID_ARGUMENT naming the field."""
    config = checked(TaskConfig, LIMITS, values, prefix)
    return TaskConfig(**{**config.__dict__, "checkpoint_every": min(config.checkpoint_every, config.steps)})
