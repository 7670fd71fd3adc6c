"""schemathesis against the gateway's own OpenAPI, on the real app in process with a valid key.

Checks: no 500 on any generated request (valid and invalid data, then schemathesis' coverage phase
of boundary and wrong-type values), every error in the envelope, and response bodies that conform to
the documented schema (422 included: the app documents its error envelope in place of FastAPI's).
Bounded by ``MAX_EXAMPLES`` and ``MAX_COVERAGE_CASES`` per operation so the run stays well under a
minute. (schemathesis' pytest plugin does not run under pytest 9: operations are driven directly.)
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import response_schema_conformance

from services.gateway.app import create_app
from tests.hardening.conftest import bearer, gateway_settings

pytestmark = pytest.mark.integration

MAX_EXAMPLES = 20  # per operation, valid and invalid data together
MAX_COVERAGE_CASES = 30


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
            # schemathesis' coverage phase: boundary and wrong-type values of every parameter, deterministic
            config = api.config.generation_for(operation=operation)
            for index, case in enumerate(api.iter_coverage_cases(operation, generation_modes=list(GenerationMode),
                                                                 generation_config=config)):
                if index >= MAX_COVERAGE_CASES:
                    break
                case.call_and_validate(headers=headers, checks=[no_internal_error, response_schema_conformance])
        except Exception as exc:  # noqa: BLE001 - every operation's failure is collected and reported
            failures[operation.label] = f"{type(exc).__name__}: {str(exc)[:1500]}"
    assert operations >= 25
    assert not failures, "\n\n".join(f"{label}\n{text}" for label, text in failures.items())
