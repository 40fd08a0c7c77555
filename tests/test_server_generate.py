"""Checkpoints and /v1/generate: the server answers exactly what the numpy bundle answers."""

from __future__ import annotations

import base64

import pytest

from tests.server_support import *  # noqa: F403
from tests.server_support import ADMIN_H, rewritten_bundle, tiny_nb201_bundle


@pytest.fixture(scope="module")
def bundle_bytes() -> bytes:
    pytest.importorskip("torch")
    return tiny_nb201_bundle()


def test_checkpoint_upload_and_generate(client, bundle_bytes) -> None:
    from budgetnas.generator.bundle import GeneratorBundle

    ref = GeneratorBundle.from_bytes(bundle_bytes)
    b64 = base64.b64encode(bundle_bytes).decode()
    r = client.post("/v1/checkpoints", json={"name": "nb201-gen", "bundle": b64}, headers=ADMIN_H)
    assert r.status_code == 201, r.text
    ck = r.json()
    assert ck["meta"]["budget_range"] == ref.meta["budget_range"]
    assert client.post("/v1/checkpoints", json={"name": "nb201-gen", "bundle": b64}, headers=ADMIN_H).status_code == 409
    listed = client.get("/v1/checkpoints").json()["checkpoints"]
    assert [c["name"] for c in listed] == ["nb201-gen"]
    lo, hi = ref.meta["budget_range"]
    budget = (lo + hi) / 2
    for ref_id in (ck["id"], "nb201-gen"):  # by id or by name; the second call uses the cached bundle
        r = client.post("/v1/generate", json={"checkpoint": ref_id, "budget": budget, "samples": 3, "seed": 7})
        assert r.status_code == 200, r.text
        assert r.json() == ref.generate(budget, samples=3, seed=7)
    r = client.post("/v1/generate", json={"checkpoint": ck["id"], "budget": lo / 10})
    assert r.status_code == 422 and "budget" in r.json()["detail"]
    for bad_budget in ("NaN", "Infinity", "-Infinity", "-1", "\"fast\""):
        r = client.post("/v1/generate", content=f'{{"checkpoint": {ck["id"]}, "budget": {bad_budget}}}',
                        headers={"content-type": "application/json"})
        assert r.status_code == 422 and "budget" in r.json()["detail"], (bad_budget, r.text)
    old = base64.b64encode(rewritten_bundle(bundle_bytes, version=1)).decode()
    r = client.post("/v1/checkpoints", json={"name": "old", "bundle": old}, headers=ADMIN_H)
    assert r.status_code == 422 and "bundle" in r.json()["detail"] and "v2" in r.json()["detail"]
    r = client.post("/v1/checkpoints", json={"name": "alien", "bundle": base64.b64encode(
        rewritten_bundle(bundle_bytes, space={"space": "nope"})).decode()}, headers=ADMIN_H)
    assert r.status_code == 422 and "nope" in r.json()["detail"]
    assert [c["name"] for c in client.get("/v1/checkpoints").json()["checkpoints"]] == ["nb201-gen"]
    bad = base64.b64encode(b"not a bundle").decode()
    r = client.post("/v1/checkpoints", json={"name": "junk", "bundle": bad}, headers=ADMIN_H)
    assert r.status_code == 422 and "bundle" in r.json()["detail"]
