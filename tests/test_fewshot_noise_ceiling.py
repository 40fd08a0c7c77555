"""bench/fewshot.py's noise ceiling recovers a known noise from pairs of one network measured twice."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np

_SPEC = importlib.util.spec_from_file_location("fewshot_bench", Path(__file__).resolve().parents[1] / "bench" / "fewshot.py")
assert _SPEC is not None and _SPEC.loader is not None
fewshot = importlib.util.module_from_spec(_SPEC)
_SPEC.loader.exec_module(fewshot)


def _synthetic(noise: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    n = len(noise)
    true_log = rng.normal(2.0, 0.5, n // 2)
    truth = np.exp(np.r_[true_log, true_log] + noise)  # rows i and i + n/2 are one network
    pairs = np.column_stack([np.arange(n // 2), np.arange(n // 2) + n // 2])
    return truth, pairs


def test_gaussian_noise_is_recovered() -> None:
    rng = np.random.default_rng(0)
    sd = 0.05
    truth, pairs = _synthetic(rng.normal(0, sd, 4000), rng)
    r = fewshot.noise_ceiling(truth, pairs, seed=1)
    assert abs(r["noise_sd"] - sd) < 0.01
    expected = math.erf(math.log(1.1) / (sd * math.sqrt(2))) / 2 + math.erf(-math.log(0.9) / (sd * math.sqrt(2))) / 2
    assert abs(r["within_10pct"] - expected) < 0.02
    # log-sd 0.5 of true latencies against noise 0.05: Spearman about 0.99
    assert 0.98 < r["spearman"] < 0.999 and r["spearman_sd"] < 0.01
    assert r["pairs"] == 2000


def test_heavy_tails_are_deconvolved_not_averaged() -> None:
    """90% of archs exact, 10% off by a factor ~2: the share within +-10% is ~0.9, not the ~0.81 that
    pair differences taken as noise (two draws per pair) would say."""
    rng = np.random.default_rng(2)
    n = 6000
    noise = np.where(rng.random(n) < 0.1, rng.normal(0, 0.7, n), rng.normal(0, 0.005, n))
    truth, pairs = _synthetic(noise, rng)
    r = fewshot.noise_ceiling(truth, pairs, seed=3)
    assert abs(r["within_10pct"] - 0.9) < 0.03
    bound = np.mean(np.where(np.exp(np.abs(np.log(truth[pairs[:, 0]] / truth[pairs[:, 1]]))) <= 1.1 / 0.9, 1.0, 0.5))
    assert r["pair_within_10pct"] == bound >= r["within_10pct"] - 0.03
