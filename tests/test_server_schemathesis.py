"""Property runs over the OpenAPI schema (schemathesis): no generated request, alone or in a chain, gets a 5xx.

- every operation on its own, ``BUDGETNAS_FUZZ_EXAMPLES`` examples each (CI default 25, about 15 s per database
  on two cores; the issue's bounded fuzz run is ``BUDGETNAS_FUZZ_EXAMPLES=200 BUDGETNAS_FUZZ_SCENARIOS=200``);
- stateful: chains that follow OpenAPI links (a created LUT is shown, exported, calibrated and campaigned;
  a campaign's jobs are leased, then heartbeaten, resulted, failed or released; an artifact put is read back),
  ``BUDGETNAS_FUZZ_SCENARIOS`` scenarios (CI default 30, about 15 s per database) of up to 8 steps, each from
  the same seeded records.

The links are added to the app's own schema here: they describe how its operations chain (ids in responses),
which the app does not declare.
"""

from __future__ import annotations

import copy
import os
from typing import Any

import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error

from budgetnas.db.models import Base
from budgetnas.lut_server.app import create_app
from budgetnas.lut_server.settings import Settings
from tests.server_support import *  # noqa: F403
from tests.server_support import ADMIN, ADMIN_H

EXAMPLES = int(os.environ.get("BUDGETNAS_FUZZ_EXAMPLES", "25"))
SCENARIOS = int(os.environ.get("BUDGETNAS_FUZZ_SCENARIOS", "30"))
FUZZ = settings(deadline=None, suppress_health_check=list(HealthCheck), derandomize=True, database=None)

LUT_OPS = [("get", "/v1/luts/{lut_id}"), ("get", "/v1/luts/{lut_id}/entries"), ("get", "/v1/luts/{lut_id}/export"),
           ("get", "/v1/luts/{lut_id}/validation"), ("post", "/v1/luts/{lut_id}/calibrate"),
           ("post", "/v1/luts/{lut_id}/campaign")]
JOB_OPS = [("post", f"/v1/jobs/{{job_id}}/{what}") for what in ("heartbeat", "result", "fail", "release")]


def _ref(method: str, path: str) -> str:
    return "#/paths/" + path.replace("~", "~0").replace("/", "~1") + "/" + method


def with_links(spec: dict[str, Any]) -> dict[str, Any]:
    """The app's schema plus the links between its operations (response ids -> path parameters)."""
    spec = copy.deepcopy(spec)

    def link(method: str, path: str, status: str, targets: list[tuple[str, str]], **how: Any) -> None:
        response = spec["paths"][path][method]["responses"].setdefault(status, {"description": "created"})
        links = response.setdefault("links", {})
        for t_method, t_path in targets:
            links[f"{t_method}{t_path}".replace("/", "_")] = {"operationRef": _ref(t_method, t_path), **how}

    for path, id_field in (("/v1/luts", "id"), ("/v1/luts/import", "id"), ("/v1/campaigns", "lut_id")):
        link("post", path, "201", LUT_OPS, parameters={"lut_id": f"$response.body#/{id_field}"})
    link("post", "/v1/luts/{lut_id}/campaign", "201", LUT_OPS, parameters={"lut_id": "$response.body#/lut_id"})
    # a campaign's jobs go to its own device and backend
    link("post", "/v1/campaigns", "201", [("post", "/v1/jobs/lease")],
         requestBody={"device": "$request.body#/device", "backend": "$request.body#/backend", "max_jobs": 2})
    link("post", "/v1/jobs/lease", "200", JOB_OPS, parameters={"job_id": "$response.body#/jobs/0/id"})
    link("post", "/v1/devices", "201", [("post", "/v1/devices/{name}/heartbeat")],
         parameters={"name": "$response.body#/name"})
    link("put", "/v1/artifacts/{sha256}", "201", [("get", "/v1/artifacts/{sha256}")],
         parameters={"sha256": "$response.body#/sha256"})
    return spec


# what the seeded database holds: in chains these request fields take these values, so that campaigns,
# leases and job calls act on real records (the per-operation run fuzzes the same fields freely)
KNOWN = {"space": {"space": "nb201"}, "device": "dev1", "backend": "b"}


def with_known_values(spec: dict[str, Any]) -> dict[str, Any]:
    """The schema where each request field named in KNOWN is that known value."""
    spec = copy.deepcopy(spec)
    for component in spec.get("components", {}).get("schemas", {}).values():
        for name in component.get("properties", {}):
            if name in KNOWN:
                component["properties"][name] = {"enum": [KNOWN[name]]}
    return spec


def _seed(app: Any) -> None:
    """Empty the database, then something to find: a device, a LUT, a campaign with jobs."""
    from fastapi.testclient import TestClient

    engine = app.state.budgetnas.db.engine
    with engine.begin() as conn:
        for table in reversed(Base.metadata.sorted_tables):
            conn.execute(table.delete())
    with TestClient(app) as c:
        c.post("/v1/devices", json={"name": "dev1"}, headers=ADMIN_H)
        c.post("/v1/campaigns", json={"space": {"space": "nb201"}, "device": "dev1", "backend": "b"}, headers=ADMIN_H)


def _app(db_url: str) -> Any:
    app = create_app(Settings(db_url=db_url, admin_token=ADMIN))
    _seed(app)
    return app


def _schema(app: Any, known: bool = False) -> Any:
    spec = app.openapi()
    schema = schemathesis.openapi.from_dict(with_links(with_known_values(spec) if known else spec))
    schema.app = app
    return schema


def test_no_server_errors(db_url: str) -> None:
    schema = _schema(_app(db_url))
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 20
    calls: list[int] = []

    for op in operations:
        @given(case=op.as_strategy())
        @settings(FUZZ, max_examples=EXAMPLES)
        def check(case: schemathesis.Case) -> None:
            case.call_and_validate(headers=ADMIN_H, checks=[not_a_server_error])
            calls.append(1)

        check()
    assert len(calls) >= len(operations)


# the operations the links join: the chains walk only these (every operation is fuzzed on its own above), so
# that a chain's draws are not spent on unlinked operations, whose number grows with the API
CHAIN_OPS = {("post", "/v1/luts"), ("post", "/v1/luts/import"), ("post", "/v1/campaigns"), *LUT_OPS,
             ("post", "/v1/jobs/lease"), *JOB_OPS, ("post", "/v1/devices"), ("post", "/v1/devices/{name}/heartbeat"),
             ("put", "/v1/artifacts/{sha256}"), ("get", "/v1/artifacts/{sha256}")}


def test_no_server_errors_along_links(db_url: str) -> None:
    schema = _schema(_app(db_url), known=True)
    app = schema.app
    schema = schema.include(func=lambda ctx: (ctx.operation.method.lower(), ctx.operation.path) in CHAIN_OPS)
    schema.app = app
    assert len(list(schema.get_all_operations())) == len(CHAIN_OPS)  # every chained operation still exists
    steps: list[str] = []

    class Chains(schema.as_state_machine()):  # type: ignore[misc]
        def setup(self) -> None:  # each scenario from the same records: the same draws lead to the same calls
            _seed(schema.app)

        def get_call_kwargs(self, case: schemathesis.Case) -> dict[str, Any]:
            return {"headers": ADMIN_H}

        def validate_response(self, response: Any, case: schemathesis.Case, additional_checks: Any = None,
                              **kwargs: Any) -> None:
            steps.append(f"{case.method} {case.path} {response.status_code}")
            case.validate_response(response, checks=[not_a_server_error])

    Chains.run(settings=settings(FUZZ, max_examples=SCENARIOS, stateful_step_count=8))
    assert len(steps) >= SCENARIOS
    # chains got somewhere: a job leased by the chain was then acted on (its id came from the lease)
    assert any(s.startswith("POST /v1/jobs/{job_id}/") and s.endswith(" 200") for s in steps), sorted(set(steps))
