"""Names shared by the video server (sender) and the video worker (consumer) of propagation jobs."""

VIDEO_QUEUE = "video"  # its own queue: minutes of CPU/GPU per job, kept off the short tasks of other wings
PROPAGATE_VIDEO = "video.propagate"
