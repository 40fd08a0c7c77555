"""Property run over the OpenAPI schema (schemathesis): no generated request gets a 5xx.

Bounded (a few examples per operation) so it stays well under a minute per database.
"""

from __future__ import annotations

import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error

from lut_server.app import create_app
from lut_server.settings import Settings
from tests.server_support import *  # noqa: F403
from tests.server_support import ADMIN, ADMIN_H


def test_no_server_errors(db_url: str) -> None:
    from fastapi.testclient import TestClient

    app = create_app(Settings(db_url=db_url, admin_token=ADMIN))
    with TestClient(app) as c:  # something to find: a device, a LUT, a campaign with jobs
        c.post("/v1/devices", json={"name": "dev1"}, headers=ADMIN_H)
        c.post("/v1/campaigns", json={"space": {"space": "nb201"}, "device": "dev1", "backend": "b"}, headers=ADMIN_H)
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 20
    calls: list[int] = []

    for op in operations:
        @given(case=op.as_strategy())
        @settings(max_examples=6, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True,
                  database=None)
        def check(case: schemathesis.Case) -> None:
            case.call_and_validate(headers=ADMIN_H, checks=[not_a_server_error])
            calls.append(1)

        check()
    assert len(calls) >= len(operations)
