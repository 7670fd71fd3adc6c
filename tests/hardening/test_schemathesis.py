"""schemathesis against the gateway's own OpenAPI, on the real app in process with a valid key.

Checks: no 500 on any generated request (valid and invalid data), and response bodies that conform
to the documented schema (errors included: the documented error envelope). Bounded by
``MAX_EXAMPLES`` per operation so the whole run stays well under a minute. (schemathesis' pytest
plugin does not run under pytest 9, so the operations are driven with hypothesis directly.)
"""

from __future__ import annotations

import pytest
import schemathesis
from schemathesis import GenerationMode
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis.specs.openapi.checks import response_schema_conformance

from services.gateway.app import create_app
from tests.hardening.conftest import bearer, gateway_settings

pytestmark = pytest.mark.integration

MAX_EXAMPLES = 25  # per operation, valid and invalid data together


@schemathesis.check
def no_internal_error(ctx, response, case):
    """Never a 500 (nor 501/502); 503 and 504 are the documented answers for a service that is down
    or has not implemented a method yet (as here, where the services behind answer UNIMPLEMENTED)."""
    if response.status_code >= 500 and response.status_code not in (503, 504):
        raise AssertionError(f"{response.status_code}: {response.text[:300]}")
    if response.status_code >= 400 and case.path != "/healthz" and not response.text.startswith('{"error":'):
        raise AssertionError(f"{response.status_code} outside the error envelope: {response.text[:300]}")


def test_gateway_openapi(platform, projects):
    api = schemathesis.openapi.from_asgi("/openapi.json", create_app(platform.settings, gateway_settings()))
    headers = bearer(platform.keys["admin"])  # an unrestricted admin: every operation is reachable
    failures, operations = {}, 0
    for result in api.get_all_operations():
        operation = result.ok()
        operations += 1

        @given(case=st.one_of(operation.as_strategy(mode) for mode in GenerationMode))
        @settings(max_examples=MAX_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck),
                  derandomize=True, database=None)
        def run(case):
            case.call_and_validate(headers=headers, checks=[no_internal_error, response_schema_conformance])

        try:
            run()
        except Exception as exc:  # noqa: BLE001 - every operation's failure is collected and reported
            failures[operation.label] = f"{type(exc).__name__}: {str(exc)[:1500]}"
    assert operations >= 25
    assert not failures, "\n\n".join(f"{label}\n{text}" for label, text in failures.items())
