"""Fixtures of the REST tests: the app on a module's ``settings`` and ``gateway`` (each test module
defines those), and API keys of every role."""

import pytest
from fastapi.testclient import TestClient

from services.common.keys import KeyStore, Role
from services.common.storage import make_engine, make_session_factory, migrate
from services.gateway.app import create_app


@pytest.fixture
def client(settings, gateway):
    migrate(settings.resolved_database_url)
    with TestClient(create_app(settings, gateway)) as test_client:
        yield test_client


@pytest.fixture
def keys(settings, client):
    """Authorization headers: a global admin, a reviewer and an annotator of p1, an annotator of p2."""
    store = KeyStore(make_session_factory(make_engine(settings.resolved_database_url)), 0)
    tokens = {
        "admin": store.create("admin", Role.ADMIN, ["*"])[1],
        "reviewer": store.create("reviewer", Role.REVIEWER, ["p1"])[1],
        "annotator": store.create("annotator", Role.ANNOTATOR, ["p1"])[1],
        "other": store.create("other", Role.ANNOTATOR, ["p2"])[1],
    }
    return {name: {"Authorization": f"Bearer {token}"} for name, token in tokens.items()}
