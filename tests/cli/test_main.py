"""The command tree of ``annot``: every command keeps its name and place across the modules that hold it."""

from __future__ import annotations

import pytest
import typer

from services.cli.main import app

pytestmark = pytest.mark.unit

COMMANDS = ["settings", "migrate", "up", "down", "status", "demo", "export", "review", "call",
            "keys", "projects", "images", "videos", "train"]
GROUPS = {"keys": ["create", "import", "list", "revoke"], "projects": ["create", "list"], "images": ["upload"],
          "videos": ["upload", "list", "delete", "export"], "train": ["start", "versions"]}


def test_every_command_keeps_its_name_and_order():
    root = typer.main.get_command(app)
    assert list(root.commands) == COMMANDS  # the order `annot --help` lists them in
    for group, commands in GROUPS.items():
        assert list(root.commands[group].commands) == commands
