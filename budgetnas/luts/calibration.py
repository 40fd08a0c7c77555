"""The one calibration fit of a LUT against measured whole models, and how well it holds out.

Every caller fits here: the server's ``POST /v1/luts/{id}/calibrate``, ``budgetnas validate``,
the demo and the campaign. So the same measurements give the same stored calibration wherever
they are fitted (a test holds the server and ``validate`` to it).

    cal = fit_calibration(predictor, archs, measured_ms)              # grouped (the default)
    report = holdout(predictor, archs, measured_ms, seed=0)           # fit on a half, judge the other

The stored calibration is fitted on every model; the held-out figures come from the same fit on a
random half, judged on the other half, so they estimate (slightly pessimistically) how well the
stored one predicts models it has not seen.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from budgetnas.core.errors import InvalidArgumentError, UnknownNameError
from budgetnas.luts.lut import Calibration, LUTPredictor

DEFAULT_METHOD = "grouped"


def _affine(predictor: LUTPredictor, archs: Sequence[Any], measured: np.ndarray, names: Sequence[str]) -> Calibration:
    return Calibration.fit(predictor.raw(archs), measured, names=names)


def _grouped(predictor: LUTPredictor, archs: Sequence[Any], measured: np.ndarray,
             names: Sequence[str]) -> Calibration:
    g, groups = predictor.group_sums(archs)
    return Calibration.fit(predictor.raw(archs), measured, g, groups, names=names)


# grouped: one scale per stage (budgetnas.luts.lut.key_group) beside slope and intercept; affine: those two only
METHODS: dict[str, Callable[[LUTPredictor, Sequence[Any], np.ndarray, Sequence[str]], Calibration]] = {
    "grouped": _grouped, "affine": _affine}


def check_method(method: str) -> str:
    if method not in METHODS:
        raise UnknownNameError("calibration method", method, list(METHODS))
    return method


def fit_calibration(predictor: LUTPredictor, archs: Sequence[Any], measured_ms: Sequence[float] | np.ndarray,
                    method: str = DEFAULT_METHOD, names: Sequence[str] = ()) -> Calibration:
    """The calibration of ``predictor``'s LUT from whole models (parsed archs) and their measured
    latencies; refuses what :meth:`Calibration.fit` refuses (``names`` name the models in its errors)."""
    y = np.asarray(measured_ms, np.float64)
    if y.shape != (len(archs),):
        raise InvalidArgumentError(f"calibration: {len(archs)} models but {y.size} measured latencies")
    return METHODS[check_method(method)](predictor, archs, y, names)


def metrics(predicted: np.ndarray, measured: np.ndarray) -> dict[str, float]:
    """Relative errors of predictions (fractions, not percents): MAPE, RMSPE, the shares within
    ±5% and ±10% of measured, and Kendall's tau between predicted and measured."""
    from scipy.stats import kendalltau

    rel = (np.asarray(predicted, np.float64) - measured) / measured
    tau = float(kendalltau(predicted, measured).statistic) if len(measured) > 1 else float("nan")
    return {"mape": float(np.mean(np.abs(rel))), "rmspe": float(np.sqrt(np.mean(rel**2))),
            "within_5pct": float(np.mean(np.abs(rel) <= 0.05)), "within_10pct": float(np.mean(np.abs(rel) <= 0.10)),
            "kendall_tau": tau}


def split(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The fit half and the held-out half of ``n`` models (sorted indices), random by ``seed``."""
    order = np.random.default_rng(seed).permutation(n)
    return np.sort(order[: n // 2]), np.sort(order[n // 2:])


@dataclass(frozen=True)
class Holdout:
    """The calibration fitted on every model, and the held-out figures of the same fit on a half."""

    calibration: Calibration
    fit_idx: np.ndarray
    eval_idx: np.ndarray
    half: Calibration  # the fit on ``fit_idx`` only, whose predictions ``calibrated`` judges
    predicted_ms: np.ndarray  # every model's prediction by ``half`` (the held-out ones are judged)

    def to_dict(self, raw_ms: np.ndarray, measured_ms: np.ndarray) -> dict[str, Any]:
        e = self.eval_idx
        return {"n_fit": len(self.fit_idx), "n_held_out": len(e), "raw": metrics(raw_ms[e], measured_ms[e]),
                "calibrated": metrics(self.predicted_ms[e], measured_ms[e])}


MIN_HOLDOUT = 4  # 2 to fit, 2 to judge


def holdout(predictor: LUTPredictor, archs: Sequence[Any], measured_ms: Sequence[float] | np.ndarray,
            seed: int = 0, method: str = DEFAULT_METHOD, names: Sequence[str] = ()) -> Holdout:
    """:func:`fit_calibration` on every model, and on a random half judged on the other half."""
    y = np.asarray(measured_ms, np.float64)
    if len(archs) < MIN_HOLDOUT:
        raise InvalidArgumentError(f"calibration: {len(archs)} models; a held-out report needs {MIN_HOLDOUT}")
    full = fit_calibration(predictor, archs, y, method, names)
    fit, ev = split(len(archs), seed)
    sub = [archs[i] for i in fit]
    half = fit_calibration(predictor, sub, y[fit], method, [names[i] for i in fit] if names else ())
    return Holdout(full, fit, ev, half, apply(predictor, half, archs))


def apply(predictor: LUTPredictor, cal: Calibration, archs: Sequence[Any]) -> np.ndarray:
    """``cal``'s predictions of ``archs`` (with its group scales, if any) over ``predictor``'s LUT."""
    if not cal.group_scales:
        return cal.apply(predictor.raw(archs))
    g, groups = predictor.group_sums(archs)
    return cal.apply(g @ np.array([cal.scale(x) for x in groups]))
