"""Settings of the gateway (environment variables ``ANNOT_GATEWAY_*``).

Kept beside the gateway rather than in the shared Settings (as the byproducts service does), so its
knobs land with it; ``annot settings`` does not list them yet.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class GatewaySettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ANNOT_GATEWAY_", env_file=".env", extra="ignore")

    rate_per_s: float = Field(
        50.0, gt=0, description="Requests per second one API key may make on average (token bucket).")
    rate_burst: int = Field(200, ge=1, description="Requests one API key may make in a burst.")
    max_request_bytes: int = Field(
        1 << 20, ge=1024, description="Largest request body outside image uploads, in bytes (413 above).")
    max_upload_bytes: int = Field(
        20 * 1024 * 1024, ge=1024, description="Largest image upload request, in bytes (413 above).")
    max_image_pixels: int = Field(
        4096 * 4096, gt=0, description="Largest image accepted at upload (width x height), checked "
        "from the header before decoding.")
    max_video_upload_bytes: int = Field(
        512 * 1024 * 1024, ge=1024, description="Largest video upload request (a video file or a zip of "
        "frames), in bytes (413 above); also the bound on a zip's total uncompressed size.")
    max_video_frames: int = Field(
        2000, ge=1, le=99_999, description="Most frames one uploaded video may have (422 above); each frame "
        "is also held to ANNOT_GATEWAY_MAX_IMAGE_PIXELS, and a zipped frame to ANNOT_GATEWAY_MAX_UPLOAD_BYTES.")
    grpc_timeout_s: float = Field(30.0, gt=0, description="Deadline of a call to a service.")
    fallback_timeout_s: float = Field(
        2.0, gt=0, description="Deadline of calls whose failure has a fallback (the dialog policy).")
    question_timeout_s: float = Field(
        30.0, gt=0, description="Deadline of the dialog's NextQuestion, after which the fallback asks; longer than "
        "fallback_timeout_s since a live proposal runs the segmentation network (a question the dialog issued "
        "after the gateway gave up would hold its candidate while the fallback asks about the image).")
    question_granularity: Literal["image", "patch", "superpixel"] = Field(
        "image", description="What selection picks for the dialog's questions: whole images, patches of "
        "question_patch_size_px or SLIC superpixels of question_superpixels segments (asked as LABEL_REGION or, "
        "with a proposal, VERIFY/SEGMENT of the region) once a task model has scored the pool at that "
        "granularity; whole images until then.")
    question_patch_size_px: int = Field(64, ge=8, le=4096, description="Side of a patch for patch questions.")
    question_superpixels: int = Field(200, ge=1, le=100_000, description="SLIC n_segments for superpixel "
                                      "questions (the value selection scored the pool with).")
    selection_strategy: str = Field(
        "", max_length=64, description="Selection strategy the dialog draws each project's candidates with "
        "(a name from Selection.ListStrategies); empty: selection's default, combined once a task model has "
        "scored the project's pool and uniform before.")
    web_session_ttl_s: float = Field(
        8 * 3600.0, gt=0, le=30 * 86400, description="Lifetime of a browser's login (POST /v1/login): the "
        "session cookie and its server-side record expire together; log in again after it.")
    cookie_secure: bool | None = Field(
        None, description="Mark the session cookie Secure: true always, false never, unset when the request "
        "came over https (behind a TLS-terminating proxy, set true, or run uvicorn with --proxy-headers).")
