"""Celery tasks of the segmentation service, consumed from the ``segmentation`` queue; video
propagation has its own queue ``video`` (minutes of CPU or GPU per job, kept off the short tasks).

Run: ``celery -A services.segmentation.worker:app worker -Q segmentation`` and, for video propagation
(a GPU worker in Kubernetes, CPU here), ``celery -A services.segmentation.worker:app worker -Q video``.
"""

from services.common.celery_app import make_celery, report_progress
from services.video.tasks import PROPAGATE_VIDEO, VIDEO_QUEUE

app = make_celery("segmentation")
# An exact name wins over the ``segmentation.*`` pattern route.
app.conf.task_routes = {PROPAGATE_VIDEO: {"queue": VIDEO_QUEUE}, **app.conf.task_routes}


# Minutes of fine-tuning on CPU: the default limits (10 min) are for short tasks; these stay under the
# hour of visibility timeout, past which Redis would hand a running job to a second worker.
@app.task(name=PROPAGATE_VIDEO, bind=True, soft_time_limit=3000, time_limit=3300)
def propagate_video(self, request: dict) -> dict:
    """Propagates a video's human samples to every frame (``video_job.run``); idempotent."""
    from services.video import (
        job as video_job,  # torch loads in the video worker only, not at import
    )

    return video_job.run(request, progress=lambda done, total, message: report_progress(self, done, total, message))
