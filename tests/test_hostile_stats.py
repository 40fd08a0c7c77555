"""Hostile latency stats, imports and CLI input (issue 16, items 4, 5, 10, 11) on SQLite and PostgreSQL.

Every bad value is refused where it enters (a 422 naming the field, ``error:`` + exit 2 on the CLI),
nothing is stored or written, and the LUT keeps working afterwards: one validated stats type
(``budgetnas.luts.lut.LatencyStats``) guards results, imports and LUT files alike.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import func, select

from budgetnas.cli.main import run
from budgetnas.db.models import Lut, LutEntry, ModelMeasurement
from budgetnas.db.session import Database
from budgetnas.luts.lut import LUT, LatencyStats, LUTMeta
from budgetnas.spaces import get_space
from tests.server_support import *  # noqa: F403
from tests.server_support import ADMIN_H

NB201 = {"space": "nb201"}
GOOD = {"count": 3, "mean_ms": 1.0, "std_ms": 0.1, "median_ms": 1.0, "min_ms": 0.9, "p90_ms": 1.1,
        "p99_ms": 1.1, "cv": 0.1, "samples_ms": [0.9, 1.0, 1.1]}


# ---- helpers -------------------------------------------------------------------------------------
def counts(db_url: str) -> tuple[int, int, int]:
    db = Database(db_url)
    try:
        with db.session() as s:
            return (s.scalar(select(func.count()).select_from(Lut)) or 0,
                    s.scalar(select(func.count()).select_from(LutEntry)) or 0,
                    s.scalar(select(func.count()).select_from(ModelMeasurement)) or 0)
    finally:
        db.dispose()


def raw_post(client: Any, path: str, text: str, headers: dict[str, str]) -> Any:
    """POST a JSON text as is (NaN, Infinity and 1e400 are what Python's json reads, not what httpx writes)."""
    return client.post(path, content=text.encode(), headers={**headers, "Content-Type": "application/json"})


def leased_job(client: Any, kind: str = "block") -> tuple[dict[str, Any], dict[str, str], int]:
    tok = client.post("/v1/devices", json={"name": "dev1", "facts": {}}, headers=ADMIN_H).json()["token"]
    camp = client.post("/v1/campaigns", json={"space": NB201, "device": "dev1", "backend": "ort-cpu",
                                              "validation_models": 1, "seed": 1}, headers=ADMIN_H).json()
    agent = {"Authorization": f"Bearer {tok}"}
    while True:
        jobs = client.post("/v1/jobs/lease", json={"device": "dev1", "backend": "ort-cpu", "max_jobs": 100},
                           headers=agent).json()["jobs"]
        assert jobs, f"no {kind} job"
        for j in jobs:
            if j["kind"] == kind:
                return j, agent, camp["lut_id"]


def small_nb201_lut(**stats_over: Any) -> dict[str, Any]:
    sp = get_space("nb201")
    lut = LUT(LUTMeta(space=sp.describe(), device="dev1", backend="ort-cpu"),
              {k: LatencyStats.from_samples([1.0, 2.0]) for k in sp.all_block_keys()})
    d = lut.to_json_dict()
    first = sorted(d["entries"])[0]
    d["entries"][first] = {**d["entries"][first], **stats_over}
    return d


def ofa_yaml(**first_over: Any) -> str:
    sp = get_space("ofa-mbv3", width=1.2, resolution=224)
    entries = {k: {"count": 10, "mean": 0.5, "std": 0.01} for k in sp.all_block_keys()}
    first = sorted(entries)[0]
    entries[first] = {**entries[first], **first_over}
    return yaml.safe_dump(entries)


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = run(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def assert_cli_error(capsys: pytest.CaptureFixture[str], needle: str, *args: str) -> str:
    code, _, err = cli(capsys, *args)
    assert code == 2, err
    assert err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    assert needle in err, err
    return err


# ---- item 4: results ------------------------------------------------------------------------------
BAD_RESULT_STATS = [
    ('"median_ms": NaN', "median_ms"),
    ('"median_ms": -1.0', "median_ms"),
    ('"min_ms": -0.5', "min_ms"),
    ('"p90_ms": NaN', "p90_ms"),
    ('"cv": NaN', "cv"),
    ('"cv": -1', "cv"),
    ('"std_ms": Infinity', "std_ms"),
    ('"std_ms": 1e400', "std_ms"),  # Python's json reads 1e400 as inf
    ('"mean_ms": 1e999999', "mean_ms"),
    ('"mean_ms": 1' + "0" * 400, "mean_ms"),  # an int too big for a float: was an uncaught OverflowError
    ('"count": 1' + "0" * 400, "count"),
    ('"count": 1.5', "count"),
    ('"count": true', "count"),
    ('"mean_ms": "1.0"', "mean_ms"),
    ('"samples_ms": [0.9, NaN, 1.1]', "samples_ms"),
    ('"samples_ms": [0.9, -1.0, 1.1]', "samples_ms"),
    ('"samples_ms": [0.9, 1.0]', "samples_ms"),  # 2 samples, count 3
    ('"min_ms": 1.05', "min_ms"),  # above the median
    ('"p99_ms": 1.0', "p90_ms"),  # p90 1.1 above p99
    ('"warmup_runs": -1', "warmup_runs"),
    ('"noisy": "yes"', "noisy"),
]


def _stats_text(override: str) -> str:
    field = override.split(":", 1)[0].strip('" ')
    base = {k: v for k, v in GOOD.items() if k != field}
    return "{" + json.dumps(base)[1:-1] + ", " + override + "}"


@pytest.mark.parametrize("override,field", BAD_RESULT_STATS)
def test_bad_result_stats_are_a_422_naming_the_field(client, db_url, override: str, field: str) -> None:
    job, agent, lut_id = leased_job(client)
    before = counts(db_url)
    body = '{"idempotency_key": "k1", "stats": ' + _stats_text(override) + "}"
    r = raw_post(client, f"/v1/jobs/{job['id']}/result", body, agent)
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    # NaN/Infinity may be refused by the request model's JSON bounds before the stats type sees them
    assert detail.startswith("stats") and (field in detail or "not a JSON number" in detail), detail
    assert counts(db_url) == before
    # the job is still leased: a good result is stored and the LUT exports
    ok = client.post(f"/v1/jobs/{job['id']}/result", json={"idempotency_key": "k2", "stats": GOOD}, headers=agent)
    assert ok.status_code == 200 and ok.json()["stored"] is True, ok.text
    exported = client.get(f"/v1/luts/{lut_id}/export")
    assert exported.status_code == 200 and job["key"] in LUT.from_json_text(exported.text).entries


@pytest.mark.parametrize("kind", ["block", "model"])
def test_result_without_the_luts_statistic_is_refused(client, db_url, kind: str) -> None:
    """A median LUT given stats without a median: storing them would break its export for good."""
    job, agent, lut_id = leased_job(client, kind)
    assert client.get(f"/v1/luts/{lut_id}").json()["meta"]["statistic"] == "median"
    before = counts(db_url)
    r = client.post(f"/v1/jobs/{job['id']}/result", json={"idempotency_key": "k", "stats": {
        "count": 3, "mean_ms": 1.0, "std_ms": 0.1, "min_ms": 0.9}}, headers=agent)
    assert r.status_code == 422 and "median_ms" in r.json()["detail"], r.text
    assert counts(db_url) == before
    assert client.get(f"/v1/luts/{lut_id}/export").status_code == 200
    assert client.get(f"/v1/luts/{lut_id}/validation").status_code == 200


def test_a_bad_row_stored_before_the_bounds_is_a_422_naming_it_not_a_500(client, db_url) -> None:
    job, agent, lut_id = leased_job(client)
    assert client.post(f"/v1/jobs/{job['id']}/result", json={"idempotency_key": "k", "stats": GOOD},
                       headers=agent).status_code == 200
    db = Database(db_url)
    with db.session(write=True) as s:  # as an older server let it in
        row = s.scalar(select(LutEntry).where(LutEntry.lut_id == lut_id))
        assert row is not None
        row.stats = {**row.stats, "median_ms": -1.0}
        s.execute(select(Lut).where(Lut.id == lut_id)).scalar_one().revision += 1
    db.dispose()
    r = client.get(f"/v1/luts/{lut_id}/export")
    assert r.status_code == 422 and job["key"] in r.json()["detail"] and "median_ms" in r.json()["detail"], r.text


# ---- items 5 and 10: imports ------------------------------------------------------------------------
BAD_OFA = [
    ({"mean": -0.5}, "mean_ms"),
    ({"mean": float("nan")}, "mean_ms"),
    ({"std": float("inf")}, "std_ms"),
    ({"count": 1.5}, "count"),
    ({"count": float("inf")}, "count"),
    ({"count": 10**30}, "count"),
    ({"count": 0}, "count"),
    ({"mean": "fast"}, "mean_ms"),
]


@pytest.mark.parametrize("over,field", BAD_OFA)
def test_bad_ofa_yaml_import_is_refused_and_stores_nothing(client, db_url, over: dict[str, Any], field: str) -> None:
    before = counts(db_url)
    r = client.post("/v1/luts/import", json={"format": "ofa-yaml", "content": ofa_yaml(**over)}, headers=ADMIN_H)
    assert r.status_code == 422 and field in r.json()["detail"] and "entry" in r.json()["detail"], r.text
    assert counts(db_url) == before


def test_good_ofa_yaml_import_reloads(client) -> None:
    r = client.post("/v1/luts/import", json={"format": "ofa-yaml", "content": ofa_yaml(mean=1e-3)}, headers=ADMIN_H)
    assert r.status_code == 201, r.text
    exported = client.get(f"/v1/luts/{r.json()['id']}/export")
    assert exported.status_code == 200 and len(LUT.from_json_text(exported.text).entries) == r.json()["n_measured"]


def _dup_json_key() -> str:
    d = small_nb201_lut()
    first = sorted(d["entries"])[0]
    text = json.dumps(d)
    return text.replace('"entries": {', '"entries": {' + json.dumps(first) + ": "
                        + json.dumps(d["entries"][first]) + ", ", 1)


def _arch_csv(dup_spelling: bool) -> str:
    sp = get_space("nb201")
    archs = [sp.format(a) for a in sp.sample_many(8, seed=3)]
    rows = [f"{a},{1.0 + i / 10}" for i, a in enumerate(archs)]
    # the same architecture again, optionally spelt another way (padded: parse strips it)
    again = f" {archs[2]}  " if dup_spelling else archs[2]
    return "arch_str,latency_ms\n" + "\n".join([*rows, f"{again},9.0"]) + "\n"


BAD_IMPORTS = [
    ("json", json.dumps(small_nb201_lut(median_ms=None)).replace('"median_ms": null, ', ""), "median_ms"),
    ("json", _dup_json_key(), "duplicate key"),
    ("json", json.dumps(small_nb201_lut(count=float("inf"))), "Infinity"),
    ("json", json.dumps(small_nb201_lut(count=1.5)), "count"),
    ("json", json.dumps(small_nb201_lut(median_ms=-2.0)), "median_ms"),
    ("json", "[" * 100_000, "nested"),
    ("json", json.dumps(small_nb201_lut()).replace('"environment": {}', '"environment": ' + "[" * 70 + "]" * 70),
     "nested deeper"),
    ("json", json.dumps(small_nb201_lut()).replace('"backend": "ort-cpu"', '"backend": "' + "b" * 101 + '"'),
     "meta.backend"),  # PostgreSQL refused it (500), SQLite stored it
    ("json", json.dumps(small_nb201_lut()).replace('"device": "dev1"', '"device": "a\\u0000b"'), "meta.device"),
    ("json", json.dumps(small_nb201_lut()).replace('"batch": 1', '"batch": "1"'), "meta.batch"),
    ("ofa-yaml", ofa_yaml() + ofa_yaml().splitlines()[0] + "\n  count: 1\n  mean: 1.0\n  std: 0.1\n", "duplicate key"),
    ("ofa-yaml", "a: " + "[" * 100_000, "nested"),
    ("ofa-yaml", "k: 2020-13-45\n", "YAML"),  # a date PyYAML cannot build: was a ValueError
    ("arch-csv", _arch_csv(dup_spelling=False), "repeats line 4"),
    ("arch-csv", _arch_csv(dup_spelling=True), "repeats line 4"),
    ("arch-csv", "arch_str,latency_ms,latency_ms\nx,1,2\n", "repeats column"),
    ("arch-csv", "arch_str,latency_ms\n" + "x" * 200_000 + ",1\n", "CSV"),
]


@pytest.mark.parametrize("fmt,content,needle", BAD_IMPORTS, ids=[f"{f}-{i}" for i, (f, _, _) in enumerate(BAD_IMPORTS)])
def test_unusable_or_ambiguous_imports_are_refused(client, db_url, fmt: str, content: str, needle: str) -> None:
    before = counts(db_url)
    r = client.post("/v1/luts/import", json={"format": fmt, "content": content}, headers=ADMIN_H)
    assert r.status_code == 422 and needle in r.json()["detail"], r.text[:500]
    assert counts(db_url) == before


def test_the_unbroken_imports_still_import(client) -> None:
    d = small_nb201_lut()
    assert client.post("/v1/luts/import", json={"format": "json", "content": json.dumps(d)},
                       headers=ADMIN_H).status_code == 201
    r = client.post("/v1/luts/import", json={"format": "arch-csv", "content": _arch_csv(False).rsplit("\n", 2)[0]},
                    headers=ADMIN_H)
    assert r.status_code == 201, r.text


# ---- items 5 and 11: the CLI ------------------------------------------------------------------------
def test_cli_ofa_import_of_bad_yaml_writes_nothing(tmp_path: Path, capsys) -> None:
    bad, out = tmp_path / "bad.yaml", tmp_path / "x.json"
    for over, field in BAD_OFA:
        bad.write_text(ofa_yaml(**over))
        assert_cli_error(capsys, field, "lut", "import", str(bad), "--out", str(out))
        assert not out.exists()
    good = tmp_path / "good.yaml"
    good.write_text(ofa_yaml())
    assert cli(capsys, "lut", "import", str(good), "--out", str(out))[0] == 0
    code, text, err = cli(capsys, "lut", "export", str(out))  # what import writes, export reads
    assert code == 0 and yaml.safe_load(text), err


@pytest.mark.parametrize("stats,needle", [
    ({"count": float("inf")}, "Infinity"), ({"count": 1.5}, "count"), ({"median_ms": float("nan")}, "NaN"),
    ({"std_ms": -1.0}, "std_ms"),
])
def test_cli_json_import_of_bad_stats_writes_nothing(tmp_path: Path, capsys, stats: dict[str, Any],
                                                     needle: str) -> None:
    src, out = tmp_path / "in.json", tmp_path / "x.json"
    src.write_text(json.dumps(small_nb201_lut(**stats)))
    assert_cli_error(capsys, needle, "lut", "import", str(src), "--out", str(out))
    assert not out.exists()
    assert_cli_error(capsys, needle, "lut", "export", str(src))


@pytest.mark.parametrize("name,content,needle", [
    ("lut.json", b"\xff\xfe{}", "not UTF-8"),
    ("lut.yaml", b"k: \xff\n", "not UTF-8"),
    ("lut.csv", b"arch_str,latency_ms\n\xff,1\n", "not UTF-8"),
    ("deep.json", b"[" * 100_000, "nested"),
    ("deep.yaml", b"a: " + b"[" * 100_000, "nested"),
    ("dup.yaml", b"k: {count: 1, mean: 1.0, std: 0.0}\nk: {count: 1, mean: 2.0, std: 0.0}\n", "duplicate key 'k'"),
])
def test_cli_bad_files_are_one_error_line(tmp_path: Path, capsys, name: str, content: bytes, needle: str) -> None:
    p = tmp_path / name
    p.write_bytes(content)
    assert_cli_error(capsys, needle, "lut", "import", str(p), "--out", str(tmp_path / "o.json"))
    if name.endswith(".json"):
        assert_cli_error(capsys, needle, "lut", "export", str(p))
    assert not (tmp_path / "o.json").exists()


@pytest.mark.parametrize("args,needle", [
    (["lut", "export", "--bogus"], "No such option: --bogus"),
    (["lut", "export"], "Missing argument"),
    (["lut", "show", "abc", "--server", "http://x"], "Invalid value"),
    (["serve", "--port", "0"], "--port"),
    (["no-such-command"], "No such command"),
])
def test_cli_usage_errors_are_error_lines(capsys, args: list[str], needle: str) -> None:
    err = assert_cli_error(capsys, needle, *args)
    assert "Error:" not in err and "╭" not in err


def test_cli_group_without_command_shows_its_help_as_a_usage_error(capsys) -> None:
    code, out, err = cli(capsys, "lut")
    assert code == 2 and "import" in out and "Traceback" not in err


@pytest.mark.parametrize("url,needle", [
    ("sqlite:///{tmp}/no/such/dir/x.db", "cannot be opened or reached"),
    ("postgresql+psycopg://postgres:secret@127.0.0.1:1/x", "cannot be opened or reached"),
])
def test_cli_serve_with_a_database_it_cannot_open(tmp_path: Path, capsys, url: str, needle: str) -> None:
    err = assert_cli_error(capsys, needle, "serve", "--db", url.format(tmp=tmp_path))
    assert "secret" not in err
