"""Where a video lives on disk: the contract between the gateway (writes uploads) and the video wing
(reads frames, writes masks).

A video is an ordered folder of frames at ``VAR_DIR/videos/<project_id>/<video_id>/frames/`` (frame
order = file-name order); ids match ``ID`` so they are safe as path components.
"""

import re

VIDEO_ROOT = "videos"
FRAME_SUFFIXES = (".jpg", ".jpeg", ".png")
ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
