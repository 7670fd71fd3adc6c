"""Migrations run on SQLite (the default) and on a real PostgreSQL server, up and down."""

from __future__ import annotations

import pytest
from sqlalchemy import inspect

from services.common.keys import KeyStore, Role
from services.common.storage import (
    alembic_config,
    make_engine,
    make_session_factory,
    migrate,
)


@pytest.mark.unit
def test_sqlite_migrates_idempotently(tmp_path):
    url = f"sqlite:///{tmp_path / 'nested' / 'a.db'}"
    migrate(url)
    migrate(url)
    assert "api_keys" in inspect(make_engine(url)).get_table_names()


@pytest.mark.integration
def test_postgresql_migrates_up_and_down_and_stores_keys(postgres_url):
    from alembic import command  # noqa: PLC0415

    migrate(postgres_url)
    engine = make_engine(postgres_url)
    store = KeyStore(make_session_factory(engine), 0)
    principal, token = store.create("pg", Role.ADMIN, ["*"])
    assert store.verify(token) == principal
    command.downgrade(alembic_config(postgres_url), "base")
    assert "api_keys" not in inspect(engine).get_table_names()
    migrate(postgres_url)
    assert "api_keys" in inspect(engine).get_table_names()
