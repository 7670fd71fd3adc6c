"""The byproducts service: logging of annotation byproducts (trajectories, click timing, corrections)."""
