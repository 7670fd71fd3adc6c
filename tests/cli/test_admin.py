"""``annot migrate`` and ``annot keys``: the store directly, no process running."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from services.cli.main import app
from services.common.keys import KeyStore, Role
from services.common.settings import get_settings
from services.common.storage import make_engine, make_session_factory

pytestmark = pytest.mark.unit


@pytest.fixture
def store(tmp_path, monkeypatch) -> KeyStore:
    """The key store of a fresh VAR_DIR, which the commands find through the settings."""
    monkeypatch.setenv("ANNOT_VAR_DIR", str(tmp_path))
    monkeypatch.delenv("ANNOT_DATABASE_URL", raising=False)
    get_settings.cache_clear()
    yield KeyStore(make_session_factory(make_engine(get_settings().resolved_database_url)), 0)
    get_settings.cache_clear()


def test_migrate_imports_the_admin_key_from_the_environment(store, monkeypatch):
    monkeypatch.setenv("ANNOT_ADMIN_KEY", "ak_00aa11bb22cc33dd." + "k" * 43)
    result = CliRunner().invoke(app, ["migrate", "--admin-key-env", "ANNOT_ADMIN_KEY"])
    assert result.exit_code == 0, result.output
    assert store.verify("ak_00aa11bb22cc33dd." + "k" * 43).role is Role.ADMIN
    monkeypatch.setenv("ANNOT_ADMIN_KEY", "")
    skipped = CliRunner().invoke(app, ["migrate", "--admin-key-env", "ANNOT_ADMIN_KEY"])
    assert skipped.exit_code == 0 and "no admin key imported" in skipped.output


def test_keys_create_list_import_revoke(store, monkeypatch):
    runner = CliRunner()
    created = runner.invoke(app, ["keys", "create", "--name", "ci", "--role", "reviewer", "--project", "p1"])
    assert created.exit_code == 0, created.output
    token = created.output.strip().splitlines()[-1]  # the plaintext, printed once
    principal = store.verify(token)
    assert principal.role is Role.REVIEWER and principal.projects == {"p1"}
    monkeypatch.setenv("ANNOT_IMPORT_KEY", "ak_0123abcd4567ef89." + "s" * 40)
    imported = runner.invoke(app, ["keys", "import", "--name", "ext", "--role", "admin", "--project", "*"])
    assert imported.exit_code == 0 and "imported 0123abcd4567ef89" in imported.output, imported.output
    listed = runner.invoke(app, ["keys", "list"])
    assert listed.exit_code == 0 and principal.key_id in listed.output and "0123abcd4567ef89" in listed.output
    revoked = runner.invoke(app, ["keys", "revoke", principal.key_id])
    assert revoked.exit_code == 0 and f"revoked {principal.key_id}" in revoked.output
    monkeypatch.setenv("ANNOT_IMPORT_KEY", "")
    empty = runner.invoke(app, ["keys", "import", "--name", "ext", "--role", "admin", "--project", "*"])
    assert empty.exit_code == 2 and "ANNOT_IMPORT_KEY is empty" in empty.output
