"""The dashboard in headless Debian Chromium (Playwright with executable_path) against a live server.

Data reaches the server the way it does in production (device registration, a campaign whose jobs
an agent leases and completes, a generator bundle upload); the page must load without console
errors and show the numbers the API returns.
"""

from __future__ import annotations

import base64
import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.server_support import ADMIN_H, Live, start_live, tiny_nb201_bundle

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
sync_api = pytest.importorskip("playwright.sync_api")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="Debian chromium not installed (.ci/run installs it)")

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture(scope="module")
def populated(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Live, dict]]:
    from budgetnas.db.session import migrate

    url = f"sqlite:///{tmp_path_factory.mktemp('dash') / 'dash.db'}"
    migrate(url)
    live = start_live(url)
    c = httpx.Client(base_url=live.url, timeout=30)
    try:
        dev = c.post("/v1/devices", json={"name": "bench-cpu", "facts": {"cpu": "test cpu", "cores": 2}},
                     headers=ADMIN_H).json()
        c.post("/v1/devices", json={"name": "idle-phone", "facts": {"model": "Pixel"}}, headers=ADMIN_H)
        agent = {"Authorization": f"Bearer {dev['token']}"}
        camp = c.post("/v1/campaigns", json={"space": {"space": "nb201"}, "device": "bench-cpu",
                                             "backend": "ort-cpu", "validation_models": 4, "seed": 3},
                      headers=ADMIN_H).json()
        c.post("/v1/devices/bench-cpu/heartbeat", json={}, headers=agent)
        rng = np.random.default_rng(0)
        done = 0
        # complete every job but two, so the campaign shows partial progress
        while True:
            jobs = c.post("/v1/jobs/lease", json={"device": "bench-cpu", "backend": "ort-cpu", "max_jobs": 4},
                          headers=agent).json()["jobs"]
            if not jobs:
                break
            for job in jobs:
                if done >= camp["jobs_created"] - 2:
                    c.post(f"/v1/jobs/{job['id']}/release", json={"lease_id": job["lease_id"]}, headers=agent)
                    continue
                samples = list(rng.uniform(1.0, 3.0, 5) * (10 if job["kind"] == "model" else 1))
                stats = {"count": 5, "mean_ms": float(np.mean(samples)), "std_ms": float(np.std(samples)),
                         "median_ms": float(np.median(samples)), "min_ms": float(np.min(samples)),
                         "samples_ms": samples}
                r = c.post(f"/v1/jobs/{job['id']}/result", json={"idempotency_key": f"k{job['id']}", "stats": stats},
                           headers=agent)
                assert r.status_code == 200, r.text
                done += 1
            if done >= camp["jobs_created"] - 2:
                break
        b64 = base64.b64encode(tiny_nb201_bundle()).decode()
        assert c.post("/v1/checkpoints", json={"name": "nb201-demo", "bundle": b64}, headers=ADMIN_H).status_code == 201
        yield live, {"lut_id": camp["lut_id"]}
    finally:
        c.close()
        live.stop()


@pytest.fixture(scope="module")
def page(populated: tuple[Live, dict], tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[object, list[str]]]:
    live, _ = populated
    errors: list[str] = []
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        pg = browser.new_page(viewport={"width": 1280, "height": 1000})
        pg.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        pg.on("pageerror", lambda e: errors.append(str(e)))
        pg.goto(f"{live.url}/dashboard/")
        pg.wait_for_selector("body[data-loaded=true]", timeout=60_000)
        out = Path(str(tmp_path_factory.mktemp("shots"))) / "dashboard.png"
        pg.screenshot(path=str(out), full_page=True)
        yield pg, errors
        browser.close()


def test_page_loads_without_console_errors(page) -> None:
    pg, errors = page
    assert pg.title() == "budgetnas dashboard"
    assert pg.inner_text("[data-testid=health]") == "server ok, db ok"
    assert errors == []


def test_devices_match_api(page, populated) -> None:
    pg, _ = page
    live, _ = populated
    api = httpx.get(f"{live.url}/v1/devices").json()["devices"]
    rows = pg.query_selector_all("[data-testid=devices] tbody tr[data-device]")
    assert sorted(r.get_attribute("data-device") for r in rows) == sorted(d["name"] for d in api)
    assert pg.inner_text("tr[data-device=bench-cpu] td:nth-child(4)") == "online"
    assert pg.inner_text("tr[data-device=idle-phone] td:nth-child(4)") == "offline"


def test_lut_coverage_and_progress_match_api(page, populated) -> None:
    pg, _ = page
    live, info = populated
    lut = httpx.get(f"{live.url}/v1/luts/{info['lut_id']}").json()
    shown = pg.inner_text(f"[data-testid=coverage-{lut['id']}]")
    assert shown == f"{lut['n_measured']}/{lut['n_keys']} ({100 * lut['coverage']:.1f}%)"
    p = lut["progress"]
    total = sum(p[k] for k in ("queued", "leased", "done", "failed"))
    assert f" {p['done']}/{total}" in pg.inner_text(f"tr[data-lut='{lut['id']}'] td:nth-child(9)")
    assert 0 < p["done"] < total


def test_fidelity_plot_has_one_point_per_measured_model(page, populated) -> None:
    pg, _ = page
    live, info = populated
    models = httpx.get(f"{live.url}/v1/luts/{info['lut_id']}/validation").json()["models"]
    assert len(models) >= 1
    assert len(pg.query_selector_all("[data-testid=fidelity] circle.point")) == len(models)
    calibrated = httpx.get(f"{live.url}/v1/luts/{info['lut_id']}").json()["calibration"] is not None
    assert ("raw LUT sum" in pg.inner_text("[data-testid=fidelity-note]")) != calibrated


def test_frontier_points_are_what_generate_returns(page, populated) -> None:
    pg, _ = page
    live, _ = populated
    ck = httpx.get(f"{live.url}/v1/checkpoints").json()["checkpoints"][0]
    lo, hi = ck["meta"]["budget_range"]
    expected = []
    for i in range(8):
        r = httpx.post(f"{live.url}/v1/generate", json={"checkpoint": ck["id"], "budget": lo + (hi - lo) * (i + 1) / 8, "seed": 0},
                       timeout=120)
        expected.append([r.json()["latency_ms"], r.json()["accuracy"]])
    shown = json.loads(pg.get_attribute("[data-testid=frontier]", "data-points") or "[]")
    assert len(shown) == 8
    assert np.allclose(np.asarray(shown, float), np.asarray(expected, float))
    assert len(pg.query_selector_all("[data-testid=frontier] circle.point")) == 8


def test_dashboard_sends_a_stored_read_token_when_reads_need_one(page, tmp_path: Path) -> None:
    """Issue 16 item 12: under BUDGETNAS_READS_REQUIRE_TOKEN the page asks for a token, keeps it, sends it."""
    from budgetnas.db.session import migrate

    url = f"sqlite:///{tmp_path / 'closed.db'}"
    migrate(url)
    live = start_live(url, reads_require_token=True)
    try:
        r = httpx.post(f"{live.url}/v1/devices", json={"name": "locked-cpu", "facts": {"cpu": "x"}}, headers=ADMIN_H)
        assert r.status_code == 201
        assert httpx.get(f"{live.url}/v1/devices").status_code == 401
        context = page[0].context.browser.new_context()  # the module's browser; its own localStorage
        try:
            pg = context.new_page()
            pg.goto(f"{live.url}/dashboard/")
            pg.wait_for_function("document.querySelector('[data-testid=health]').textContent.includes('token')")
            assert pg.inner_text("[data-testid=health]") == "this server needs a read token"
            pg.fill("[data-testid=token]", ADMIN_H["Authorization"].removeprefix("Bearer "))
            pg.click("[data-testid=token-form] button")
            pg.wait_for_selector("body[data-loaded=true]", timeout=60_000)
            assert pg.query_selector("tr[data-device=locked-cpu]") is not None
            pg.reload()  # the token was kept in localStorage
            pg.wait_for_selector("body[data-loaded=true]", timeout=60_000)
            assert pg.query_selector("tr[data-device=locked-cpu]") is not None
        finally:
            context.close()
    finally:
        live.stop()
