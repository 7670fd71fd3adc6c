"""The simulated annotator: the standard automatic clicker and the NoC protocol."""

from services.simulation.clicker import Click, Clicker, iou, split_annotation

__all__ = ["Click", "Clicker", "iou", "split_annotation"]
