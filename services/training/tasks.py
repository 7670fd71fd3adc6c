"""Names shared by the training server (sender of jobs), the training worker (consumer) and the services
that send the loop's event (``AnnotationSubmitted``, encoded by ``services/common/annotation_events.py``)."""

TRAINING_QUEUE = "training"  # its own queue: minutes of CPU/GPU per job (GPU workers in Kubernetes)
TRAIN = "training.train"  # a training job: args (project_id, kind, snapshot_id, config)
ANNOTATION_SUBMITTED = "training.annotation_submitted"  # args (AnnotationSubmitted as proto3 JSON,)
SESSION_REVIEWED = "training.session_reviewed"  # args (SessionReviewed as proto3 JSON,)
