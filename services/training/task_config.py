"""The task model's training configuration, checked (no torch here: the server checks requests with it)."""

from __future__ import annotations

from dataclasses import dataclass, fields

from services.common.errors import InvalidArgument


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
    defaults = TaskConfig()
    chosen = {}
    for f in fields(TaskConfig):
        value = values.get(f.name) or getattr(defaults, f.name)
        if f.name == "learning_rate":
            if not 0 < float(value) <= 1:
                raise InvalidArgument(f"{prefix}{f.name}", "must be in (0, 1]", reason="OUT_OF_RANGE")
            chosen[f.name] = float(value)
            continue
        low, high = LIMITS[f.name]
        if not low <= int(value) <= high:
            raise InvalidArgument(f"{prefix}{f.name}", f"must be in [{low}, {high}]", reason="OUT_OF_RANGE")
        chosen[f.name] = int(value)
    chosen["checkpoint_every"] = min(chosen["checkpoint_every"], chosen["steps"])
    return TaskConfig(**chosen)
