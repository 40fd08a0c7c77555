"""Hostile input a review of issue 16's fixes found (calibration, free text, resolution spaces, leases).

Every REST test runs on SQLite and PostgreSQL (the ``client``/``db_url`` fixtures): the bad request
is a 422 naming what is wrong, nothing is stored, and the LUT keeps working afterwards.
"""

from __future__ import annotations

import json
import logging
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from fastapi.routing import APIRoute
from sqlalchemy import func, select, update

from budgetnas.core.errors import DataFileError, DeviceUnavailableError
from budgetnas.core.text import is_printable, make_printable, printable_problem
from budgetnas.db.models import Job, Lut, LutEntry, ModelMeasurement
from budgetnas.db.session import Database
from budgetnas.device_agents.agent import Agent, AgentConfig
from budgetnas.device_agents.backends import Backend, BackendOptions, JobSpec, Measured
from budgetnas.lut_server.params import Printable
from budgetnas.lut_server.routes import ROUTERS
from budgetnas.luts.lut import LUT, LatencyStats, LUTMeta
from budgetnas.spaces import get_space
from tests.request_types import has_validator, unchecked
from tests.server_support import *  # noqa: F403
from tests.server_support import ADMIN_H

NB201 = {"space": "nb201"}


def counts(db_url: str) -> tuple[int, ...]:
    db = Database(db_url)
    try:
        with db.session() as s:
            return tuple(s.scalar(select(func.count()).select_from(t)) or 0 for t in (Lut, LutEntry, ModelMeasurement, Job))
    finally:
        db.dispose()


def agent(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def register(c: Any, name: str = "dev1") -> dict[str, str]:
    r = c.post("/v1/devices", json={"name": name, "facts": {"cpu": "x"}}, headers=ADMIN_H)
    assert r.status_code == 201, r.text
    return agent(r.json()["token"])


def import_nb201(c: Any, entry_samples_ms: list[float], device: str = "dev1") -> int:
    sp = get_space("nb201")
    lut = LUT(LUTMeta(space=sp.describe(), device=device, backend="ort-cpu"),
              {k: LatencyStats.from_samples(entry_samples_ms) for k in sp.all_block_keys()})
    r = c.post("/v1/luts/import", json={"format": "json", "content": json.dumps(lut.to_json_dict())}, headers=ADMIN_H)
    assert r.status_code == 201, r.text
    return int(r.json()["id"])


def measure_models(c: Any, tok: dict[str, str], lut_id: int, n: int,
                   median_ms: float | Callable[[str], float]) -> list[str]:
    """Enqueue ``n`` whole models of a LUT and post each one's result (``median_ms``, or of the arch)."""
    r = c.post(f"/v1/luts/{lut_id}/campaign", json={"validation_models": n, "seed": 3}, headers=ADMIN_H)
    assert r.status_code == 201 and r.json()["jobs_created"] == n, r.text
    jobs = c.post("/v1/jobs/lease", json={"device": "dev1", "backend": "ort-cpu", "max_jobs": n},
                  headers=tok).json()["jobs"]
    assert len(jobs) == n and all(j["kind"] == "model" for j in jobs)
    for j in jobs:
        ms = median_ms(j["arch"]) if callable(median_ms) else median_ms
        stats = {"count": 2, "mean_ms": ms, "std_ms": 0.0, "median_ms": ms, "min_ms": ms}
        r = c.post(f"/v1/jobs/{j['id']}/result", json={"idempotency_key": f"k{j['id']}", "stats": stats},
                   headers=tok)
        assert r.status_code == 200, r.text
    return [str(j["arch"]) for j in jobs]


# ---- calibration ---------------------------------------------------------------------------------
@pytest.mark.parametrize("entry_ms,measured_ms,needle", [
    ([1.0, 2.0], 0.0, "measured latency is 0.0 ms"),  # a model that took 0 ms: relative residuals divide by it
    ([0.0, 0.0], 5.0, "raw LUT sum is 0 ms"),  # every raw sum 0: no slope (y / 0)
])
def test_a_degenerate_calibration_is_a_422_and_stores_nothing(client, entry_ms: list[float], measured_ms: float,
                                                              needle: str) -> None:
    tok = register(client)
    lut_id = import_nb201(client, entry_ms)
    archs = measure_models(client, tok, lut_id, 3, measured_ms)
    r = client.post(f"/v1/luts/{lut_id}/calibrate", headers=ADMIN_H)
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert detail.startswith("calibration: ") and needle in detail, detail
    if measured_ms == 0.0:
        assert repr(archs[0]) in detail  # names the model
    # nothing stored: the LUT still has no calibration and still predicts, exports and validates
    assert client.get(f"/v1/luts/{lut_id}").json()["calibration"] is None
    exported = client.get(f"/v1/luts/{lut_id}/export")
    assert exported.status_code == 200 and LUT.from_json_text(exported.text).calibration is None
    r = client.post("/v1/predict", json={"lut": lut_id, "archs": archs})
    assert r.status_code == 200 and len(r.json()["predictions"]) == 3, r.text
    assert client.get(f"/v1/luts/{lut_id}/validation").status_code == 200


# ---- free text: one printable-text constraint ----------------------------------------------------
def _checked(metadata: Any) -> bool:
    return has_validator(metadata, Printable)


def _text_kind(tp: Any, origin: Any) -> str | None:
    if tp is str:
        return "leaf"
    return "skip" if origin is dict else None  # free-form JSON: bounded by BoundedJson (test_hostile_json)


def _open_text(tp: Any, checked: bool, where: str) -> list[str]:
    """Where in a request type a str value is not checked by Printable."""
    return unchecked(tp, Printable, _text_kind, checked, where)


# text that is parsed, never stored or looked up as is (checked by its own parser)
PARSED = {"ImportIn.content", "CheckpointIn.bundle", "PredictIn.archs", "CostIn.keys"}


def test_every_free_text_field_of_every_request_is_printable_text() -> None:
    """One validator (params.Printable, budgetnas.core.text's predicate) on every str of every body, query and path."""
    params = [p for router in ROUTERS for route in router.routes if isinstance(route, APIRoute)
              for p in (*route.dependant.body_params, *route.dependant.query_params, *route.dependant.path_params)]
    open_ = [w for p in params for w in _open_text(p.field_info.annotation, _checked(p.field_info.metadata),
                                                     p.name)]
    # bodies a route reads itself (budgetnas/lut_server/routes/predict.py), declared on its endpoint
    manual = [m for router in ROUTERS for route in router.routes if isinstance(route, APIRoute)
              if (m := getattr(route.endpoint, "body_model", None)) is not None]
    assert manual, "no route declares a body it reads itself"
    open_ += [w for m in manual for w in _open_text(m, False, m.__name__)]
    assert [w for w in open_ if w not in PARSED and w != "sha256"] == [], open_
    assert _open_text(str | None, False, "x") == ["x"]  # the check itself sees an open field
    # LUTMeta refuses exactly what the REST fields refuse: one predicate
    for bad in ("ort\x00cpu", "ort\x1bcpu", "ort\x7f", "ort\ud800", "a\nb"):
        assert not is_printable(bad) and printable_problem(bad) is not None
        with pytest.raises(DataFileError, match=r"meta\.backend"):
            LUTMeta(space=NB201, device="dev1", backend=bad)
    assert is_printable("a\tb\r\nc", multiline=True) and not is_printable("a\x00b", multiline=True)
    # what the agent sends in a failure: control characters (ANSI colours) as U+FFFD, the failure kept
    assert make_printable("\x1b[31mboom\x00\n", multiline=True) == "\ufffd[31mboom\ufffd\n"


BAD_TEXT = ["nul\x00inside", "bell\x07", "esc\x1b[31m", "del\x7f", "new\nline"]


@pytest.mark.parametrize("text", BAD_TEXT)
@pytest.mark.parametrize("path,field", [
    ("/v1/luts", "backend"), ("/v1/luts", "device"), ("/v1/luts", "runtime_version"),
    ("/v1/campaigns", "backend"), ("/v1/campaigns", "runtime_version"),
])
def test_control_characters_in_lut_identity_are_422_naming_the_field(client, db_url, path: str, field: str,
                                                                      text: str) -> None:
    register(client)
    before = counts(db_url)
    body = {"space": NB201, "device": "dev1", "backend": "ort-cpu", field: text}
    r = client.post(path, json=body, headers=ADMIN_H)
    assert r.status_code == 422 and r.json()["detail"].startswith(f"{field}: must be printable text"), r.text
    assert counts(db_url) == before
    assert client.get("/v1/luts").status_code == 200


@pytest.mark.parametrize("field", ["device", "backend", "runtime_version", "column"])
def test_control_characters_in_import_options_are_422(client, db_url, field: str) -> None:
    before = counts(db_url)
    r = client.post("/v1/luts/import", json={"format": "arch-csv", "content": "arch_str,ms\n", field: "x\x00y"},
                    headers=ADMIN_H)
    assert r.status_code == 422 and r.json()["detail"].startswith(f"{field}: must be printable text"), r.text
    assert counts(db_url) == before


def test_control_characters_in_job_calls_are_422_and_the_job_stays_leased(client, db_url) -> None:
    tok = register(client)
    client.post("/v1/campaigns", json={"space": NB201, "device": "dev1", "backend": "ort-cpu"}, headers=ADMIN_H)
    r = client.post("/v1/jobs/lease", json={"device": "dev1", "backend": "ort\x00cpu"}, headers=tok)
    assert r.status_code == 422 and r.json()["detail"].startswith("backend: must be printable text"), r.text
    job = client.post("/v1/jobs/lease", json={"device": "dev1", "backend": "ort-cpu"}, headers=tok).json()["jobs"][0]
    before = counts(db_url)
    stats = {"count": 1, "mean_ms": 1.0, "std_ms": 0.0, "median_ms": 1.0}
    for path, body, field in [
        ("result", {"idempotency_key": "k\x00", "stats": stats}, "idempotency_key"),
        ("fail", {"error": "boom\x00", "lease_id": job["lease_id"]}, "error"),
        ("fail", {"error": "boom", "output": "log\x1b[0m", "lease_id": job["lease_id"]}, "output"),
        ("heartbeat", {"lease_id": "l\x00"}, "lease_id"),
        ("release", {"lease_id": "l\x00"}, "lease_id"),
    ]:
        r = client.post(f"/v1/jobs/{job['id']}/{path}", json=body, headers=tok)
        assert r.status_code == 422 and r.json()["detail"].startswith(f"{field}: must be printable text"), r.text
    assert counts(db_url) == before
    r = client.post(f"/v1/jobs/{job['id']}/heartbeat", json={"lease_id": job["lease_id"]}, headers=tok)
    assert r.status_code == 200 and r.json()["lease_expires"], r.text  # still leased by its holder
    # a multi-line error (a traceback) is text, not a control character
    r = client.post(f"/v1/jobs/{job['id']}/fail", json={"error": "Traceback:\n\tline 1\r\n", "output": "a\nb",
                                                        "lease_id": job["lease_id"]}, headers=tok)
    assert r.status_code == 200, r.text


def test_control_characters_in_lookups_are_422(client) -> None:
    tok = register(client)
    r = client.post("/v1/devices/dev%00/heartbeat", json={}, headers=tok)
    assert r.status_code in (403, 422), r.text  # another device's name: refused before any lookup
    r = client.post("/v1/devices/dev%00/heartbeat", json={}, headers=ADMIN_H)
    assert r.status_code == 422 and r.json()["detail"].startswith("path.name: must be printable text"), r.text
    r = client.get("/v1/accuracy", params={"dataset": "im\x00net"})
    assert r.status_code == 422 and r.json()["detail"].startswith("query.dataset: must be printable text"), r.text
    r = client.post("/v1/accuracy", json={"space": "nb201", "records": [
        {"arch": get_space("nb201").format(get_space("nb201").sample_many(1)[0]), "dataset": "c10", "value": 0.9,
         "source": "paper\x00"}]}, headers=ADMIN_H)
    assert r.status_code == 422 and "source: must be printable text" in r.json()["detail"], r.text


# ---- a space that searches resolution is no LUT's space ------------------------------------------
SEARCHED = {"space": "ofa-mbv3", "width": 1.2, "resolutions": [160, 224]}


def _searched_lut_file() -> str:
    fixed = get_space("ofa-mbv3", width=1.2, resolution=224)
    lut = LUT(LUTMeta(space=get_space("ofa-mbv3", width=1.2, resolutions=[160, 224]).describe(), device="dev1",
                      backend="tflite"),
              {k: LatencyStats.from_samples([1.0, 2.0]) for k in fixed.all_block_keys()})
    return json.dumps(lut.to_json_dict())


@pytest.mark.parametrize("path,body,field", [
    ("/v1/luts", {"space": SEARCHED, "device": "dev1", "backend": "tflite"}, "space.resolutions"),
    ("/v1/campaigns", {"space": SEARCHED, "device": "dev1", "backend": "tflite", "validation_models": 2},
     "space.resolutions"),
    ("/v1/luts/import", {"format": "ofa-yaml", "content": "<yaml>", "space": SEARCHED}, "space.resolutions"),
    ("/v1/luts/import", {"format": "json", "content": "<searched>"}, "space.resolutions"),
])
def test_a_space_searching_resolution_is_refused_for_luts(client, db_url, path: str, body: dict[str, Any],
                                                          field: str) -> None:
    register(client)
    if body.get("content") == "<searched>":
        body = {**body, "content": _searched_lut_file()}
    if body.get("content") == "<yaml>":  # a good OFA file of 224: imported at one resolution it is fine
        keys = get_space("ofa-mbv3", width=1.2, resolution=224).all_block_keys()
        body = {**body, "content": yaml.safe_dump({k: {"count": 10, "mean": 0.5, "std": 0.01} for k in keys})}
    before = counts(db_url)
    r = client.post(path, json=body, headers=ADMIN_H)
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert detail.startswith(f"{field}: a LUT is measured at one resolution") and "--lut-family" in detail, detail
    assert counts(db_url) == before
    # the fixed-resolution space of the same family is a LUT's space
    fixed = {"space": "ofa-mbv3", "width": 1.2, "resolution": 160}
    assert client.post("/v1/luts", json={"space": fixed, "device": "dev1", "backend": "tflite"},
                       headers=ADMIN_H).status_code == 201


# ---- leases: only the holder fails one -----------------------------------------------------------
def test_only_the_lease_holder_fails_a_lease(client, db_url) -> None:
    tok = register(client)
    client.post("/v1/campaigns", json={"space": NB201, "device": "dev1", "backend": "ort-cpu"}, headers=ADMIN_H)
    lease = {"device": "dev1", "backend": "ort-cpu"}
    mine, theirs = (client.post("/v1/jobs/lease", json=lease, headers=tok).json()["jobs"][0] for _ in range(2))
    r = client.post(f"/v1/jobs/{mine['id']}/fail", json={"error": "boom", "lease_id": theirs["lease_id"]},
                    headers=tok)
    assert r.status_code == 409 and "lease_id" in r.json()["detail"], r.text
    r = client.post(f"/v1/jobs/{mine['id']}/fail", json={"error": "boom"}, headers=tok)
    assert r.status_code == 422 and r.json()["detail"].startswith("lease_id: "), r.text
    db = Database(db_url)
    try:
        with db.session() as s:  # the holder's lease is untouched
            job = s.get(Job, mine["id"])
            assert job is not None and (job.state, job.attempts, job.error) == ("leased", 1, None)
    finally:
        db.dispose()
    hb = client.post(f"/v1/jobs/{mine['id']}/heartbeat", json={"lease_id": mine["lease_id"]}, headers=tok)
    assert hb.status_code == 200
    r = client.post(f"/v1/jobs/{mine['id']}/fail", json={"error": "boom", "lease_id": mine["lease_id"]}, headers=tok)
    assert r.status_code == 200 and r.json()["state"] == "queued", r.text
    # the admin may fail any lease without its id
    r = client.post(f"/v1/jobs/{theirs['id']}/fail", json={"error": "stuck"}, headers=ADMIN_H)
    assert r.status_code == 200 and r.json()["state"] == "queued", r.text


class _FailingBackend(Backend):
    """Every measurement fails with a message a real tool may print: ANSI colours and a NUL."""

    name, kind = "test-failing", "cpu"

    def __init__(self) -> None:
        super().__init__(BackendOptions())

    def facts(self) -> dict[str, Any]:
        return {"kind": "cpu"}

    def measure(self, job: JobSpec) -> Measured:
        raise DeviceUnavailableError("\x1b[31mbenchmark crashed\x1b[0m\x00\nsee the log")


def test_the_agent_reports_a_failure_with_its_lease_id_and_printable_text(live, db_url, tmp_path, caplog) -> None:
    token = httpx.post(f"{live.url}/v1/devices", json={"name": "rig"}, headers=ADMIN_H).json()["token"]
    httpx.post(f"{live.url}/v1/campaigns", json={"space": NB201, "device": "rig", "backend": "test-failing"},
               headers=ADMIN_H)
    config = AgentConfig(server=live.url, token=token, name="rig", backend="test-failing", lease_seconds=30,
                         poll_s=0.05, max_backoff_s=0.2, idle_exit_s=5, max_jobs=1, spool=str(tmp_path / "spool"))
    saved = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        with caplog.at_level(logging.INFO, logger="budgetnas.agent"):
            Agent(config, _FailingBackend()).run()
    finally:
        for sig, handler in saved.items():
            signal.signal(sig, handler)
    assert "failure reported (now queued)" in caplog.text and "dropped" not in caplog.text, caplog.text
    db = Database(db_url)
    try:
        with db.session() as s:
            errors = [e for e in s.scalars(select(Job.error)) if e]
    finally:
        db.dispose()
    assert len(errors) == 1 and "\ufffd[31mbenchmark crashed" in errors[0] and "\x00" not in errors[0], errors
    assert "\nsee the log" in errors[0]  # newlines are text


# ---- README: the fixed bounds are the code's -----------------------------------------------------
def test_readme_names_the_fixed_bounds_the_code_has_and_the_ofa_predictor() -> None:
    from budgetnas.core.jsonlimits import MAX_BYTES, MAX_DEPTH
    from budgetnas.lut_server.params import STATS_MAX_BYTES
    from budgetnas.lut_server.predictor import ARCH_CACHE_SIZE
    from budgetnas.lut_server.routes.checkpoints import GENERATORS_KEPT
    from budgetnas.luts.lut import MAX_NESTING

    text = (Path(__file__).parent.parent / "README.md").read_text()
    bounds = " ".join(text.split("- **Fixed bounds**", 1)[1].split("\n- ", 1)[0].split())
    assert "not settings" in bounds
    for needle in (f"{MAX_DEPTH} levels deep and {MAX_BYTES // 1024} KiB", f"stats {STATS_MAX_BYTES >> 20} MiB",
                   f"nested at most {MAX_NESTING} levels", f"at most {ARCH_CACHE_SIZE:,} canonical architectures",
                   f"at most {GENERATORS_KEPT} generator bundles"):
        assert needle in bounds, needle
    accuracy = " ".join(text.split("\n- Accuracy: ", 1)[1].split("\n- ", 1)[0].split())
    assert "`--accuracy-predictor ofa:PATH.npz`" in accuracy and "--max-queries" in accuracy, accuracy


def test_a_calibration_stored_before_its_bounds_is_a_422_and_calibrating_again_replaces_it(client, db_url) -> None:
    tok = register(client)
    lut_id = import_nb201(client, [1.0, 2.0])
    def measured(arch: str) -> float:  # the raw sum, slower and offset: a fit with a positive slope
        raw = client.post("/v1/predict", json={"lut": lut_id, "archs": [arch], "calibrated": False}).json()
        return 1.5 * float(raw["predictions"][0]["latency_ms"]) + 0.5

    archs = measure_models(client, tok, lut_id, 3, measured)
    bad = {"slope": 1.0, "intercept": 0.0, "n_models": 3, "rel_residual_std": 0.1, "group_scales": {"input:x": -1.0}}
    db = Database(db_url)
    try:
        with db.session(write=True) as s:  # storable on both databases, refused by Calibration
            s.execute(update(Lut).where(Lut.id == lut_id).values(calibration=bad, revision=Lut.revision + 1))
    finally:
        db.dispose()
    r = client.post("/v1/predict", json={"lut": lut_id, "archs": archs})
    assert r.status_code == 422 and "calibration.group_scales" in r.json()["detail"], r.text
    r = client.post(f"/v1/luts/{lut_id}/calibrate", headers=ADMIN_H)
    assert r.status_code == 200, r.text
    scales = r.json()["calibration"].get("group_scales", {})  # the grouped fit: the bad scale is gone
    assert "input:x" not in scales and all(v > 0 for v in scales.values()), r.text
    assert client.post("/v1/predict", json={"lut": lut_id, "archs": archs}).status_code == 200
    assert client.get(f"/v1/luts/{lut_id}/export").status_code == 200
