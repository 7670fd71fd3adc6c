"""A small REST client of the gateway for the command line, the demo and the load test.

Errors come back as ``GatewayError`` carrying the gateway's ``{"error": {code, field, message}}``.
"""

from __future__ import annotations

from pathlib import Path

import httpx

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff"}


class GatewayError(Exception):
    def __init__(self, status: int, code: str, field: str, message: str) -> None:
        super().__init__(f"{status} {code}{f' ({field})' if field else ''}: {message}")
        self.status, self.code, self.field, self.message = status, code, field, message


class GatewayClient:
    def __init__(self, url: str, key: str, timeout_s: float = 60.0) -> None:
        self.http = httpx.Client(base_url=url.rstrip("/"), timeout=timeout_s,
                                 headers={"Authorization": f"Bearer {key}"})

    def __enter__(self) -> "GatewayClient":
        return self

    def __exit__(self, *exc) -> None:
        self.http.close()

    def request(self, method: str, path: str, **kwargs):
        reply = self.http.request(method, path, **kwargs)
        if reply.status_code >= 400:
            try:
                error = reply.json()["error"]
            except (ValueError, KeyError, TypeError):
                error = {"code": str(reply.status_code), "field": "", "message": reply.text[:300]}
            raise GatewayError(reply.status_code, error.get("code", ""), error.get("field", ""), error.get("message", ""))
        return reply.json() if reply.headers.get("content-type", "").startswith("application/json") else reply

    # --- projects and images ---------------------------------------------------------------------
    def create_project(self, project_id: str, name: str = "", labels: list[str] | None = None,
                       exist_ok: bool = False) -> dict:
        try:
            return self.request("POST", "/v1/projects", json={"project_id": project_id, "name": name,
                                                              "labels": labels or ["object"]})
        except GatewayError as exc:
            if exist_ok and exc.code == "ALREADY_EXISTS":
                return self.request("GET", f"/v1/projects/{project_id}")
            raise

    def upload(self, project_id: str, files: list[tuple[str, bytes]], batch: int = 16) -> list[dict]:
        """Uploads (name, bytes) pairs, ``batch`` files per request."""
        out = []
        for start in range(0, len(files), batch):
            part = [("files", (name, data, "application/octet-stream")) for name, data in files[start:start + batch]]
            out += self.request("POST", f"/v1/projects/{project_id}/images", files=part)["images"]
        return out

    def upload_dir(self, project_id: str, folder: Path) -> list[dict]:
        paths = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        return self.upload(project_id, [(p.name, p.read_bytes()) for p in paths])

    # --- videos ----------------------------------------------------------------------------------
    def upload_video(self, project_id: str, path: Path, name: str = "") -> dict:
        """A video file, or a folder of frames (zipped here, in memory: the gateway takes one file)."""
        if path.is_dir():
            import io  # noqa: PLC0415
            import zipfile  # noqa: PLC0415

            from services.common.video_layout import FRAME_SUFFIXES  # noqa: PLC0415 - cv2, only here

            buffer = io.BytesIO()
            with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:  # frames are compressed already
                for frame in sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in FRAME_SUFFIXES):
                    archive.write(frame, frame.name)
            data, filename = buffer.getvalue(), f"{path.name}.zip"
        else:
            data, filename = path.read_bytes(), path.name
        return self.request("POST", f"/v1/projects/{project_id}/videos", data={"name": name or path.name},
                            files={"file": (filename, data, "application/octet-stream")})

    def videos(self, project_id: str) -> list[dict]:
        return self.request("GET", f"/v1/projects/{project_id}/videos")["videos"]

    def delete_video(self, project_id: str, video_id: str) -> None:
        self.request("DELETE", f"/v1/projects/{project_id}/videos/{video_id}")

    def export_video_coco(self, project_id: str, video_id: str, operation_id: str = "") -> dict:
        return self.request("GET", f"/v1/projects/{project_id}/videos/{video_id}/exports/coco",
                            params={"operation_id": operation_id} if operation_id else None)

    # --- the loop --------------------------------------------------------------------------------
    def next_question(self, project_id: str) -> dict:
        return self.request("POST", f"/v1/projects/{project_id}/questions/next")

    def start_session(self, project_id: str, task_id: str = "", image_id: str = "", label: str = "") -> dict:
        return self.request("POST", f"/v1/projects/{project_id}/sessions",
                            json={"task_id": task_id, "image_id": image_id, "label": label})

    def click(self, project_id: str, session_id: str, x: float, y: float, positive: bool = True,
              t_ms: int = 0) -> dict:
        return self.request("POST", f"/v1/projects/{project_id}/sessions/{session_id}/clicks",
                            json={"x": x, "y": y, "positive": positive, "t_ms": t_ms})

    def box(self, project_id: str, session_id: str, x: float, y: float, width: float, height: float,
            t_ms: int = 0) -> dict:
        """A box around the object as the session's first input (before any click)."""
        return self.request("POST", f"/v1/projects/{project_id}/sessions/{session_id}/box",
                            json={"x": x, "y": y, "width": width, "height": height, "t_ms": t_ms})

    def undo(self, project_id: str, session_id: str) -> dict:
        return self.request("POST", f"/v1/projects/{project_id}/sessions/{session_id}/undo")

    def finish(self, project_id: str, session_id: str, outcome: str = "submitted", label: str = "") -> dict:
        return self.request("POST", f"/v1/projects/{project_id}/sessions/{session_id}/finish",
                            json={"outcome": outcome, "label": label})

    # --- review and exports ----------------------------------------------------------------------
    def config(self) -> dict:
        return self.request("GET", "/v1/config")

    def review(self, project_id: str, page_size: int = 50) -> dict:
        return self.request("GET", f"/v1/projects/{project_id}/review", params={"page_size": page_size})

    def annotation(self, project_id: str, session_id: str) -> dict:
        return self.request("GET", f"/v1/projects/{project_id}/annotations/{session_id}")

    def export_coco(self, project_id: str) -> dict:
        return self.request("GET", f"/v1/projects/{project_id}/exports/coco")

    def export_byproducts(self, project_id: str) -> bytes:
        return self.request("GET", "/v1/byproducts/export.jsonl", params={"project_id": project_id}).content
