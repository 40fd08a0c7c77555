"""budgetnas.luts.transfer on synthetic fleets: exact combinations recovered, bands that cover, bad input refused."""

from __future__ import annotations

import numpy as np
import pytest

from budgetnas.core.errors import DataFileError, InvalidArgumentError, UnknownNameError
from budgetnas.luts.transfer import METHODS, SELECTIONS, Fleet, choose_archs, fit, nnls, spearman


def synthetic_fleet(rng: np.random.Generator, n: int = 3000, m: int = 8, noise: float = 0.0) -> np.ndarray:
    """Additive per-op costs on a random 'arch' x 'op count' matrix: each device its own op costs."""
    counts = rng.integers(0, 4, size=(n, 5)).astype(float)
    costs = rng.lognormal(0.0, 0.8, size=(5, m + 1))
    ms = costs.sum(axis=0) + counts @ costs  # a fixed part (stem, head) besides the ops: no near-0 arch
    return ms * np.exp(rng.normal(0.0, noise, size=ms.shape))


def test_log_linear_combination_recovered() -> None:
    rng = np.random.default_rng(0)
    src = synthetic_fleet(rng)[:, :6]
    target = 1.7 * src[:, 1] ** 0.6 * src[:, 4] ** 0.5  # an exact positive combination in log space
    fleet = Fleet.from_ms([f"d{j}" for j in range(6)], src)
    idx = choose_archs(fleet, 12, rng)
    pred = fit(fleet, idx, target[idx], "fleet-bma")
    assert np.max(np.abs(pred.latency_ms / target - 1)) < 0.01
    assert spearman(pred.latency_ms, target) > 0.999
    # the default mixture gives a third each to ridge and nnls, which are not exact here: close, not exact
    ens = fit(fleet, idx, target[idx])
    assert ens.method == "fleet-ensemble"
    assert np.mean(np.abs(ens.latency_ms / target - 1) <= 0.05) > 0.9 and spearman(ens.latency_ms, target) > 0.99


def test_linear_positive_combination_recovered_by_nnls() -> None:
    rng = np.random.default_rng(1)
    src = synthetic_fleet(rng)[:, :6]
    target = 0.4 * src[:, 0] + 1.3 * src[:, 3]
    fleet = Fleet.from_ms([f"d{j}" for j in range(6)], src)
    idx = choose_archs(fleet, 10, rng, "random")
    pred = fit(fleet, idx, target[idx], "nnls")
    np.testing.assert_allclose(pred.latency_ms, target, rtol=1e-6)
    assert set(pred.weights) == {"d0", "d3"}
    # the default method, in log space, still gets it close
    bma = fit(fleet, idx, target[idx])
    assert np.mean(np.abs(bma.latency_ms / target - 1) <= 0.05) > 0.9


def test_nnls_matches_bounds() -> None:
    rng = np.random.default_rng(2)
    a = rng.normal(size=(40, 6))
    b = a @ np.array([1.0, -2.0, 0.0, 3.0, -1.0, 0.5]) + rng.normal(0, 0.1, 40)
    x = nnls(a, b)
    assert np.all(x >= 0)
    # KKT: zero components have a non-positive gradient, positive ones a ~zero gradient
    grad = a.T @ (b - a @ x)
    assert np.all(grad[x == 0] <= 1e-8) and np.allclose(grad[x > 0], 0, atol=1e-8)


def test_band_covers_held_out_archs_at_about_its_rate() -> None:
    rates = []
    for seed in range(6):  # one draw's rate varies with its few points: judge the mean over draws
        rng = np.random.default_rng(seed)
        ms = synthetic_fleet(rng, m=10, noise=0.05)  # 5% measurement noise on every device
        fleet = Fleet.from_ms([f"d{j}" for j in range(10)], ms[:, :10])
        target = ms[:, 10]
        idx = choose_archs(fleet, 50, rng)
        pred = fit(fleet, idx, target[idx])
        held = np.setdiff1d(np.arange(len(target)), idx)
        rates.append(np.mean((target[held] >= pred.low_ms[held]) & (target[held] <= pred.high_ms[held])))
        assert spearman(pred.latency_ms, target) > 0.8
    assert 0.88 <= np.mean(rates) <= 0.99  # the band is +-2 sd: about 95%


def test_every_method_and_selection_runs() -> None:
    rng = np.random.default_rng(6)
    ms = synthetic_fleet(rng, n=500, m=4)
    fleet = Fleet.from_ms(["a", "b", "c", "d"], ms[:, :4])
    for sel in SELECTIONS:
        idx = choose_archs(fleet, 5, rng, sel)
        assert len(set(idx.tolist())) == 5
        for m in METHODS:
            p = fit(fleet, idx, ms[idx, 4], m)
            assert p.latency_ms.shape == (500,) and np.all(p.low_ms <= p.latency_ms)
            assert np.all(p.latency_ms <= p.high_ms) and np.all(np.isfinite(p.latency_ms))


def test_single_source_fleet() -> None:
    rng = np.random.default_rng(7)
    ms = synthetic_fleet(rng, n=400, m=1)
    fleet = Fleet.from_ms(["only"], ms[:, :1])
    idx = choose_archs(fleet, 4, rng)
    for method in ("fleet-bma", "nnls"):
        p = fit(fleet, idx, 3.0 * ms[idx, 0], method)
        np.testing.assert_allclose(p.latency_ms, 3.0 * ms[:, 0], rtol=1e-3)
    # the default mixture: ridge's shrinkage on 4 points moves the scale, not the order
    assert spearman(fit(fleet, idx, 3.0 * ms[idx, 0]).latency_ms, ms[:, 0]) > 0.999


def test_a_source_with_missing_archs_is_filled_in() -> None:
    rng = np.random.default_rng(8)
    ms = synthetic_fleet(rng, n=800, m=3)
    holes = ms[:, :3].copy()
    holes[:100, 2] = np.nan
    fleet = Fleet.from_ms(["a", "b", "c"], holes)
    assert fleet.imputed == ("c",) and np.all(np.isfinite(fleet.log_ms))


def test_bad_input() -> None:
    rng = np.random.default_rng(9)
    ms = synthetic_fleet(rng, n=100, m=2)
    fleet = Fleet.from_ms(["a", "b"], ms[:, :2])
    with pytest.raises(InvalidArgumentError, match="at least 2 measured"):
        fit(fleet, np.array([3]), np.array([1.0]))
    with pytest.raises(InvalidArgumentError, match="measured twice"):
        fit(fleet, np.array([3, 3]), np.array([1.0, 1.0]))
    with pytest.raises(InvalidArgumentError, match="> 0 ms"):
        fit(fleet, np.array([3, 4]), np.array([1.0, -1.0]))
    with pytest.raises(UnknownNameError):
        fit(fleet, np.array([3, 4]), np.array([1.0, 2.0]), "magic")
    with pytest.raises(InvalidArgumentError, match="at least 2"):
        choose_archs(fleet, 1, rng)
    disjoint = np.full((10, 2), np.nan)
    disjoint[:5, 0] = 1.0
    disjoint[5:, 1] = 2.0
    with pytest.raises(DataFileError, match="no architecture in common"):
        Fleet.from_ms(["a", "b"], disjoint)
    with pytest.raises(DataFileError, match="> 0 ms"):
        Fleet.from_ms(["a"], np.array([[1.0], [0.0], [2.0]]))
    with pytest.raises(InvalidArgumentError, match="repeat"):
        Fleet.from_ms(["a", "a"], ms[:, :2])


def test_fleet_ensemble_is_the_mixture_of_its_parts() -> None:
    rng = np.random.default_rng(11)
    ms = synthetic_fleet(rng, n=600, m=6, noise=0.03)
    fleet = Fleet.from_ms([f"d{j}" for j in range(6)], ms[:, :6])
    idx = choose_archs(fleet, 10, rng)
    parts = [fit(fleet, idx, ms[idx, 6], m) for m in ("fleet-bma", "ridge", "nnls")]
    ens = fit(fleet, idx, ms[idx, 6], "fleet-ensemble")
    logs = np.array([np.log(p.latency_ms) for p in parts])
    np.testing.assert_allclose(np.log(ens.latency_ms), logs.mean(axis=0), atol=1e-12)
    # the mixture's variance: the parts' mean variance plus their disagreement, never less than the former
    var = np.mean([p.log_sd**2 for p in parts], axis=0) + logs.var(axis=0)
    np.testing.assert_allclose(ens.log_sd**2, var, rtol=1e-9, atol=1e-12)
    assert ens.method == "fleet-ensemble" and abs(sum(ens.weights.values()) - 2 / 3) < 1e-9
    assert spearman(ens.latency_ms, ms[:, 6]) > 0.9
