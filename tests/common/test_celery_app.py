"""Celery transport options: a short visibility timeout really shortens redelivery."""

import pytest

from services.common.celery_app import make_celery
from services.common.settings import Settings

pytestmark = pytest.mark.unit


def options(service: str, **changes) -> dict:
    settings = Settings(_env_file=None, env="test", **changes)
    return make_celery(service, settings).conf.broker_transport_options


def test_per_queue_cap_and_sweeps_scaled_to_the_visibility_timeout():
    byproducts = options("byproducts")  # default cap 120 s under the global hour
    assert byproducts["visibility_timeout"] == 120 and byproducts["unacked_mutex_expire"] == 120
    assert byproducts["unacked_restore_interval"] * byproducts["unacked_restore_throttle"] <= 60
    assert options("selection")["visibility_timeout"] == 3600
    short = options("byproducts", celery_visibility_timeout_s=2)  # the cap never lengthens it
    assert short["visibility_timeout"] == 2 and short["unacked_restore_interval"] == 1
    assert short["unacked_mutex_expire"] == 5  # a worker killed mid-sweep blocks others for 5 s, not 300
