"""API keys: hashed storage, roles, project scope, revocation, cache."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from services.common.errors import InvalidArgument, PermissionDenied, Unauthenticated
from services.common.keys import KeyStore, Role
from services.common.storage import make_engine, make_session_factory, migrate

pytestmark = pytest.mark.unit


@pytest.fixture
def engine(tmp_path):
    url = f"sqlite:///{tmp_path / 'keys.db'}"
    migrate(url)
    return make_engine(url)


def test_only_a_hash_of_the_secret_is_stored(engine):
    store = KeyStore(make_session_factory(engine), 0)
    principal, token = store.create("ci", Role.REVIEWER, ["p1", "p2"])
    secret = token.split(".", 1)[1]
    with engine.connect() as conn:
        rows = conn.execute(text("select * from api_keys")).all()
    assert len(rows) == 1 and secret not in repr(rows) and token not in repr(rows)
    assert store.verify(token) == principal
    assert principal.role is Role.REVIEWER and principal.projects == {"p1", "p2"}


@pytest.mark.parametrize("token", ["", "ak_", "ak_abc", "nonsense", "ak_0123456789abcdef.wrong"])
def test_malformed_or_unknown_tokens_are_refused(engine, token):
    with pytest.raises(Unauthenticated):
        KeyStore(make_session_factory(engine), 0).verify(token)


def test_a_wrong_secret_for_a_real_id_is_refused(engine):
    store = KeyStore(make_session_factory(engine), 0)
    _, token = store.create("a", Role.ADMIN, ["*"])
    with pytest.raises(Unauthenticated):
        store.verify(token[:-2] + ("AA" if not token.endswith("AA") else "BB"))


def test_revocation_applies_immediately_without_cache_and_after_ttl_with_it(engine):
    sessions = make_session_factory(engine)
    uncached, cached = KeyStore(sessions, 0), KeyStore(sessions, 3600)
    principal, token = uncached.create("a", Role.ANNOTATOR, ["p"])
    cached.verify(token)
    uncached.revoke(principal.key_id)
    with pytest.raises(Unauthenticated):
        uncached.verify(token)
    assert cached.verify(token) == principal  # within its TTL: the documented revocation latency


def test_roles_are_ordered_and_projects_scoped(engine):
    store = KeyStore(make_session_factory(engine), 0)
    reviewer, _ = store.create("r", Role.REVIEWER, ["p1"])
    reviewer.authorize(Role.ANNOTATOR, "p1")
    reviewer.authorize(Role.REVIEWER, "p1")
    with pytest.raises(PermissionDenied):
        reviewer.authorize(Role.ADMIN, "p1")
    with pytest.raises(PermissionDenied) as err:
        reviewer.authorize(Role.ANNOTATOR, "p2")
    assert err.value.field == "project_id"
    admin, _ = store.create("a", Role.ADMIN, ["*"])
    admin.authorize(Role.ADMIN, "any-project")


def test_creation_validates_its_input(engine):
    store = KeyStore(make_session_factory(engine), 0)
    with pytest.raises(InvalidArgument) as err:
        store.create("x", Role.ADMIN, [])
    assert err.value.field == "projects"
    with pytest.raises(InvalidArgument) as err:
        Role.parse("superuser")
    assert err.value.field == "role"


def test_an_imported_key_verifies_and_rotates(engine):
    store = KeyStore(make_session_factory(engine), 0)
    token = "ak_0123abcd4567ef89." + "s" * 40
    principal = store.import_key(token, "admin", Role.ADMIN, ["*"])
    assert store.verify(token) == principal and principal.role is Role.ADMIN
    assert store.import_key(token, "admin", Role.ADMIN, ["*"]) == principal  # idempotent
    rotated = "ak_0123abcd4567ef89." + "t" * 40
    store.import_key(rotated, "admin", Role.ADMIN, ["*"])
    assert store.verify(rotated).key_id == principal.key_id
    with pytest.raises(Unauthenticated):
        store.verify(token)
    for bad in ("ak_x.short", "nope", "ak_.", "ak_ab/cd." + "s" * 40):
        with pytest.raises(InvalidArgument):
            store.import_key(bad, "admin", Role.ADMIN, ["*"])

