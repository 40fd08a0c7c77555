"""``/openapi.json`` documents the answers: every route's 2xx answer has a schema, and the schemas name the
fields the routes really return."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from fastapi.testclient import TestClient

from budgetnas.lut_server.app import create_app
from budgetnas.lut_server.settings import Settings
from budgetnas.lut_server.views import StatsOut
from budgetnas.luts.lut import LatencyStats
from tests.server_support import *  # noqa: F403
from tests.server_support import ADMIN_H

JSON = "application/json"
NOT_JSON = {("get", "/metrics"): "text/plain", ("get", "/v1/artifacts/{sha256}"): "application/octet-stream"}


@pytest.fixture(scope="module")
def spec(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    url = f"sqlite:///{tmp_path_factory.mktemp('openapi') / 'x.db'}"
    return create_app(Settings(db_url=url)).openapi()


def operations(spec: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(method, path, op) for path, ops in spec["paths"].items() for method, op in ops.items()]


def resolve(spec: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        schema = spec["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return schema


def documented(spec: dict[str, Any], schema: dict[str, Any]) -> bool:
    """A schema that says what the answer holds: named properties, not ``{}`` or a bare object of anything."""
    schema = resolve(spec, schema)
    return bool(schema.get("properties")) or "anyOf" in schema


def test_every_route_documents_its_answer(spec: dict[str, Any]) -> None:
    ops = operations(spec)
    assert len(ops) >= 31
    undocumented = []
    for method, path, op in ops:
        ok = {code: r for code, r in op["responses"].items() if code.startswith("2")}
        assert ok, (method, path)
        for code, response in ok.items():
            content = response.get("content", {})
            if (method, path) in NOT_JSON:
                media = NOT_JSON[method, path]
                assert [m for m in content if m.startswith(media)] and JSON not in content, (method, path, content)
                continue
            if JSON not in content or not documented(spec, content[JSON]["schema"]):
                undocumented.append(f"{method.upper()} {path} {code}")
    assert undocumented == []


def test_spot_checks(spec: dict[str, Any]) -> None:
    def answer(method: str, path: str, code: str = "200", media: str = JSON) -> dict[str, Any]:
        return resolve(spec, spec["paths"][path][method]["responses"][code]["content"][media]["schema"])

    lut = answer("get", "/v1/luts/{lut_id}")
    assert {"id", "status", "meta", "n_keys", "n_measured", "coverage", "progress", "calibration", "revision",
            "created"} == set(lut["properties"])
    assert answer("get", "/healthz", "503")["title"] == "HealthOut"
    assert answer("post", "/v1/devices", "201")["required"][-1] == "token"
    export = spec["paths"]["/v1/luts/{lut_id}/export"]["get"]["responses"]["200"]["content"]
    assert set(export) == {JSON, "application/yaml"} and export["application/yaml"]["schema"]["type"] == "string"
    beats = answer("post", "/v1/jobs/heartbeat")["properties"]["leases"]["items"]["anyOf"]
    assert {resolve(spec, b)["title"] for b in beats} == {"LeaseKeptOut", "LeaseLostOut"}
    assert answer("post", "/v1/predict")["title"] == "PredictOut"  # the one model declared before


def test_the_stats_model_is_latency_stats() -> None:
    """A field LatencyStats gains must be declared too, else the answers would drop it."""
    assert list(StatsOut.__annotations__) == [f.name for f in dataclasses.fields(LatencyStats)]


def _documented_fields(spec: dict[str, Any], method: str, path: str, code: str = "200") -> set[str]:
    schema = spec["paths"][path][method]["responses"][code]["content"][JSON]["schema"]
    return set(resolve(spec, schema)["properties"])


def test_answers_hold_the_documented_fields(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    dev = client.post("/v1/devices", json={"name": "d1", "facts": {"os": "x"}}, headers=ADMIN_H)
    assert set(dev.json()) == _documented_fields(spec, "post", "/v1/devices", "201")
    camp = client.post("/v1/campaigns", json={"space": {"space": "nb201"}, "device": "d1", "backend": "b"},
                       headers=ADMIN_H)
    assert set(camp.json()) == _documented_fields(spec, "post", "/v1/campaigns", "201")
    lut = client.get(f"/v1/luts/{camp.json()['lut_id']}").json()
    assert set(lut) == _documented_fields(spec, "get", "/v1/luts/{lut_id}")
    lut_schema = resolve(spec, spec["paths"]["/v1/luts/{lut_id}"]["get"]["responses"]["200"]["content"][JSON]["schema"])
    assert set(lut["meta"]) == set(resolve(spec, lut_schema["properties"]["meta"])["properties"])
    token = {"Authorization": f"Bearer {dev.json()['token']}"}
    job = client.post("/v1/jobs/lease", json={"device": "d1", "backend": "b"}, headers=token).json()["jobs"][0]
    job_schema = spec["components"]["schemas"]["JobOut"]
    assert set(job) == set(job_schema["properties"])
    stats = {"count": 2, "mean_ms": 1.0, "std_ms": 0.1, "median_ms": 1.0}
    done = client.post(f"/v1/jobs/{job['id']}/result", json={"idempotency_key": "k", "stats": stats}, headers=token)
    assert set(done.json()) == _documented_fields(spec, "post", "/v1/jobs/{job_id}/result")
    assert done.json()["stats"] == {**stats, "noisy": False}  # absent stats fields stay absent, not null
    health = client.get("/healthz").json()
    assert set(health) == _documented_fields(spec, "get", "/healthz")
