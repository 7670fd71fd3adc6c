"""``annot train``: the project's training jobs and model versions, through the gateway's REST API
(``/v1/projects/{project}/training``, admin key). docs/training.md explains the jobs and the gate."""

from __future__ import annotations

import json

import typer
from rich.table import Table

from services.cli import rest

train_app = typer.Typer(help="Train a project's models, list their versions (admin key).", no_args_is_help=True)
KINDS = ("interactive", "task", "quality")


@train_app.command("start")
def train_start(project: str = typer.Argument(..., help="Project id."),
                kind: str = typer.Option(..., help="interactive (the click network), task (selection's model) or "
                                         "quality (the review queue's model)."),
                snapshot: str = typer.Option("", help="Snapshot to train on (default: the accepted annotations now)."),
                config: str = typer.Option("{}", help='The kind\'s configuration as JSON, e.g. \'{"iterations": 50}\' '
                                           "(missing fields: the defaults)."),
                url: str = rest.URL_OPTION, key: str = rest.KEY_OPTION) -> None:
    """Start a training job; it is promoted only if it beats the project's current version."""
    if kind not in KINDS:
        rest.console.print(f"[red]--kind[/] is one of {', '.join(KINDS)}")
        raise typer.Exit(2)
    try:
        values = json.loads(config)
    except ValueError as exc:
        rest.console.print(f"[red]--config[/] is not JSON: {exc}")
        raise typer.Exit(2) from None
    body = {"kind": kind, "snapshot_id": snapshot, "config": values}
    with rest._gateway_client(url, key) as client:
        job = rest._rest(lambda: client.request("POST", f"/v1/projects/{project}/training", json=body))
    rest.console.print(f"started {kind} training of {project}: operation {job['operation_id']} on snapshot "
                       f"{job['snapshot_id']}")


@train_app.command("versions")
def train_versions(project: str = typer.Argument(..., help="Project id."),
                   kind: str = typer.Option("", help="Only this kind."),
                   url: str = rest.URL_OPTION, key: str = rest.KEY_OPTION) -> None:
    """The project's model versions, newest first, with their gate figures; * marks the current ones."""
    with rest._gateway_client(url, key) as client:
        listed = rest._rest(lambda: client.request("GET", f"/v1/projects/{project}/training/versions",
                                                   params={"kind": kind}))
    table = Table("kind", "version", "state", "parent", "gate", "candidate", "against", "snapshot")
    for v in listed["versions"]:
        current = listed["current"].get(v["kind"]) == v["version"]
        gate = v["gate"]
        verdict = ("passed" if gate.get("passed") else "failed") + (" (forced)" if gate.get("forced") else "")
        table.add_row(v["kind"], f"{v['version']}{' *' if current else ''}", v["state"], str(v["parent_version"]),
                      f"{gate.get('metric', '')} {verdict}" if gate else "", f"{gate.get('candidate', 0):.4g}",
                      f"{gate.get('current', 0):.4g}", v["snapshot_id"][:8])
    rest.console.print(table)
    if not listed["versions"]:
        rest.console.print(f"{project} has no trained model: every kind is on its base model")
