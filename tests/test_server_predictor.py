"""The server's in-memory predictor: the same numbers as budgetnas.luts.lut.LUTPredictor, fast path or not."""

from __future__ import annotations

import json

import pytest

from budgetnas.core.errors import InvalidArchitectureError, MissingKeysError
from budgetnas.lut_server.predictor import Prepared
from budgetnas.luts.lut import LUT, Calibration, LUTMeta, LUTPredictor, key_group
from budgetnas.spaces import get_space
from tests.conftest import shared_file


@pytest.fixture(scope="module")
def ofa() -> tuple:
    sp = get_space("ofa-mbv3", width=1.2, resolution=192)
    lut = LUT.from_ofa_yaml(shared_file("ofa_note10_lut", "192_lookup_table.yaml").read_text(),
                            LUTMeta(space=sp.describe(), device="d", backend="b"))
    return sp, lut


def test_fast_rows_equal_the_walk(ofa) -> None:
    sp, lut = ofa
    prep = Prepared.build(lut, revision=0)
    assert prep.fast is not None  # ofa-mbv3 has the per-unit fast path
    archs = [sp.format(a) for a in sp.sample_many(500, seed=9)]
    got = prep.predict(archs)
    want = LUTPredictor(lut, sp).predict([sp.parse(a) for a in archs])
    for g, w in zip(got, want, strict=True):
        assert (g["arch"], g["raw_ms"]) == (w.arch, w.raw_ms)
        assert (g["latency_ms"], g["low_ms"], g["high_ms"]) == pytest.approx((w.latency_ms, w.low_ms, w.high_ms),
                                                                              rel=1e-12)
    # non-canonical spellings and OFA's dict form come back canonical, with the same numbers
    odd = archs[0].replace("k3e", "k03e") if "k3e" in archs[0] else archs[0]
    dict_form = json.dumps(sp.to_ofa_dict(sp.parse(archs[0])))
    again = prep.predict([odd, dict_form, archs[0]])
    assert [p["arch"] for p in again] == [archs[0]] * 3
    assert len({p["latency_ms"] for p in again}) == 1


@pytest.mark.parametrize("scales", [{}, {"input:12x12x136": 1.3, "input:6x6x192": 0.7, "input:48x48x32": 1.1}])
def test_calibration_and_errors(ofa, scales: dict[str, float]) -> None:
    sp, lut = ofa
    cal = Calibration(slope=0.9, intercept=1.5, n_models=10, rel_residual_std=0.02, group_scales=scales)
    lut2 = LUT(lut.meta, lut.entries, cal)
    prep = Prepared.build(lut2, revision=1)
    arch = sp.format(sp.sample_many(1, seed=1)[0])
    p = prep.predict([arch])[0]
    q = LUTPredictor(lut2, sp).predict([sp.parse(arch)])[0]
    assert (p["latency_ms"], p["low_ms"], p["high_ms"]) == pytest.approx((q.latency_ms, q.low_ms, q.high_ms))
    by_hand = 1.5 + 0.9 * sum(lut.entries[k].value(lut.meta.statistic) * scales.get(key_group(k), 1.0)
                              for k in sp.block_keys(sp.parse(arch)))
    assert p["latency_ms"] == pytest.approx(by_hand, rel=1e-12)
    assert prep.predict([arch], calibrated=False)[0]["latency_ms"] == pytest.approx(q.raw_ms)
    five = arch.split("|")
    five[2] = ",".join(["k3e3"] * 5)
    for bad, needle in (("|".join(five), "archs[1]: unit 2: depth 5"), ("w1.2_r160" + arch[9:], "archs[1]: resolution"),
                        (arch.replace("k", "q", 1), "archs[1]")):
        with pytest.raises(InvalidArchitectureError) as exc:
            prep.predict([arch, bad])
        assert needle in str(exc.value)
    partial = LUT(lut.meta, {k: v for k, v in lut.entries.items() if "kernel:7" not in k})
    seven = "|".join([arch.split("|")[0]] + ["k7e3,k7e3"] * 5)
    with pytest.raises(MissingKeysError) as missing:
        Prepared.build(partial, revision=0).predict([seven])
    assert all("kernel:7" in k for k in missing.value.keys)


def test_the_answer_cache_gives_predicts_answers_under_canonical_keys_only(ofa) -> None:
    sp, lut = ofa
    prep = Prepared.build(lut, revision=0)
    archs = [sp.format(a) for a in sp.sample_many(3, seed=4)]
    odd = archs[0].replace("k3e", "k03e") if "k3e" in archs[0] else " " + archs[0]
    for calibrated in (True, False):
        want = json.dumps({"predictions": prep.predict(archs, calibrated=calibrated)}, separators=(",", ":"))
        for _ in range(2):  # a miss (answered and remembered), then a hit
            assert json.loads(prep.encoded(archs, calibrated)) == json.loads(want)
        assert json.loads(prep.encoded([odd], calibrated))["predictions"][0]["arch"] == archs[0]
    assert set(prep.answers) == {(a, c) for a in archs for c in (True, False)}  # the odd spelling added nothing
    many = [sp.format(a) for a in sp.sample_many(100, seed=5)]
    prep.encoded(many)  # a batch larger than ANSWERED_ARCHS is answered, not remembered
    assert not any((a, True) in prep.answers for a in many if a not in archs)
