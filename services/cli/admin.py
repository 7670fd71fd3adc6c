"""Commands that talk to the store directly, with no process running: settings, migrations, API keys."""

from __future__ import annotations

import os
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from services.common.keys import KeyStore, Role
from services.common.settings import Settings, get_settings
from services.common.storage import make_engine, make_session_factory, migrate

keys_app = typer.Typer(help="API keys (stored hashed; the plaintext is printed once).", no_args_is_help=True)
console = Console()


def keystore(settings: Settings) -> KeyStore:
    migrate(settings.resolved_database_url)
    return KeyStore(make_session_factory(make_engine(settings.resolved_database_url)), 0)


def admin_key_path(settings: Settings) -> Path:
    return settings.var_dir / "admin.key"


def ensure_admin_key(settings: Settings) -> str:
    """Development convenience: one unrestricted admin key, kept at VAR_DIR/admin.key (mode 0600)."""
    path = admin_key_path(settings)
    if path.exists():
        return path.read_text().strip()
    _, token = keystore(settings).create("local admin (annot up)", Role.ADMIN, ["*"])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.write_text(token + "\n")
    return token


def settings() -> None:
    """Every setting: its environment variable, current value and meaning."""
    current = get_settings()
    table = Table("variable", "value", "meaning")
    for name, field in Settings.model_fields.items():
        table.add_row(f"ANNOT_{name.upper()}", str(getattr(current, name)), field.description or "")
    console.print(table)


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
        principal = keystore(get_settings()).import_key(token, "admin (imported)", Role.ADMIN, ["*"])
        console.print(f"admin key {principal.key_id} imported")


@keys_app.command("create")
def keys_create(name: str = typer.Option(..., help="Who or what holds the key."),
                role: str = typer.Option(..., help="annotator, reviewer or admin."),
                project: list[str] = typer.Option(..., help="Project id the key may act on; '*' for all. Repeatable.")) -> None:
    """Create a key; its plaintext is printed once and never stored."""
    principal, token = keystore(get_settings()).create(name, Role.parse(role), project)
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
    principal = keystore(get_settings()).import_key(token, name, Role.parse(role), project)
    console.print(f"imported {principal.key_id} role {principal.role.name.lower()} projects {sorted(principal.projects)}")


@keys_app.command("list")
def keys_list() -> None:
    """Every key (never its secret)."""
    table = Table("id", "name", "role", "projects", "created", "revoked")
    for principal, created, revoked in keystore(get_settings()).list():
        table.add_row(principal.key_id, principal.name, principal.role.name.lower(),
                      ",".join(sorted(principal.projects)), f"{created:%Y-%m-%d %H:%M}",
                      f"{revoked:%Y-%m-%d %H:%M}" if revoked else "")
    console.print(table)


@keys_app.command("revoke")
def keys_revoke(key_id: str) -> None:
    """Revoke a key by id; services notice within ANNOT_AUTH_CACHE_TTL_S."""
    keystore(get_settings()).revoke(key_id)
    console.print(f"revoked {key_id}")
