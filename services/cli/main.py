"""``annot``: the platform's command line (local platform, demo, keys, settings, migrations, and
REST commands for external tools: projects, images, videos, export, review)."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import grpc
import typer
from rich.console import Console
from rich.table import Table

from services.cli import local_platform
from services.common.keys import KeyStore, Role
from services.common.settings import Settings, get_settings
from services.common.storage import make_engine, make_session_factory, migrate

app = typer.Typer(help="Annotation platform: local processes, API keys, settings.", no_args_is_help=True)
keys_app = typer.Typer(help="API keys (stored hashed; the plaintext is printed once).", no_args_is_help=True)
app.add_typer(keys_app, name="keys")
projects_app = typer.Typer(help="Projects, through the gateway's REST API.", no_args_is_help=True)
app.add_typer(projects_app, name="projects")
images_app = typer.Typer(help="Images of a project, through the gateway's REST API.", no_args_is_help=True)
app.add_typer(images_app, name="images")
videos_app = typer.Typer(help="Videos of a project, through the gateway's REST API.", no_args_is_help=True)
app.add_typer(videos_app, name="videos")
console = Console()

GOOD = {"SERVING", "RUNNING"}


def _keystore(settings: Settings) -> KeyStore:
    migrate(settings.resolved_database_url)
    return KeyStore(make_session_factory(make_engine(settings.resolved_database_url)), 0)


def admin_key_path(settings: Settings):
    return settings.var_dir / "admin.key"


def ensure_admin_key(settings: Settings) -> str:
    """Development convenience: one unrestricted admin key, kept at VAR_DIR/admin.key (mode 0600)."""
    path = admin_key_path(settings)
    if path.exists():
        return path.read_text().strip()
    _, token = _keystore(settings).create("local admin (annot up)", Role.ADMIN, ["*"])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.write_text(token + "\n")
    return token


def _print_health(states: dict[str, str], pids: dict[str, dict]) -> None:
    table = Table("process", "state", "pid", "uptime")
    for name, state in states.items():
        info = pids.get(name) or {}
        uptime = f"{info['now'] - info['start']}s" if info.get("start") else "-"
        colour = "green" if state in GOOD else "red"
        table.add_row(name, f"[{colour}]{state}[/]", str(info.get("pid") or "-"), uptime)
    console.print(table)


@app.command()
def settings() -> None:
    """Every setting: its environment variable, current value and meaning."""
    current = get_settings()
    table = Table("variable", "value", "meaning")
    for name, field in Settings.model_fields.items():
        table.add_row(f"ANNOT_{name.upper()}", str(getattr(current, name)), field.description or "")
    console.print(table)


@app.command("migrate")
def migrate_cmd(admin_key_env: str = typer.Option(
        "", help="Also import the admin key held in this environment variable (the chart's Secret).")) -> None:
    """Bring the store's schema to the latest Alembic revision (every service's branch)."""
    url = get_settings().resolved_database_url
    migrate(url)
    console.print(f"schema at head: {url.split('@')[-1]}")
    if admin_key_env:
        token = os.environ.get(admin_key_env, "").strip()
        if not token:  # the chart's own Secret does not exist yet in a pre-install hook: next upgrade
            console.print(f"[yellow]${admin_key_env} is empty: no admin key imported[/]")
            return
        principal = _keystore(get_settings()).import_key(token, "admin (imported)", Role.ADMIN, ["*"])
        console.print(f"admin key {principal.key_id} imported")


@app.command()
def up(timeout: float = typer.Option(120.0, help="Seconds to wait for every process to be healthy.")) -> None:
    """Start Redis, every service's gRPC server and Celery worker, and the gateway; wait until healthy."""
    current = get_settings()
    migrate(current.resolved_database_url)
    ensure_admin_key(current)
    start = time.monotonic()
    try:
        states = local_platform.up(current, timeout)
    except TimeoutError as exc:
        console.print(f"[red]{exc}[/]\nlogs: {current.var_dir / 'log'}")
        raise typer.Exit(1)
    _print_health(states, local_platform.process_states(current))
    console.print(f"healthy in {time.monotonic() - start:.1f} s; admin key in {admin_key_path(current)}; "
                  f"gateway http://{current.host}:{current.gateway_port}")


@app.command()
def down() -> None:
    """Stop exactly what `annot up` started."""
    pids = local_platform.down(get_settings())
    console.print(f"stopped {len(pids)} processes" if pids else "nothing was running")


@app.command()
def status() -> None:
    """State and health of every local process; exits 1 unless all are healthy."""
    current = get_settings()
    states = local_platform.health(current)
    _print_health(states, local_platform.process_states(current))
    if not all(state in GOOD for state in states.values()):
        raise typer.Exit(1)


@app.command()
def demo(wait: bool = typer.Option(True, "--wait/--no-wait",
                                   help="Keep the web annotator up until Ctrl-C (--no-wait: stop at once)."),
         keep: bool = typer.Option(False, help="Leave the platform running afterwards.")) -> None:
    """Start the platform, walk one annotation session through the loop (question -> clicks -> mask ->
    byproducts -> quality score) with timings, leave the web annotator up until Ctrl-C, stop."""
    from services.gateway.client import GatewayClient  # noqa: PLC0415
    from services.gateway.demo import PROJECT, walk  # noqa: PLC0415

    current = get_settings()
    started = time.monotonic()
    signal.signal(signal.SIGTERM, _interrupt)  # a plain kill stops what the demo started, as Ctrl-C does
    try:
        up(timeout=180.0)
        key = ensure_admin_key(current)
        url = f"http://{current.host}:{current.gateway_port}"
        console.rule("one session through the loop")
        with GatewayClient(url, key) as client:
            result = walk(client, lambda line: console.print(line, highlight=False))
        console.rule()
        console.print(f"loop walked in {time.monotonic() - started:.1f} s from start "
                      f"(clicks: {', '.join(f'{ms:.0f} ms' for ms in result['click_ms'])})")
        console.print(f"web annotator: [bold]{url}/?project={PROJECT}[/]   review queue: {url}/review"
                      f"\nAPI key (paste it once in the page): {key}\nOpenAPI: {url}/docs")
        if wait:
            console.print("Ctrl-C stops everything.")
            try:
                while True:
                    time.sleep(3600)
            except KeyboardInterrupt:
                console.print("stopping")
    finally:
        if not keep:
            down()


def _interrupt(_signum, _frame) -> None:
    raise KeyboardInterrupt


def _gateway_client(url: str, key: str):
    from services.gateway.client import GatewayClient  # noqa: PLC0415

    current = get_settings()
    if not key and admin_key_path(current).exists():
        key = admin_key_path(current).read_text().strip()
    if not key:
        console.print("[red]no API key[/]: pass --key or set ANNOT_API_KEY")
        raise typer.Exit(2)
    return GatewayClient(url or f"http://{current.host}:{current.gateway_port}", key)


URL_OPTION = typer.Option("", envvar="ANNOT_GATEWAY_URL", help="Gateway URL (default: the local one).")
KEY_OPTION = typer.Option("", envvar="ANNOT_API_KEY", help="API key (default: $ANNOT_API_KEY, else var/admin.key).")


def _rest(action):
    from services.gateway.client import GatewayError  # noqa: PLC0415

    try:
        return action()
    except GatewayError as exc:
        console.print(f"[red]{exc}[/]")
        raise typer.Exit(1)
    except OSError as exc:  # httpx.ConnectError and friends
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
    import json  # noqa: PLC0415

    with _gateway_client(url, key) as client:
        coco = _rest(lambda: client.export_video_coco(project, video, operation))
    out.write_text(json.dumps(coco))
    console.print(f"{out}: {len(coco['images'])} frames, {len(coco['annotations'])} annotations")


@app.command("export")
def export_cmd(project: str = typer.Option(..., help="Project id."),
               kind: str = typer.Option("coco", "--format", help="coco (masks, COCO JSON) or byproducts (JSON Lines)."),
               out: Path = typer.Option(..., help="File to write."),
               url: str = URL_OPTION, key: str = KEY_OPTION) -> None:
    """Pull an export of a project (reviewer key): COCO JSON masks or JSON Lines byproducts."""
    import json  # noqa: PLC0415

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


@app.command("review")
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


@app.command()
def call(address: str = typer.Argument(..., help="host:port of a service, e.g. 127.0.0.1:50051."),
         method: str = typer.Argument("", help="Service/Method, e.g. annotation.v1.Operations/ProbeQueue; "
                                               "empty lists the services."),
         data: str = typer.Option("{}", "--data", "-d", help="The request as JSON."),
         key: str = typer.Option("", envvar="ANNOT_API_KEY", help="API key (default: $ANNOT_API_KEY)."),
         timeout: float = typer.Option(30.0, help="Deadline in seconds.")) -> None:
    """Call a unary RPC by name through server reflection, like grpcurl: JSON in, JSON out."""
    from google.protobuf import descriptor_pool, json_format, message_factory  # noqa: PLC0415
    from grpc_reflection.v1alpha.proto_reflection_descriptor_database import (  # noqa: PLC0415
        ProtoReflectionDescriptorDatabase,
    )

    with grpc.insecure_channel(address) as channel:
        database = ProtoReflectionDescriptorDatabase(channel)
        if not method:
            for name in database.get_services():
                console.print(name)
            return
        service_name, _, method_name = method.partition("/")
        pool = descriptor_pool.DescriptorPool(database)
        try:
            descriptor = pool.FindServiceByName(service_name).methods_by_name[method_name]
        except KeyError:
            console.print(f"[red]no method {method!r} on {address}[/] (give Service/Method; list with no METHOD)")
            raise typer.Exit(2)
        if descriptor.client_streaming or descriptor.server_streaming:
            console.print(f"[red]{method} streams; use a gRPC client library for it[/]")
            raise typer.Exit(2)
        try:
            request = json_format.Parse(data, message_factory.GetMessageClass(descriptor.input_type)())
        except json_format.ParseError as exc:
            console.print(f"[red]--data is not a valid {descriptor.input_type.full_name}[/]: {exc}")
            raise typer.Exit(2)
        response_class = message_factory.GetMessageClass(descriptor.output_type)
        rpc = channel.unary_unary(f"/{method}", request_serializer=lambda m: m.SerializeToString(),
                                  response_deserializer=response_class.FromString)
        metadata = [("authorization", f"Bearer {key}")] if key else None
        try:
            reply = rpc(request, timeout=timeout, metadata=metadata)
        except grpc.RpcError as exc:
            console.print(f"[red]{exc.code().name}[/]: {exc.details()}")
            raise typer.Exit(1)
        print(json_format.MessageToJson(reply))


@keys_app.command("create")
def keys_create(name: str = typer.Option(..., help="Who or what holds the key."),
                role: str = typer.Option(..., help="annotator, reviewer or admin."),
                project: list[str] = typer.Option(..., help="Project id the key may act on; '*' for all. Repeatable.")) -> None:
    """Create a key; its plaintext is printed once and never stored."""
    principal, token = _keystore(get_settings()).create(name, Role.parse(role), project)
    console.print(f"id {principal.key_id} role {principal.role.name.lower()} projects {sorted(principal.projects)}")
    print(token)


@keys_app.command("import")
def keys_import(name: str = typer.Option(..., help="Who or what holds the key."),
                role: str = typer.Option(..., help="annotator, reviewer or admin."),
                project: list[str] = typer.Option(..., help="Project id, '*' for all. Repeatable."),
                token_env: str = typer.Option("ANNOT_IMPORT_KEY", help="Environment variable holding the key "
                                              "(never a command-line argument: it would show in ps).")) -> None:
    """Store a key made elsewhere (ak_<id>.<secret>, e.g. from a Kubernetes Secret); idempotent."""
    token = os.environ.get(token_env, "").strip()
    if not token:
        raise typer.BadParameter(f"${token_env} is empty", param_hint="--token-env")
    principal = _keystore(get_settings()).import_key(token, name, Role.parse(role), project)
    console.print(f"imported {principal.key_id} role {principal.role.name.lower()} projects {sorted(principal.projects)}")


@keys_app.command("list")
def keys_list() -> None:
    """Every key (never its secret)."""
    table = Table("id", "name", "role", "projects", "created", "revoked")
    for principal, created, revoked in _keystore(get_settings()).list():
        table.add_row(principal.key_id, principal.name, principal.role.name.lower(),
                      ",".join(sorted(principal.projects)), f"{created:%Y-%m-%d %H:%M}",
                      f"{revoked:%Y-%m-%d %H:%M}" if revoked else "")
    console.print(table)


@keys_app.command("revoke")
def keys_revoke(key_id: str) -> None:
    """Revoke a key by id; services notice within ANNOT_AUTH_CACHE_TTL_S."""
    _keystore(get_settings()).revoke(key_id)
    console.print(f"revoked {key_id}")


if __name__ == "__main__":
    app()
