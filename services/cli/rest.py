"""Commands for external tools through the gateway's REST API (``services.gateway.client``): projects,
images, videos, export, review."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import typer
from rich.console import Console
from rich.table import Table

from services.cli.admin import admin_key_path
from services.common.settings import get_settings
from services.gateway.client import GatewayClient, GatewayError

projects_app = typer.Typer(help="Projects, through the gateway's REST API.", no_args_is_help=True)
images_app = typer.Typer(help="Images of a project, through the gateway's REST API.", no_args_is_help=True)
videos_app = typer.Typer(help="Videos of a project, through the gateway's REST API.", no_args_is_help=True)
console = Console()

URL_OPTION = typer.Option("", envvar="ANNOT_GATEWAY_URL", help="Gateway URL (default: the local one).")
KEY_OPTION = typer.Option("", envvar="ANNOT_API_KEY", help="API key (default: $ANNOT_API_KEY, else var/admin.key).")


def _gateway_client(url: str, key: str) -> GatewayClient:
    current = get_settings()
    if not key and admin_key_path(current).exists():
        key = admin_key_path(current).read_text().strip()
    if not key:
        console.print("[red]no API key[/]: pass --key or set ANNOT_API_KEY")
        raise typer.Exit(2)
    return GatewayClient(url or f"http://{current.host}:{current.gateway_port}", key)


def _rest(action):
    try:
        return action()
    except GatewayError as exc:
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(1)
    except (httpx.TransportError, OSError) as exc:  # httpx.ConnectError and friends are no OSError
        console.print(f"[red]gateway unreachable[/]: {exc}")
        raise typer.Exit(1)


@projects_app.command("create")
def projects_create(project_id: str, name: str = typer.Option("", help="Display name."),
                    label: list[str] = typer.Option(["object"], help="Class label; repeatable."),
                    url: str = URL_OPTION, key: str = KEY_OPTION) -> None:
    """Create a project (admin key)."""
    with _gateway_client(url, key) as client:
        project = _rest(lambda: client.create_project(project_id, name, label))
    console.print(f"created {project['project_id']} labels {project['labels']}")


@projects_app.command("list")
def projects_list(url: str = URL_OPTION, key: str = KEY_OPTION) -> None:
    """The projects the key may see."""
    with _gateway_client(url, key) as client:
        projects = _rest(lambda: client.request("GET", "/v1/projects"))
    table = Table("project", "name", "labels", "created")
    for p in projects:
        table.add_row(p["project_id"], p["name"], ", ".join(p["labels"]), p["created_at"][:19])
    console.print(table)


@images_app.command("upload")
def images_upload(folder: Path = typer.Argument(..., exists=True, file_okay=False, help="Folder of images."),
                  project: str = typer.Option(..., help="Project id."),
                  url: str = URL_OPTION, key: str = KEY_OPTION) -> None:
    """Upload every image of a folder (JPEG, PNG, WebP, BMP, TIFF) to a project (admin key)."""
    with _gateway_client(url, key) as client:
        images = _rest(lambda: client.upload_dir(project, folder))
    new = [i for i in images if not i["duplicate"]]
    console.print(f"uploaded {len(new)} images ({len(images) - len(new)} already there) to {project}")


@videos_app.command("upload")
def videos_upload(path: Path = typer.Argument(..., exists=True, help="A video file, or a folder of frames."),
                  project: str = typer.Option(..., help="Project id."),
                  name: str = typer.Option("", help="Display name (default: the file or folder name)."),
                  url: str = URL_OPTION, key: str = KEY_OPTION) -> None:
    """Upload one video (admin key): a video file OpenCV decodes, or a folder of JPEG/PNG frames."""
    with _gateway_client(url, key) as client:
        video = _rest(lambda: client.upload_video(project, path, name))
    console.print(f"uploaded {video['video_id']} ({video['frames']} frames, {video['width']}x{video['height']}) "
                  f"to {project}")


@videos_app.command("list")
def videos_list(project: str = typer.Option(..., help="Project id."), url: str = URL_OPTION,
                key: str = KEY_OPTION) -> None:
    """The videos of a project."""
    with _gateway_client(url, key) as client:
        videos = _rest(lambda: client.videos(project))
    table = Table("video", "name", "frames", "size", "created")
    for v in videos:
        table.add_row(v["video_id"], v["name"], str(v["frames"]), f"{v['width']}x{v['height']}", v["created_at"][:19])
    console.print(table)


@videos_app.command("delete")
def videos_delete(video: str = typer.Argument(..., help="Video id."),
                  project: str = typer.Option(..., help="Project id."),
                  url: str = URL_OPTION, key: str = KEY_OPTION) -> None:
    """Remove a video with its frames and human masks (admin key)."""
    with _gateway_client(url, key) as client:
        _rest(lambda: client.delete_video(project, video))
    console.print(f"deleted {video}")


@videos_app.command("export")
def videos_export(video: str = typer.Argument(..., help="Video id."),
                  project: str = typer.Option(..., help="Project id."),
                  out: Path = typer.Option(..., help="File to write (COCO JSON)."),
                  operation: str = typer.Option("", help="Propagation to export (default: the latest)."),
                  url: str = URL_OPTION, key: str = KEY_OPTION) -> None:
    """COCO JSON of a video's per-frame masks (reviewer key): one image per frame, with frame ids."""
    with _gateway_client(url, key) as client:
        coco = _rest(lambda: client.export_video_coco(project, video, operation))
    out.write_text(json.dumps(coco))
    console.print(f"{out}: {len(coco['images'])} frames, {len(coco['annotations'])} annotations")


def export_cmd(project: str = typer.Option(..., help="Project id."),
               kind: str = typer.Option("coco", "--format", help="coco (masks, COCO JSON) or byproducts (JSON Lines)."),
               out: Path = typer.Option(..., help="File to write."),
               url: str = URL_OPTION, key: str = KEY_OPTION) -> None:
    """Pull an export of a project (reviewer key): COCO JSON masks or JSON Lines byproducts."""
    if kind not in ("coco", "byproducts"):
        console.print("[red]--format[/] is coco or byproducts")
        raise typer.Exit(2)
    with _gateway_client(url, key) as client:
        if kind == "coco":
            coco = _rest(lambda: client.export_coco(project))
            out.write_text(json.dumps(coco))
            console.print(f"{out}: {len(coco['images'])} images, {len(coco['annotations'])} annotations")
        else:
            data = _rest(lambda: client.export_byproducts(project))
            out.write_bytes(data)
            lines = data.count(b"\n")
            console.print(f"{out}: {lines} lines")


def review_cmd(project: str = typer.Option(..., help="Project id."),
               limit: int = typer.Option(20, help="How many items."),
               url: str = URL_OPTION, key: str = KEY_OPTION) -> None:
    """The review queue of a project, worst predicted quality first (reviewer key)."""
    with _gateway_client(url, key) as client:
        page = _rest(lambda: client.review(project, limit))
    table = Table("session", "image", "annotator", "clicks", "predicted IoU", "P(bad)", "top reason")
    for item in page["items"]:
        reason = item["reasons"][0]["description"] if item["reasons"] else ""
        table.add_row(item["session_id"], item["image_id"], item["annotator_id"], str(item["click_count"]),
                      f"{item['predicted_iou']:.3f}", f"{item['probability_below_threshold']:.2f}", reason)
    console.print(table)
