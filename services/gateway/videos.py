"""Videos of a project: upload (a video file decoded with OpenCV, or a zip of frames), listing, frames.

Stored in the layout the segmentation service reads (``video_queue.VIDEO_ROOT``, ``video_data``):
``VAR_DIR/videos/<project_id>/<video_id>/frames/<index>.jpg|png``, frame order = file-name order
(zero-padded indices), plus ``video.json`` (display name, size, creation time, propagations started
through the gateway, the click sessions behind human masks) and ``labels/<index>.png`` (human masks,
uploaded or made in a click session on the frame) beside ``frames/``. An upload is written under
``VAR_DIR/videos/.partial/`` and renamed into place once complete, so a refused or failed upload
leaves nothing behind (and one cut off by a crash is swept at the next start, ``sweep_partial``).
The client's file and entry names are for display and ordering only; they never become paths.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import tempfile
import threading
import time
import uuid
import zipfile
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

import cv2
import numpy as np
from PIL import Image as PILImage

from services.common.errors import InvalidArgument, NotFound
from services.common.images import decode_image
from services.common.video_layout import FRAME_SUFFIXES, ID, VIDEO_ROOT
from services.gateway.catalog import display_name, file_display_name

META = "video.json"
LABELS = "labels"  # human masks, <index>.png 0/255; not masks/, which video_data reads as every frame's truth
PARTIAL = ".partial"  # not a valid project id: never listed, never served
# An upload older than this in .partial was cut off by a crash (gateways sharing the volume may be
# writing younger ones); swept when a gateway starts.
PARTIAL_MAX_AGE_S = 3600
JPEG_QUALITY = 95
MEDIA_TYPES = {".jpg": "image/jpeg", ".png": "image/png"}


def frame_image_id(video_id: str, index: int) -> str:
    """A frame's image id in its sessions, tasks, annotations and selection items: ``<video_id>/<index>``, as
    the video service names frames (catalog image ids have no '/')."""
    return f"{video_id}/{index}"


def parse_frame_image_id(image_id: str) -> tuple[str, int] | None:
    """``(video_id, index)`` of a frame's image id, None for any other id."""
    video_id, slash, tail = image_id.rpartition("/")
    return (video_id, int(tail)) if slash and ID.match(video_id) and tail.isdigit() else None


def natural_key(name: str) -> list:
    """'f2.jpg' before 'f10.jpg'."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", name)]


def _frame_name(index: int, suffix: str) -> str:
    return f"{index:05d}{suffix}"  # at most 99999 frames (the setting's bound): name order = frame order


class VideoStore:
    def __init__(self, var_dir: Path, max_upload_bytes: int, max_frame_bytes: int, max_pixels: int,
                 max_frames: int) -> None:
        self.root = Path(var_dir) / VIDEO_ROOT
        self.max_upload_bytes, self.max_frame_bytes = max_upload_bytes, max_frame_bytes
        self.max_pixels, self.max_frames = max_pixels, max_frames
        self._meta_lock = threading.Lock()  # video.json is read, changed and rewritten (routes run in threads)
        self.sweep_partial()

    def sweep_partial(self, max_age_s: float = PARTIAL_MAX_AGE_S) -> None:
        """Removes uploads left in .partial for longer than ``max_age_s``."""
        partial = self.root / PARTIAL
        if not partial.is_dir():
            return
        cutoff = time.time() - max_age_s
        for entry in partial.iterdir():
            try:
                if entry.lstat().st_mtime < cutoff:
                    shutil.rmtree(entry) if entry.is_dir() and not entry.is_symlink() else entry.unlink()
            except FileNotFoundError:  # another gateway swept it first
                pass

    # --- reading ---------------------------------------------------------------------------------
    def folder(self, project_id: str, video_id: str) -> Path:
        folder = self.root / project_id / video_id
        if not ID.match(video_id) or not (folder / META).is_file():
            raise NotFound(f"no video {video_id!r} in project {project_id!r}", field="video_id")
        return folder

    def video(self, project_id: str, video_id: str) -> dict:
        return json.loads((self.folder(project_id, video_id) / META).read_text())

    def videos(self, project_id: str) -> list[dict]:
        project = self.root / project_id
        if not project.is_dir():
            return []
        found = [json.loads((p / META).read_text()) for p in project.iterdir() if (p / META).is_file()]
        return sorted(found, key=lambda v: (v["created_at"], v["video_id"]))

    def frame_names(self, project_id: str, video_id: str) -> list[str]:
        frames = self.folder(project_id, video_id) / "frames"
        return sorted(p.name for p in frames.iterdir() if p.suffix in FRAME_SUFFIXES)

    def frame(self, project_id: str, video_id: str, index: int) -> tuple[Path, str]:
        names = self.frame_names(project_id, video_id)
        if not 0 <= index < len(names):
            raise NotFound(f"no frame {index} in video {video_id!r} (0..{len(names) - 1})", field="index")
        path = self.root / project_id / video_id / "frames" / names[index]
        return path, MEDIA_TYPES.get(path.suffix, "application/octet-stream")

    def masked_frames(self, project_id: str, video_id: str) -> list[int]:
        labels = self.folder(project_id, video_id) / LABELS
        return sorted(int(p.stem) for p in labels.glob("*.png") if p.stem.isdigit()) if labels.is_dir() else []

    def masks(self, project_id: str, video_id: str) -> dict[int, np.ndarray]:
        """The human masks stored per frame: index -> (H, W) bool."""
        labels = self.folder(project_id, video_id) / LABELS
        return {t: cv2.imread(str(labels / f"{t:05d}.png"), cv2.IMREAD_GRAYSCALE) > 0
                for t in self.masked_frames(project_id, video_id)}

    def mask(self, project_id: str, video_id: str, index: int) -> np.ndarray | None:
        """Frame ``index``'s stored human mask ((H, W) bool), or None."""
        path = self.folder(project_id, video_id) / LABELS / f"{index:05d}.png"
        return cv2.imread(str(path), cv2.IMREAD_GRAYSCALE) > 0 if path.is_file() else None

    def set_mask(self, project_id: str, video_id: str, index: int, data: bytes) -> dict:
        """Stores the human mask of frame ``index`` (an image at the frame's size; pixels over 127 are
        the object, so 0/255 PNGs and slightly lossy files read the same), replacing any earlier one."""
        meta = self._frame_meta(project_id, video_id, index)
        pixels = decode_image(data, self.max_frame_bytes, self.max_pixels, field="file")
        if pixels.shape[:2] != (meta["height"], meta["width"]):
            raise InvalidArgument("file", f"the mask is {pixels.shape[1]}x{pixels.shape[0]}, the frames "
                                          f"{meta['width']}x{meta['height']}")
        return self.store_mask(project_id, video_id, index, pixels.max(axis=2) > 127)

    def store_mask(self, project_id: str, video_id: str, index: int, mask: np.ndarray,
                   sample: dict | None = None) -> dict:
        """Writes frame ``index``'s human mask ((H, W) bool at the frame's size) and what made it (``sample``:
        the click session's id, clicks, label; none for an uploaded mask), replacing any earlier one."""
        self._frame_meta(project_id, video_id, index)
        labels = self.root / project_id / video_id / LABELS
        labels.mkdir(exist_ok=True)
        partial = labels / f".{index:05d}.png"
        cv2.imwrite(str(partial), mask.astype(np.uint8) * 255)
        os.replace(partial, labels / f"{index:05d}.png")
        with self._meta_lock:
            folder = self.folder(project_id, video_id)
            meta = json.loads((folder / META).read_text())
            samples = meta.setdefault("samples", {})
            if sample is None:
                samples.pop(str(index), None)
            else:
                samples[str(index)] = {**sample, "stored_at": datetime.now(UTC).isoformat()}
            _write_json(folder / META, meta)
        return {"frame_index": index, "area_px": int(mask.sum())}

    def samples(self, project_id: str, video_id: str) -> dict[int, dict]:
        """What made each stored human mask, where a click session did: index -> {session_id, clicks, ...}."""
        return {int(t): s for t, s in self.video(project_id, video_id).get("samples", {}).items()}

    def _frame_meta(self, project_id: str, video_id: str, index: int) -> dict:
        meta = self.video(project_id, video_id)
        if not 0 <= index < meta["frames"]:
            raise NotFound(f"no frame {index} in video {video_id!r} (0..{meta['frames'] - 1})", field="index")
        return meta

    def record_propagation(self, project_id: str, video_id: str, operation_id: str, label: str) -> None:
        with self._meta_lock:
            folder = self.folder(project_id, video_id)
            meta = json.loads((folder / META).read_text())
            meta.setdefault("propagations", []).append(
                {"operation_id": operation_id, "label": label, "started_at": datetime.now(UTC).isoformat()})
            _write_json(folder / META, meta)

    def delete(self, project_id: str, video_id: str) -> None:
        """Removes a video with its frames and human masks. It leaves the listing in one rename; the
        files are removed after. Propagations already running on it fail with its frames gone."""
        folder = self.folder(project_id, video_id)
        (self.root / PARTIAL).mkdir(parents=True, exist_ok=True)
        doomed = self.root / PARTIAL / f"deleted-{uuid.uuid4().hex}"
        folder.rename(doomed)
        shutil.rmtree(doomed, ignore_errors=True)

    # --- upload ----------------------------------------------------------------------------------
    def add(self, project_id: str, upload: BinaryIO, filename: str, name: str = "") -> dict:
        """Stores a video file or a zip of frames (told apart by content, not name). Raises
        InvalidArgument naming ``file`` for anything refused; nothing is kept then."""
        (self.root / PARTIAL).mkdir(parents=True, exist_ok=True)
        work = Path(tempfile.mkdtemp(dir=self.root / PARTIAL))
        try:
            frames = work / "frames"
            frames.mkdir()
            upload.seek(0)
            try:
                is_zip = zipfile.is_zipfile(upload)
            except Exception as exc:  # noqa: BLE001 - it raises on some hostile end records (found by fuzz/)
                raise InvalidArgument("file", f"a corrupt or unsupported zip ({type(exc).__name__}: {exc})") from None
            upload.seek(0)  # is_zipfile leaves the file where it stopped reading
            if is_zip:
                source, (height, width) = "frames", self._from_zip(upload, frames)
            else:
                source, (height, width) = "video", self._from_video(upload, work / "upload", frames)
            count = sum(1 for _ in frames.iterdir())
            video_id = f"vid_{uuid.uuid4().hex[:16]}"
            display = display_name(name, video_id) if name else file_display_name(filename, video_id)
            meta = {"video_id": video_id, "project_id": project_id, "name": display, "source": source,
                    "frames": count, "width": width, "height": height,
                    "size_bytes": sum(p.stat().st_size for p in frames.iterdir()),
                    "created_at": datetime.now(UTC).isoformat(), "propagations": []}
            (work / "upload").unlink(missing_ok=True)
            _write_json(work / META, meta)
            (self.root / project_id).mkdir(parents=True, exist_ok=True)
            work.rename(self.root / project_id / video_id)  # one step: the video appears whole or not at all
            return meta
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def _from_video(self, upload: BinaryIO, path: Path, frames: Path) -> tuple[int, int]:
        if not is_video_container(upload.read(16)):
            raise InvalidArgument("file", "neither a zip of frames nor a video OpenCV can decode "
                                          "(MP4/MOV, AVI, Matroska/WebM, MPEG, FLV, Ogg or GIF)")
        upload.seek(0)
        with path.open("wb") as out:
            shutil.copyfileobj(upload, out)  # OpenCV reads files, not bytes
        capture = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
        try:
            if not capture.isOpened():
                raise InvalidArgument("file", "neither a zip of frames nor a video OpenCV can decode")
            width = int(capture.get(cv2.CAP_PROP_FRAME_WIDTH))
            height = int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT))
            self._check_pixels(width, height, "the video")  # from the container, before decoding a frame
            size, index = None, 0
            while True:
                ok, frame = capture.read()
                if not ok:
                    break
                size = self._check_frame(frame.shape[:2], size, index, f"frame {index}")
                cv2.imwrite(str(frames / _frame_name(index, ".jpg")), frame, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
                index += 1
        finally:
            capture.release()
        if size is None:
            raise InvalidArgument("file", "neither a zip of frames nor a video OpenCV can decode (no frame)")
        return size

    def _from_zip(self, upload: BinaryIO, frames: Path) -> tuple[int, int]:
        try:
            archive = zipfile.ZipFile(upload)
            listed = archive.infolist()
        except Exception as exc:  # noqa: BLE001 - zipfile raises many types on hostile bytes (found by fuzz/)
            raise InvalidArgument("file", f"a corrupt or unsupported zip ({type(exc).__name__}: {exc})") from None
        for entry in listed:
            if not entry.filename:
                raise InvalidArgument("file", "a zip entry without a name")
            if _unsafe(entry.filename):
                raise InvalidArgument("file", f"zip entry {entry.filename!r}: absolute or parent paths are refused")
        entries = [e for e in listed if not e.is_dir() and not _skipped(e.filename)]
        for entry in entries:
            if Path(entry.filename).suffix.lower() not in FRAME_SUFFIXES:
                raise InvalidArgument("file", f"zip entry {entry.filename!r} is not a frame "
                                              f"({', '.join(FRAME_SUFFIXES)})")
        if not entries:
            raise InvalidArgument("file", "the zip holds no frames")
        if len(entries) > self.max_frames:
            raise InvalidArgument("file", f"{len(entries)} frames is over the limit of {self.max_frames}")
        # Zip bombs: the declared sizes bound the total, and each read is capped (declared sizes can lie).
        if sum(e.file_size for e in entries) > self.max_upload_bytes:
            raise InvalidArgument("file", f"the frames uncompress to over {self.max_upload_bytes} bytes")
        size = None
        for index, entry in enumerate(sorted(entries, key=lambda e: natural_key(e.filename))):
            if entry.file_size > self.max_frame_bytes:
                raise InvalidArgument("file", f"zip entry {entry.filename!r}: {entry.file_size} bytes is over "
                                              f"the limit of {self.max_frame_bytes} bytes")
            try:
                with archive.open(entry) as member:
                    data = member.read(self.max_frame_bytes + 1)
            except Exception as exc:  # noqa: BLE001 - as above: bad CRC, unknown method, encryption, ...
                raise InvalidArgument("file", f"zip entry {entry.filename!r} cannot be read "
                                              f"({type(exc).__name__}: {exc})") from None
            where = f"zip entry {entry.filename!r}"
            try:
                rgb = decode_image(data, self.max_frame_bytes, self.max_pixels, field="file")
            except InvalidArgument as exc:
                raise InvalidArgument("file", f"{where}: {exc.message}") from None
            size = self._check_frame(rgb.shape[:2], size, index, where)
            with PILImage.open(io.BytesIO(data)) as probe:
                suffix = ".jpg" if probe.format == "JPEG" else ".png"
            # Re-encoded from the decoded pixels: EXIF orientation applied once, as every reader then sees it.
            bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)
            params = [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY] if suffix == ".jpg" else []
            cv2.imwrite(str(frames / _frame_name(index, suffix)), bgr, params)
        return size

    def _check_pixels(self, width: int, height: int, what: str) -> None:
        if width * height > self.max_pixels:
            raise InvalidArgument("file", f"{what}: {width}x{height} = {width * height} pixels is over the limit "
                                          f"of {self.max_pixels}")

    def _check_frame(self, shape: tuple[int, int], size: tuple[int, int] | None, index: int,
                     where: str) -> tuple[int, int]:
        if index >= self.max_frames:
            raise InvalidArgument("file", f"over the limit of {self.max_frames} frames")
        self._check_pixels(shape[1], shape[0], where)
        if size is not None and tuple(shape) != size:
            raise InvalidArgument("file", f"{where} is {shape[1]}x{shape[0]}, the first frame {size[1]}x{size[0]}: "
                                          "all frames of a video must have one size")
        return tuple(shape)


def is_video_container(head: bytes) -> bool:
    """Known container signatures only: FFmpeg probes content, and would otherwise also open a playlist
    (HLS, concat) that pulls other local files or URLs into the frames served back. (No MPEG-TS.)"""
    return (head[4:8] in (b"ftyp", b"moov", b"mdat", b"wide", b"free", b"skip")  # MP4 / QuickTime
            or (head[:4] == b"RIFF" and head[8:12] == b"AVI ")
            or head[:4] in (b"\x1a\x45\xdf\xa3", b"OggS", b"GIF8",  # Matroska/WebM, Ogg, GIF
                            b"\x00\x00\x01\xba", b"\x00\x00\x01\xb3")  # MPEG program stream, MPEG video
            or head[:3] == b"FLV")


def _skipped(name: str) -> bool:
    """Entries that are not frames by convention (macOS resource forks, hidden files)."""
    parts = name.replace("\\", "/").split("/")
    return parts[0] == "__MACOSX" or parts[-1].startswith(".")


def _unsafe(name: str) -> bool:
    parts = name.replace("\\", "/").split("/")
    return name.startswith(("/", "\\")) or ".." in parts or "\\" in name or (len(name) > 1 and name[1] == ":")


def _write_json(path: Path, value: dict) -> None:
    partial = path.with_suffix(".tmp")
    partial.write_text(json.dumps(value))
    os.replace(partial, path)  # readers see the old or the new file, never half of one

