from __future__ import annotations

import json
import re
from typing import Any

import numpy as np
import pytest
import yaml

from budgetnas.core.errors import DataFileError, InvalidArgumentError, MissingKeysError
from budgetnas.luts.lut import (
    LUT,
    MAX_KEPT_SAMPLES,
    Calibration,
    LatencyStats,
    LUTMeta,
    LUTPredictor,
    key_group,
    write_atomic,
)
from budgetnas.spaces import get_space


def _meta(space, **kw):
    return LUTMeta(space=space.describe(), device="test", backend="ort-cpu", **kw)


def test_stats_from_samples_are_robust_and_roundtrip() -> None:
    s = LatencyStats.from_samples([1.0, 2.0, 3.0, 4.0, 100.0], warmup_runs=3)
    assert s.count == 5 and s.median_ms == 3.0 and s.min_ms == 1.0 and s.mean_ms == 22.0
    assert s.cv == pytest.approx(s.std_ms / s.mean_ms)
    assert LatencyStats.from_dict(s.to_dict()) == s
    with pytest.raises(InvalidArgumentError):
        LatencyStats.from_samples([])
    with pytest.raises(DataFileError, match="unknown fields"):
        LatencyStats.from_dict({"count": 1, "mean_ms": 1.0, "std_ms": 0.0, "bogus": 1})
    with pytest.raises(DataFileError, match=r"count: 0 is outside \[1, "):
        LatencyStats.from_dict({"count": 0, "mean_ms": 1.0, "std_ms": 0.0})


def test_ofa_yaml_import_predicts_sum_of_means(ofa_lut_dir) -> None:
    text = (ofa_lut_dir / "224_lookup_table.yaml").read_text()
    raw = yaml.safe_load(text)
    sp = get_space("ofa-mbv3", width=1.2, resolution=224)
    lut = LUT.from_ofa_yaml(text, _meta(sp))
    assert lut.meta.statistic == "mean" and len(lut.entries) == 96
    archs = sp.sample_many(50, seed=2)
    preds = LUTPredictor(lut, sp).predict(archs)
    for arch, p in zip(archs, preds, strict=True):
        assert p.latency_ms == pytest.approx(sum(raw[k]["mean"] for k in sp.block_keys(arch)), rel=1e-12)
        assert p.low_ms < p.latency_ms < p.high_ms
    # export back to OFA's YAML keeps every number
    again = yaml.safe_load(lut.to_ofa_yaml())
    assert again.keys() == raw.keys()
    assert all(again[k]["mean"] == raw[k]["mean"] and again[k]["count"] == raw[k]["count"] for k in raw)


def test_json_roundtrip_and_missing_keys_named(tmp_path) -> None:
    sp = get_space("nb201")
    keys = sp.all_block_keys()
    rng = np.random.default_rng(0)
    lut = LUT(_meta(sp), {k: LatencyStats.from_samples(rng.uniform(1, 2, 20)) for k in keys[:-1]})
    path = tmp_path / "lut.json"
    lut.save(path)
    again = LUT.load(path)
    assert again.entries == lut.entries and again.meta == lut.meta
    arch = sp.parse("|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|")
    missing = [k for k in sp.block_keys(arch) if k not in lut.entries]
    pred = LUTPredictor(lut, sp)
    if missing:
        with pytest.raises(MissingKeysError) as exc:
            pred.predict([arch])
        assert missing[0] in str(exc.value)
    full = LUT(_meta(sp), {k: LatencyStats.from_samples([1.0, 1.0]) for k in keys})
    assert LUTPredictor(full, sp).predict([arch])[0].latency_ms == pytest.approx(len(sp.blocks(arch)))


def test_calibration_fit_and_band() -> None:
    raw = np.linspace(10, 50, 30)
    measured = 0.9 * raw + 2.0
    cal = Calibration.fit(raw, measured)
    assert cal.slope == pytest.approx(0.9) and cal.intercept == pytest.approx(2.0)
    assert cal.rel_residual_std == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(InvalidArgumentError):
        Calibration.fit([1.0], [1.0])


@pytest.mark.parametrize("raw,measured,needle", [
    ([1.0, 2.0, 3.0], [1.0, 0.0, 3.0], "model 'b''s measured latency is 0.0 ms"),
    ([1.0, 2.0, 3.0], [1.0, -2.0, 3.0], "measured latency is -2.0 ms"),
    ([1.0, 2.0, 3.0], [1.0, float("nan"), 3.0], "measured latency is nan ms"),
    ([1.0, float("inf"), 3.0], [1.0, 2.0, 3.0], "raw LUT sum is inf ms"),
    ([0.0, 0.0, 0.0], [1.0, 2.0, 3.0], "raw LUT sum is 0 ms"),  # y / x: inf slope before
    ([1.0, 2.0, 3.0], [3.0, 2.0, 1.0], "the fitted slope is -"),  # shrinking with the sum: no calibration
    ([1.0, 2.0, 3.0], [2.0, 2.0, 2.0], "do not grow with"),
])
def test_calibration_fit_refuses_measurements_it_cannot_fit(raw: list[float], measured: list[float],
                                                            needle: str) -> None:
    with pytest.raises(InvalidArgumentError, match=re.escape(needle)):
        Calibration.fit(raw, measured, names=["a", "b", "c"])


@pytest.mark.parametrize("fields,needle", [
    ({"slope": float("inf")}, "calibration.slope"),
    ({"intercept": float("nan")}, "calibration.intercept"),
    ({"rel_residual_std": float("nan")}, "calibration.rel_residual_std"),
    ({"rel_residual_std": -0.1}, "calibration.rel_residual_std"),
    ({"n_models": 1.5}, "calibration.n_models"),
    ({"group_scales": {"input:5x5x192": float("inf")}}, "calibration.group_scales.input:5x5x192"),
    ({"group_scales": {"input:5x5x192": 0.0}}, "positive"),
])
def test_calibration_construction_is_validated(fields: dict[str, Any], needle: str) -> None:
    good = {"slope": 1.1, "intercept": 0.3, "n_models": 5, "rel_residual_std": 0.01}
    with pytest.raises(DataFileError, match=re.escape(needle)):
        Calibration(**{**good, **fields})
    with pytest.raises(DataFileError, match=re.escape(needle)):
        Calibration.from_dict({**good, **fields})
    assert Calibration(**good).to_dict() == good


def test_grouped_calibration_recovers_stage_scales() -> None:
    rng = np.random.default_rng(0)
    n, groups = 60, ["input:80x80x24", "input:5x5x192", "input:160x160x3"]  # the last: the same in every model
    g = np.column_stack([rng.uniform(1, 3, n), rng.uniform(0.2, 1.0, n), np.full(n, 0.5)])
    measured = 1.2 * (1.0 * g[:, 0] + 1.5 * g[:, 1] + g[:, 2]) + 0.3
    raw = g.sum(axis=1)
    affine = Calibration.fit(raw, measured)
    cal = Calibration.fit(raw, measured, g, groups)
    assert set(cal.group_scales) == {"input:80x80x24", "input:5x5x192"}  # a constant share has no scale
    ratio = cal.scale("input:5x5x192") / cal.scale("input:80x80x24")
    assert ratio == pytest.approx(1.5, rel=0.05)  # the ridge pulls slightly towards equal scales
    assert cal.rel_residual_std < affine.rel_residual_std / 3
    assert Calibration.from_dict(json.loads(json.dumps(cal.to_dict()))) == cal
    assert "group_scales" not in affine.to_dict()  # the affine form keeps its original shape
    with pytest.raises(InvalidArgumentError, match="group_ms must be 60 x 2"):
        Calibration.fit(raw, measured, g, groups[:2])
    with pytest.raises(DataFileError, match="positive"):
        Calibration.from_dict({**cal.to_dict(), "group_scales": {"input:5x5x192": -1.0}})


def test_a_group_is_an_op_at_a_shape_and_shape_only_scales_still_apply() -> None:
    assert key_group("avg_pool_3x3-input:16x16x32-output:16x16x32") == "avg_pool_3x3@input:16x16x32"
    old = Calibration(1.0, 0.0, 10, 0.01, {"input:16x16x32": 1.3})  # as stored before groups named their op
    assert old.scale("avg_pool_3x3@input:16x16x32") == old.scale("nor_conv_1x1@input:16x16x32") == 1.3
    assert old.scale("avg_pool_3x3@input:8x8x64") == 1.0
    new = Calibration(1.0, 0.0, 10, 0.01, {"avg_pool_3x3@input:16x16x32": 0.5, "input:16x16x32": 1.3})
    assert new.scale("avg_pool_3x3@input:16x16x32") == 0.5 and new.scale("nor_conv_1x1@input:16x16x32") == 1.3


@pytest.mark.parametrize("content,needle", [
    ("{}", "not a budgetnas LUT"),
    (json.dumps({"format": "budgetnas-lut", "version": 9}), "version 9"),
    ("not json", "not JSON"),
])
def test_bad_lut_files(tmp_path, content: str, needle: str) -> None:
    p = tmp_path / "bad.json"
    p.write_text(content)
    with pytest.raises(DataFileError, match=needle):
        LUT.load(p)
    with pytest.raises(DataFileError, match="cannot read"):
        LUT.load(tmp_path / "absent.json")
    with pytest.raises(DataFileError, match="must have count, mean and std"):
        LUT.from_ofa_yaml("k: {count: 1}", _meta(get_space("nb201")))


def test_write_atomic_leaves_nothing_on_failure(tmp_path) -> None:
    with pytest.raises(DataFileError):
        write_atomic(tmp_path / "no" / "such" / "dir.json", "x")
    write_atomic(tmp_path / "ok.json", "x")
    assert [p.name for p in tmp_path.iterdir()] == ["ok.json"]


def test_a_predictor_follows_the_luts_calibration_when_it_changes() -> None:
    """The group-scaled values are cached per calibration: one set after the predictor was made is used,
    and its numbers are the formula's (slope x sum of scale x value + intercept)."""
    sp = get_space("nb201")
    rng = np.random.default_rng(1)
    lut = LUT(_meta(sp), {k: LatencyStats.from_samples(list(rng.uniform(0.1, 1.0, 5))) for k in sp.all_block_keys()})
    pred = LUTPredictor(lut, sp)
    archs = sp.sample_many(20, seed=3)
    raw = pred.raw(archs)
    assert [p.latency_ms for p in pred.predict(archs)] == pytest.approx(raw)  # no calibration yet
    sums, groups = pred.group_sums(archs)
    scales = {g: 1.0 + 0.5 * i for i, g in enumerate(groups)}
    for slope, intercept in ((2.0, 0.5), (0.5, 1.0)):  # a second calibration replaces the first's cache
        lut.calibration = Calibration(slope=slope, intercept=intercept, n_models=5, rel_residual_std=0.01,
                                      group_scales=scales)
        want = slope * (sums * np.array([scales[g] for g in groups])).sum(axis=1) + intercept
        assert [p.latency_ms for p in pred.predict(archs)] == pytest.approx(want)


def test_a_measurement_keeps_its_samples_only_up_to_the_cap() -> None:
    """A sub-microsecond block timed for seconds makes millions of samples: its statistics come from all of them,
    its result carries none (a body of millions of numbers is over the server's limit and would be lost)."""
    x = np.linspace(0.001, 0.002, MAX_KEPT_SAMPLES + 1)
    many = LatencyStats.from_samples(x)
    assert many.count == x.size and many.samples_ms is None and many.min_ms == pytest.approx(0.001)
    assert many.median_ms == pytest.approx(float(np.median(x)))
    few = LatencyStats.from_samples(x[:MAX_KEPT_SAMPLES])
    assert few.samples_ms is not None and len(few.samples_ms) == few.count == MAX_KEPT_SAMPLES
    assert LatencyStats.from_dict(many.to_dict()) == many


def test_grouped_calibration_strength_follows_the_data() -> None:
    """The ridge's strength is the data's (empirical Bayes): 12 noisy models whose stages share one factor
    keep the affine fit's scales (the noise is not fitted as stage scales), while 12 whose stages differ
    get them."""
    rng = np.random.default_rng(3)
    n, groups = 12, [f"input:{s}x{s}x8" for s in (40, 20, 10, 5)]
    g = rng.uniform(0.2, 1.0, (n, 4))
    raw = g.sum(axis=1)
    noisy = 1.3 * raw * np.exp(rng.normal(0, 0.03, n)) + 0.1
    shared = Calibration.fit(raw, noisy, g, groups)
    assert max(abs(v - 1.0) for v in shared.group_scales.values()) < 0.05
    differ = 1.3 * (g @ np.array([0.7, 1.0, 1.0, 1.6])) * np.exp(rng.normal(0, 0.005, n)) + 0.1
    cal = Calibration.fit(g.sum(axis=1), differ, g, groups)
    assert cal.scale(groups[3]) / cal.scale(groups[0]) == pytest.approx(1.6 / 0.7, rel=0.1)
    pinned = Calibration.fit(raw, noisy, g, groups, ridge=0.0)  # no prior: the noise becomes stage scales
    assert max(abs(v - 1.0) for v in pinned.group_scales.values()) > 0.05
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(InvalidArgumentError, match="ridge must be a finite number"):
            Calibration.fit(raw, noisy, g, groups, ridge=bad)
