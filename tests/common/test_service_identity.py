"""Service keys: provisioned hashed, least privilege by grant, never a person's role (issue 19, item 4)."""

from __future__ import annotations

import stat

import pytest
from pydantic import SecretStr
from sqlalchemy import text

from services.common import service_identity
from services.common.errors import InvalidArgument, PermissionDenied
from services.common.keys import SERVICE_GRANTS, KeyStore, Role
from services.common.settings import Settings
from services.common.storage import make_engine, make_session_factory, migrate

pytestmark = pytest.mark.unit


@pytest.fixture
def store(tmp_path):
    url = f"sqlite:///{tmp_path / 'keys.db'}"
    migrate(url)
    return KeyStore(make_session_factory(make_engine(url)), 0)


def settings(tmp_path, **changes) -> Settings:
    return Settings(_env_file=None, env="test", var_dir=tmp_path / "var", **changes)


def test_a_key_is_made_once_kept_private_and_reused(tmp_path, store):
    token = service_identity.provision(store, settings(tmp_path), "dialog")
    path = service_identity.key_file(settings(tmp_path), "dialog")
    assert path.read_text().strip() == token and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert service_identity.provision(store, settings(tmp_path), "dialog") == token  # a restart
    principal = store.verify(token)
    assert principal.role == Role.SERVICE and principal.service == "dialog" and principal.projects == {"*"}
    with store._sessions() as db:  # noqa: SLF001 - the stored row
        rows = db.execute(text("select * from api_keys")).all()
    assert len(rows) == 1 and token.partition(".")[2] not in repr(rows)


def test_a_configured_key_is_imported_and_production_requires_one(tmp_path, store):
    token = "ak_0123abcd4567ef89." + "s" * 40
    assert service_identity.provision(store, settings(tmp_path, service_key=SecretStr(token)), "dialog") == token
    assert store.verify(token).service == "dialog"
    assert not service_identity.key_file(settings(tmp_path), "dialog").exists()
    production = settings(tmp_path, database_url="postgresql+psycopg://x@localhost/db").model_copy(
        update={"env": "production"})
    with pytest.raises(RuntimeError, match="ANNOT_SERVICE_KEY"):
        service_identity.provision(store, production, "dialog")
    assert settings(tmp_path, service_key=SecretStr(token)).to_env()["ANNOT_SERVICE_KEY"] == token
    assert token not in repr(settings(tmp_path, service_key=SecretStr(token)))


def test_a_service_that_calls_no_other_has_no_key(tmp_path, store):
    assert service_identity.provision(store, settings(tmp_path), "selection") == ""
    assert not store.list()


def test_a_service_key_may_call_its_grants_only_and_no_route(tmp_path, store):
    principal = store.verify(service_identity.provision(store, settings(tmp_path), "dialog"))
    for granted in SERVICE_GRANTS["dialog"]:  # SelectBatch needs admin of people, not of the dialog
        principal.authorize_call(granted, Role.ADMIN)
    for method in ("/annotation.v1.Selection/CreatePool", "/annotation.v1.Dialog/NextQuestion",
                   "/annotation.v1.Segmentation/StartSession"):
        with pytest.raises(PermissionDenied):
            principal.authorize_call(method, Role.ANNOTATOR)
    with pytest.raises(PermissionDenied):
        principal.authorize(Role.ANNOTATOR)  # the gateway's routes
    assert principal.owner_scope is None  # acting for a user whose key the first service checked


def test_service_is_no_role_a_person_can_be_given():
    with pytest.raises(InvalidArgument):
        Role.parse("service")
    assert Role.parse("reviewer") == Role.REVIEWER


def test_an_annotator_is_their_key(store):
    annotator, _ = store.create("a", Role.ANNOTATOR, ["p1"])
    reviewer, _ = store.create("r", Role.REVIEWER, ["p1"])
    assert annotator.owner_scope == annotator.key_id and reviewer.owner_scope is None
    assert annotator.acting_as("") == annotator.key_id and reviewer.acting_as("someone") == "someone"
