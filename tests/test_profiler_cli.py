"""`budgetnas profile` and `budgetnas validate` end to end (real ONNX Runtime runs), and bad input."""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from budgetnas.cli.main import run
from budgetnas.core.errors import InvalidArgumentError
from budgetnas.luts.lut import LUT
from budgetnas.profiler.fidelity import metrics
from budgetnas.spaces import get_space

# a small nb201 (22 block keys, 16x16 input, 1 cell per stage) keeps the real runs short
NB = ["--space", "nb201", "--resolution", "16", "--exporter", "torchscript", "--quick"]


@pytest.fixture(scope="module", autouse=True)
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BUDGETNAS_CACHE", str(tmp_path_factory.getbasetemp() / "bn-cache"))
        yield


@pytest.fixture(scope="module")
def lut_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("lut") / "nb.json"
    assert run(["profile", *NB, "--out", str(out), "--device", "ci-box"]) == 0
    return out


@pytest.fixture(scope="module")
def small_lut_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A LUT of a one-cell nb201 (made through the API), so validate's whole models export fast."""
    from budgetnas.profiler.lutbuild import profile_space
    from budgetnas.profiler.protocol import Protocol
    from budgetnas.profiler.runners import get_runner

    space = get_space("nb201", channels=8, cells=1, resolution=16)
    lut, _ = profile_space(space, get_runner("ort-cpu", exporter="torchscript"), Protocol.quick(), progress=False)
    out = tmp_path_factory.mktemp("small") / "nb-small.json"
    lut.save(out)
    return out


def test_profile_writes_a_complete_lut(lut_file: Path) -> None:
    lut = LUT.load(lut_file)
    assert sorted(lut.entries) == get_space("nb201", resolution=16).all_block_keys()
    m = lut.meta
    assert (m.backend, m.threads, m.batch, m.device, m.statistic) == ("ort-cpu", 1, 1, "ci-box", "median")
    assert m.runtime_version.startswith("onnxruntime ") and m.space["resolution"] == 16
    assert m.protocol["overhead"]["median_ms"] > 0 and m.protocol["exporter"] == "torchscript"
    assert m.environment["cpu_model"] and m.environment["threads"] == 1
    conv = lut.entries["nor_conv_3x3-input:16x16x16-output:16x16x16"]
    assert conv.count >= 10 and conv.median_ms is not None and conv.median_ms > 0 and conv.samples_ms


def test_validate_json_plot_and_update(small_lut_file: Path, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    png = tmp_path / "fid.png"
    lut_path = tmp_path / "lut.json"
    lut_path.write_text(small_lut_file.read_text())
    assert run(["validate", "--lut", str(lut_path), "--models", "6", "--seed", "1", "--json", "--quick",
                "--plot", str(png), "--update-lut"]) == 0
    out = capsys.readouterr().out
    d = json.loads(out)  # stdout holds exactly one JSON object
    assert d["n_models"] == 6 and d["n_fit"] == 4 and d["n_eval"] == 6 and d["folds"] == 5
    for part in ("raw", "calibrated"):
        assert set(d[part]) >= {"mape", "rmspe", "within_5pct", "within_10pct", "kendall_tau"}
        assert 0 <= d[part]["within_5pct"] <= d[part]["within_10pct"] <= 1
        assert d[part]["mape"] >= 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # the LUT's and the models' sessions both timed the reference workload: compared and divided out
    assert d["reference_ms"]["lut"] > 0 and d["reference_ms"]["models"] > 0
    assert d["session_ratio"] == pytest.approx(d["reference_ms"]["models"] / d["reference_ms"]["lut"])
    assert d["sessions_corrected"] is True and set(d["uncorrected"]) == {"raw", "calibrated_affine"}
    cal = LUT.load(lut_path).calibration
    assert cal is not None and cal.n_models == 6 and cal.to_dict() == d["calibration"]  # every model; figures: a half


def test_validate_human_output(small_lut_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    assert run(["validate", "--lut", str(small_lut_file), "--models", "4", "--quick"]) == 0
    out = capsys.readouterr().out
    assert "calibrated" in out and "RMSPE" in out and "each of the 4 judged by the fit on at least 3 others" in out
    assert "calibrated_affine" in out  # the grouped default is shown beside the affine fit
    assert "Sessions: the models' reference workload ran at x" in out
    assert LUT.load(small_lut_file).calibration is None  # only --update-lut writes it
    assert "sessions and pooled" not in out  # one session: nothing pooled


def test_validate_pools_models_measured_in_several_sessions(small_lut_file: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    capsys.readouterr()
    assert run(["validate", "--lut", str(small_lut_file), "--models", "4", "--quick", "--sessions", "2", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert d["model_sessions"] == 2 and 0 <= d["session_noise"] < 1 and d["n_eval"] == 4
    assert run(["validate", "--lut", str(small_lut_file), "--models", "4", "--quick", "--sessions", "2"]) == 0
    assert "Models measured in 2 sessions and pooled; one session's time scatters by" in capsys.readouterr().out


def test_session_drift_is_divided_out(small_lut_file: Path) -> None:
    from budgetnas.profiler.fidelity import measure_models, report_from
    from budgetnas.profiler.protocol import Protocol

    lut = LUT.load(small_lut_file)
    names, raw, m = measure_models(lut, 6, seed=2, protocol=Protocol.quick(), progress=False)
    as_taken = report_from(lut, names, raw, m, correct_sessions=False)
    assert as_taken.extra["sessions_corrected"] is False and "uncorrected" not in as_taken.extra
    refs = [m.stats[n].reference_ms for n in names]  # every model timed the reference beside its visits
    assert all(r is not None and r > 0 for r in refs)
    models_ref = float(np.median(refs))
    # as if the LUT's session ran twice as fast: each entry's reference (what the LUT's session is read from)
    lut.entries = {k: dataclasses.replace(e, reference_ms=models_ref / 2) for k, e in lut.entries.items()}
    fixed = report_from(lut, names, raw, m)
    assert fixed.extra["session_ratio"] == pytest.approx(2.0) and fixed.extra["sessions_corrected"] is True
    np.testing.assert_allclose(fixed.measured_ms, as_taken.measured_ms / 2)
    # entries without a reference: the meta's session median stands in
    lut.entries = {k: dataclasses.replace(e, reference_ms=None) for k, e in lut.entries.items()}
    lut.meta.protocol["reference_ms"] = models_ref / 4
    meta = report_from(lut, names, raw, m)
    assert meta.extra["session_ratio"] == pytest.approx(4.0) and meta.extra["reference_ms"]["lut"] == models_ref / 4
    for bad in ("x", [1], -1.0, True, float("nan")):  # a free-form value that is no time: not compared
        lut.meta.protocol["reference_ms"] = bad
        assert report_from(lut, names, raw, m).extra["session_ratio"] is None, bad
    # a LUT profiled before the reference existed: nothing to compare
    del lut.meta.protocol["reference_ms"]
    old = report_from(lut, names, raw, m)
    assert old.extra["session_ratio"] is None and old.extra["sessions_corrected"] is False
    np.testing.assert_allclose(old.measured_ms, as_taken.measured_ms)


def test_sessions_of_the_same_models_are_pooled_on_the_first_sessions_scale(small_lut_file: Path) -> None:
    from budgetnas.luts.lut import LatencyStats
    from budgetnas.profiler.fidelity import measure_models, pooled_ms, report_from
    from budgetnas.profiler.protocol import Measurement, Protocol

    def session(ms: dict[str, float]) -> Measurement:
        return Measurement({k: LatencyStats.from_samples([v]) for k, v in ms.items()}, LatencyStats.from_samples([0.0]),
                           Protocol.quick(), 1.0)

    first = session({"a": 1.0, "b": 2.0, "c": 4.0})
    later = session({"a": 1.2, "b": 2.4, "c": 4.0 * 1.2 * 1.1})  # 20% slower, and c 10% more on top
    pooled, noise = pooled_ms([first, later], ["a", "b", "c"], "median")
    np.testing.assert_allclose(pooled, [1.0, 2.0, 4.0 * np.sqrt(1.1)])  # geometric mean, first session's scale
    assert noise == pytest.approx(np.std(np.log([1.0, 1.0, 1.1])) / np.sqrt(2))
    alone, none = pooled_ms([first], ["c", "a"], "median")
    assert alone.tolist() == [4.0, 1.0] and none is None
    with pytest.raises(InvalidArgumentError, match="no sessions"):
        pooled_ms([], ["a"], "median")
    # measured for real: one session pooled with itself is that session, with no noise between the two
    lut = LUT.load(small_lut_file)
    names, raw, m = measure_models(lut, 4, seed=3, protocol=Protocol.quick(), progress=False)
    one, two = report_from(lut, names, raw, m), report_from(lut, names, raw, m, repeats=[m])
    np.testing.assert_allclose(two.measured_ms, one.measured_ms)
    assert (one.extra["model_sessions"], two.extra["model_sessions"]) == (1, 2)
    assert one.extra["session_noise"] is None and two.extra["session_noise"] == pytest.approx(0.0, abs=1e-12)


def test_metrics_by_hand() -> None:
    measured = np.array([10.0, 20.0, 40.0, 80.0])
    predicted = np.array([10.4, 18.0, 40.0, 88.0])  # errors +4%, -10%, 0%, +10%
    m = metrics(predicted, measured)
    assert m["mape"] == pytest.approx(0.06)
    assert m["rmspe"] == pytest.approx(np.sqrt((0.04**2 + 0.1**2 + 0.1**2) / 4))
    assert m["within_5pct"] == 0.5 and m["within_10pct"] == 1.0 and m["kendall_tau"] == pytest.approx(1.0)


def _bad(argv: list[str], capsys: pytest.CaptureFixture[str], needle: str) -> None:
    capsys.readouterr()
    assert run(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and needle in err[0], err


@pytest.mark.parametrize(("extra", "needle"), [
    (["--space", "nope", "--resolution", "16"], "unknown search space 'nope'"),
    (["--space", "ofa-mbv3", "--resolution", "300"], "resolution 300"),
    (["--space", "nb201", "--backend", "tvm"], "unknown backend 'tvm'"),
    (["--space", "nb201", "--batch", "0"], "batch must be >= 1"),
    (["--space", "nb201", "--statistic", "p50"], "--statistic"),
])
def test_profile_bad_input(extra: list[str], needle: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "lut.json"
    _bad(["profile", *extra, "--out", str(out), "--quick"], capsys, needle)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("where", ["missing-dir", "is-dir"])
def test_profile_unwritable_output(where: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "no" / "such" / "lut.json" if where == "missing-dir" else tmp_path
    _bad(["profile", *NB, "--out", str(out)], capsys, "cannot write")
    assert list(tmp_path.iterdir()) == []


def test_profile_tflite_without_extra(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "litert_torch", None)  # as if `budgetnas[tflite]` were not installed
    _bad(["profile", "--space", "nb201", "--backend", "litert-cpu", "--out", str(tmp_path / "l.json")], capsys,
         "litert-torch")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="checks the no-GPU error path")
def test_profile_cuda_without_gpu(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _bad(["profile", "--space", "nb201", "--backend", "torch-cuda", "--out", str(tmp_path / "l.json")], capsys,
         "CUDA")
    assert list(tmp_path.iterdir()) == []


def test_validate_bad_input(small_lut_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _bad(["validate", "--lut", str(tmp_path / "missing.json"), "--models", "4"], capsys, "cannot read LUT")
    _bad(["validate", "--lut", str(small_lut_file), "--models", "2"], capsys, "--models must be >= 4")
    _bad(["validate", "--lut", str(small_lut_file), "--models", "4", "--calibration", "cubic"], capsys,
         "--calibration must be 'grouped' or 'affine', got 'cubic'")
    _bad(["validate", "--lut", str(small_lut_file), "--models", "4", "--sessions", "0"], capsys,
         "--sessions must be >= 1, got 0")
    _bad(["validate", "--lut", str(small_lut_file), "--models", "4", "--plot", str(tmp_path / "x" / "p.png")], capsys,
         "cannot write")
    other = tmp_path / "other.json"
    lut = LUT.load(small_lut_file)
    lut.entries.pop("stem-input:16x16x3-output:16x16x8")
    lut.save(other)
    _bad(["validate", "--lut", str(other), "--models", "4"], capsys, "does not cover")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.json"]


def test_targets_and_anchors_are_measured_once_in_one_session(small_lut_file: Path) -> None:
    """The demo's measuring step (and bench/demo_anchors.py's): each distinct model once, the anchors'
    drift now / as fitted, the reference's ratio to the LUT's session when the LUT timed one."""
    from budgetnas.profiler.fidelity import measure_anchored, runner_for
    from budgetnas.profiler.protocol import Protocol
    from budgetnas.profiler.targets import model_target
    from budgetnas.spaces import space_from_description

    lut = LUT.load(small_lut_file)
    space = space_from_description(lut.meta.space)
    a, b = space.sample_many(2, 5)
    assert space.format(a) != space.format(b)
    targets = [model_target(space, a), model_target(space, a), model_target(space, b)]  # two budgets, one arch
    anchors = [model_target(space, b)]  # an anchor that is also a target
    s = measure_anchored(runner_for(lut), targets, anchors, [2e-3], "median", Protocol.quick(), 1e-3, progress=False)
    assert sorted(s.measurement.stats) == sorted({targets[0].name, targets[2].name})  # measured once each
    assert s.drift.ratios == pytest.approx((s.measurement.stats[anchors[0].name].median_ms / 2e-3,))
    ref = s.measurement.reference_ms
    assert ref is not None and ref > 0 and s.reference_ratio == pytest.approx(ref / 1e-3)
    alone = measure_anchored(runner_for(lut), targets[:1], anchors, [2e-3], "median", Protocol.quick(), None,
                             progress=False)
    assert alone.reference_ratio is None  # the LUT's session timed no reference: nothing to compare
    for fitted in ([], [1.0, 2.0], [0.0], [float("nan")]):  # refused by name before measuring
        with pytest.raises(InvalidArgumentError, match="anchor"):
            measure_anchored(runner_for(lut), targets[:1], anchors, fitted, "median", Protocol.quick(), None,
                             progress=False)
