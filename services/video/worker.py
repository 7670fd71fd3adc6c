"""Celery tasks of the video service, consumed from the ``video`` queue: propagation jobs, minutes of
CPU or GPU each (a GPU worker in Kubernetes, CPU here).

Run: ``celery -A services.video.worker:app worker -Q video``.
"""

from services.common.celery_app import make_celery, report_progress
from services.video.tasks import PROPAGATE_VIDEO

app = make_celery("video")


# Minutes of fine-tuning on CPU: the default limits (10 min) are for short tasks; these stay under the
# hour of visibility timeout, past which Redis would hand a running job to a second worker.
@app.task(name=PROPAGATE_VIDEO, bind=True, soft_time_limit=3000, time_limit=3300)
def propagate_video(self, request: dict) -> dict:
    """Propagates a video's human samples to every frame (``job.run``); idempotent."""
    from services.video import job  # torch loads when a job runs, not at worker import

    return job.run(request, progress=lambda done, total, message: report_progress(self, done, total, message))
