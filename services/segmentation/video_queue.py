"""Names shared by the segmentation server (sender) and worker (consumer) of video propagation."""

VIDEO_QUEUE = "video"  # its own queue: minutes of CPU/GPU per job, kept off the short segmentation tasks
PROPAGATE_VIDEO = "segmentation.propagate_video"
VIDEO_ROOT = "videos"  # VAR_DIR/videos/<project_id>/<video_id>/frames/*: a video as ordered frames
