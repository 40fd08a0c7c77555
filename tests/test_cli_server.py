"""CLI wrappers of the LUT server (against uvicorn on 127.0.0.1) and the offline LUT conversions."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import httpx
import pytest
import yaml

from budgetnas.cli.main import run
from budgetnas.luts.lut import LUT
from budgetnas.spaces import get_space
from tests.conftest import shared_file
from tests.server_support import *  # noqa: F403
from tests.server_support import ADMIN


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = run(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_server_workflow_through_the_cli(live, capsys) -> None:
    srv = ["--server", live.url]
    code, out, _ = cli(capsys, "device", "register", "--name", "note10", *srv, "--token", ADMIN, "--facts", '{"os": "android"}')
    assert code == 0 and out.splitlines()[-1].startswith("bna_")
    yaml_path = shared_file("ofa_note10_lut", "224_lookup_table.yaml")
    code, out, _ = cli(capsys, "lut", "import", str(yaml_path), *srv, "--token", ADMIN, "--device", "note10")
    assert code == 0
    lut_id = out.splitlines()[-1]
    assert lut_id.isdigit()
    sp = get_space("ofa-mbv3", width=1.2, resolution=224)
    archs = [sp.format(a) for a in sp.sample_many(3, seed=5)]
    raw = yaml.safe_load(yaml_path.read_text())
    code, out, _ = cli(capsys, "predict", *archs, *srv, "--lut", lut_id, "--json")
    assert code == 0
    preds = json.loads(out)["predictions"]
    for a, p in zip(archs, preds, strict=True):
        assert p["arch"] == a
        assert p["latency_ms"] == pytest.approx(sum(raw[k]["mean"] for k in sp.block_keys(sp.parse(a))), rel=1e-12)
    code, out, _ = cli(capsys, "predict", archs[0], *srv, "--lut", lut_id)
    assert code == 0 and out.strip().endswith(archs[0]) and " ms " in out
    code, out, _ = cli(capsys, "lut", "show", lut_id, *srv, "--json")
    info = json.loads(out)
    assert info["id"] == int(lut_id) and info["status"] == "complete" and info["n_keys"] == info["n_measured"] == 96
    assert len(info["entries"]) == 96 and {"key", "median_ms", "cv"} <= set(info["entries"][0])
    code, out, _ = cli(capsys, "lut", "show", lut_id, *srv)
    assert code == 0 and "coverage  96/96" in out
    code, out, _ = cli(capsys, "lut", "export", lut_id, *srv, "--format", "ofa-yaml")
    assert code == 0 and yaml.safe_load(out) == raw
    code, out, _ = cli(capsys, "campaign", "create", *srv, "--token", ADMIN, "--space", "nb201", "--device", "note10",
                       "--backend", "ort-cpu", "--validation-models", "3")
    assert code == 0
    camp = out.splitlines()[-1]
    assert camp.isdigit() and camp != lut_id
    camp_lut = httpx.get(f"{live.url}/v1/luts/{camp}").json()
    assert camp_lut["progress"]["queued"] == len(get_space("nb201").all_block_keys()) + 3
    assert camp_lut["meta"]["statistic"] == "median"  # the default
    # the same identity asked to sum another statistic: refused, nothing enqueued
    code, _, err = cli(capsys, "campaign", "create", *srv, "--token", ADMIN, "--space", "nb201", "--device", "note10",
                       "--backend", "ort-cpu", "--validation-models", "5", "--statistic", "min")
    assert code == 2 and err.startswith("error: ") and "statistic 'min'" in err and "'median'" in err
    assert httpx.get(f"{live.url}/v1/luts/{camp}").json()["progress"]["queued"] == len(get_space("nb201").all_block_keys()) + 3


@pytest.mark.parametrize("args,needle", [
    (["lut", "show", "99", "--server", "{url}"], "HTTP 404"),
    (["predict", "w1.2_r224|bad", "--server", "{url}", "--lut", "1"], "HTTP 404"),
    (["campaign", "create", "--server", "{url}", "--token", "wrong", "--space", "nb201", "--device", "d",
      "--backend", "b"], "HTTP 401"),
    (["campaign", "create", "--server", "{url}", "--token", ADMIN, "--space", "nope", "--device", "d",
      "--backend", "b"], "unknown search space 'nope'"),
    (["campaign", "create", "--server", "{url}", "--token", ADMIN, "--space", "nb201", "--device", "d",
      "--backend", "b", "--statistic", "p50"], "statistic"),
    (["device", "register", "--name", "x", "--server", "{url}", "--token", ADMIN, "--facts", "[1]"], "--facts"),
    (["lut", "show", "1", "--server", "http://127.0.0.1:9"], "cannot reach"),
])
def test_cli_errors_are_one_line_exit_2(live, capsys, args, needle) -> None:
    code, _, err = cli(capsys, *[a.replace("{url}", live.url) for a in args])
    assert code == 2 and err.startswith("error: ") and needle in err and len(err.strip().splitlines()) == 1


def test_offline_import_and_export(tmp_path, capsys) -> None:
    yaml_path = shared_file("ofa_note10_lut", "200_lookup_table.yaml")
    out = tmp_path / "lut.json"
    code, _, _ = cli(capsys, "lut", "import", str(yaml_path), "--out", str(out), "--device", "note10")
    assert code == 0
    lut = LUT.load(out)
    assert lut.meta.space["resolution"] == 200 and lut.meta.device == "note10" and len(lut.entries) == 96
    back = tmp_path / "back.yaml"
    code, _, _ = cli(capsys, "lut", "export", str(out), "--format", "ofa-yaml", "--out", str(back))
    assert code == 0 and yaml.safe_load(back.read_text()) == yaml.safe_load(yaml_path.read_text())
    csv = tmp_path / "nb.csv"
    csv.write_text("\n".join(shared_file("nb201", "nb201_bench.csv").read_text().splitlines()[:80]))
    code, _, _ = cli(capsys, "lut", "import", str(csv), "--out", str(tmp_path / "nb.json"), "--column",
                     "raspi4_latency_ms", "--device", "rpi4")
    assert code == 0 and LUT.load(tmp_path / "nb.json").meta.space["space"] == "nb201"
    for args, needle in ((["lut", "import", str(yaml_path)], "--out"),
                         (["lut", "import", str(tmp_path / "missing.yaml"), "--out", str(out)], "cannot read"),
                         (["lut", "import", str(csv), "--out", str(out), "--column", "nope"], "column"),
                         (["lut", "export", str(yaml_path), "--format", "ofa-yaml"], "Once-for-All YAML")):
        code, _, err = cli(capsys, *args)
        assert code == 2 and err.startswith("error: ") and needle in err, (args, err)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_serve_migrates_and_serves(db_url, tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'fresh.db'}" if db_url.startswith("sqlite") else db_url
    port = _free_port()
    env = {**os.environ, "BUDGETNAS_ADMIN_TOKEN": ADMIN}
    proc = subprocess.Popen([sys.executable, "-m", "budgetnas", "serve", "--db", url, "--port", str(port),
                             "--log-level", "warning"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
                time.sleep(0.2)
        r = httpx.post(f"{base}/v1/devices", json={"name": "d"}, headers={"Authorization": f"Bearer {ADMIN}"})
        assert r.status_code == 201
        assert httpx.get(f"{base}/v1/devices").json()["devices"][0]["name"] == "d"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
