"""budgetnas.luts.token_cost: LUT folded into per-decision cost tables, canonical tokens, features."""

from __future__ import annotations

import numpy as np
import pytest

from budgetnas.core.errors import MissingKeysError
from budgetnas.generator.features import uniform_tokens
from budgetnas.luts.lut import LUT, Calibration, LatencyStats, LUTMeta, LUTPredictor, key_group
from budgetnas.luts.token_cost import canonical_tokens, cost_model_from_lut, token_features
from budgetnas.spaces import get_space


def _random_lut(space, seed: int = 0, calibration: Calibration | None = None) -> LUT:
    rng = np.random.default_rng(seed)
    entries = {k: LatencyStats(count=3, mean_ms=float(rng.uniform(0.1, 2)), std_ms=0.01,
                               median_ms=float(rng.uniform(0.1, 2))) for k in space.all_block_keys()}
    return LUT(LUTMeta(space=space.describe(), device="t", backend="b"), entries, calibration)


@pytest.mark.parametrize("grouped", [False, True])
@pytest.mark.parametrize("name", ["nb201", "ofa-mbv3"])
def test_cost_tables_equal_lut_predictor(name: str, grouped: bool) -> None:
    sp = get_space(name)
    groups = sorted({key_group(k) for k in sp.all_block_keys()})
    scales = {g: 0.8 + 0.1 * i for i, g in enumerate(groups)} if grouped else {}
    lut = _random_lut(sp, calibration=Calibration(1.1, 0.3, 5, 0.01, scales))
    model = cost_model_from_lut(sp, lut)
    archs = sp.sample_many(200, seed=3)
    ref = np.array([p.latency_ms for p in LUTPredictor(lut, sp).predict(archs)])
    np.testing.assert_allclose(model(sp.token_matrix(archs)), ref, rtol=1e-12)
    raw = cost_model_from_lut(sp, lut, calibrated=False).raw(sp.token_matrix(archs))
    np.testing.assert_allclose(raw, LUTPredictor(lut, sp).raw(archs), rtol=1e-12)


@pytest.mark.parametrize("name", ["nb201", "ofa-mbv3"])
def test_bounds_contain_every_sampled_latency(name: str) -> None:
    sp = get_space(name)
    model = cost_model_from_lut(sp, _random_lut(sp, seed=1))
    lat = model(uniform_tokens(sp, 20000, np.random.default_rng(0)))
    lo, hi = model.bounds()
    assert lo <= lat.min() and lat.max() <= hi
    # nb201: the table's argmin is the cheapest arch (not always all-none: a cell of zeros runs x * 0),
    # its argmax the dearest (not always one op on every edge: a parameter-free op that two edges apply
    # to one node runs once); both exact
    if name == "nb201":
        (term,) = model.terms  # one term over the six edges: whether an edge is live depends on the others
        cheapest = np.unravel_index(int(np.argmin(term.table)), term.table.shape)
        dearest = np.unravel_index(int(np.argmax(term.table)), term.table.shape)
        assert lo == pytest.approx(model(np.asarray(cheapest)[None])[0])
        assert hi == pytest.approx(model(np.asarray(dearest)[None])[0])


def test_missing_keys_are_named() -> None:
    sp = get_space("nb201")
    lut = _random_lut(sp)
    gone = sorted(lut.entries)[0]
    del lut.entries[gone]
    with pytest.raises(MissingKeysError, match="lacks 1 block key"):
        cost_model_from_lut(sp, lut)


@pytest.mark.parametrize("name", ["nb201", "ofa-mbv3"])
def test_token_features_and_canonical_tokens(name: str) -> None:
    sp = get_space(name)
    tok = uniform_tokens(sp, 300, np.random.default_rng(2))
    archs = [sp.from_tokens(t.tolist()) for t in tok]
    np.testing.assert_array_equal(token_features(sp, tok), sp.features_many(archs))
    canon = canonical_tokens(sp, tok)
    np.testing.assert_array_equal(canon, sp.token_matrix(sp.from_tokens(t.tolist()) for t in canon))
    assert [sp.from_tokens(t.tolist()) for t in canon] == archs
    if name == "ofa-mbv3":
        assert (canon != tok).any()  # inactive layers were zeroed
