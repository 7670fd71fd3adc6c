"""Process control of the local platform (``local_platform``): up, down, status, demo.

Not named platform.py: run as a script, that would shadow the standard library's ``platform``."""

from __future__ import annotations

import os
import signal
import time

import typer
from rich.console import Console
from rich.table import Table

from services.cli import local_platform
from services.cli.admin import admin_key_path, ensure_admin_key
from services.common.settings import get_settings
from services.common.storage import migrate

console = Console()

GOOD = {"SERVING", "RUNNING"}


def _print_health(states: dict[str, str], pids: dict[str, dict]) -> None:
    table = Table("process", "state", "pid", "uptime")
    for name, state in states.items():
        info = pids.get(name) or {}
        uptime = f"{info['now'] - info['start']}s" if info.get("start") else "-"
        colour = "green" if state in GOOD else "red"
        table.add_row(name, f"[{colour}]{state}[/]", str(info.get("pid") or "-"), uptime)
    console.print(table)


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


def down() -> None:
    """Stop exactly what `annot up` started."""
    pids = local_platform.down(get_settings())
    console.print(f"stopped {len(pids)} processes" if pids else "nothing was running")


def status() -> None:
    """State and health of every local process; exits 1 unless all are healthy."""
    current = get_settings()
    states = local_platform.health(current)
    _print_health(states, local_platform.process_states(current))
    if not all(state in GOOD for state in states.values()):
        raise typer.Exit(1)


def demo(wait: bool = typer.Option(True, "--wait/--no-wait",
                                   help="Keep the web annotator up until Ctrl-C (--no-wait: stop at once)."),
         keep: bool = typer.Option(False, help="Leave the platform running afterwards.")) -> None:
    """Start the platform, walk the loop (question -> clicks -> mask -> byproducts -> quality score, then a
    training round and the next question) with timings, leave the web annotator up until Ctrl-C, stop.
    Exits 1 when a step falls back or fails."""
    from services.gateway.client import GatewayClient, GatewayError  # noqa: PLC0415
    from services.gateway.demo import DemoFailed, walk  # noqa: PLC0415 - numpy, PIL: only the demo needs them

    current = get_settings()
    started = time.monotonic()
    signal.signal(signal.SIGTERM, _interrupt)  # a plain kill stops what the demo started, as Ctrl-C does
    # a platform the demo starts holds out half the images, so a few sample images give a job both splits
    os.environ.setdefault("ANNOT_TRAINING_HELDOUT_PERCENT", "50")
    try:
        up(timeout=180.0)
        key = ensure_admin_key(current)
        url = f"http://{current.host}:{current.gateway_port}"
        console.rule("the loop, as a person meets it")
        with GatewayClient(url, key) as client:
            try:
                result = walk(client, lambda line: console.print(line, highlight=False))
            except (DemoFailed, GatewayError) as exc:  # a refused request is a failed step too
                console.print(f"[red]demo failed:[/] {exc}\nlogs: {current.var_dir / 'log'}")
                raise typer.Exit(1) from None
        console.rule()
        console.print(f"loop walked in {time.monotonic() - started:.1f} s from start "
                      f"(clicks: {', '.join(f'{ms:.0f} ms' for ms in result['click_ms'])})")
        console.print(f"web annotator: [bold]{url}/?project={result['project']}[/]   review queue: {url}/review"
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
