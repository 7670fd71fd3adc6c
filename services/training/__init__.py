"""Training service: snapshots of accepted annotations, training jobs, the model registry, publishing to Triton."""
