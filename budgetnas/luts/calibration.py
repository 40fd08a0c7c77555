"""The one calibration fit of a LUT against measured whole models, and how well it holds out.

Every caller fits here: the server's ``POST /v1/luts/{id}/calibrate``, ``budgetnas validate``,
the demo and the campaign. So the same measurements give the same stored calibration wherever
they are fitted (a test holds the server and ``validate`` to it).

    cal = fit_calibration(predictor, archs, measured_ms)              # grouped (the default)
    report = holdout(predictor, archs, measured_ms, seed=0)           # k-fold: each model judged unseen

The stored calibration is fitted on every model; the held-out figures are k-fold cross-validated:
the models are dealt at random into ``FOLDS`` parts, and each part is judged by the same fit made on
the other parts. So every model is judged by a fit that did not see it, and the figures estimate
(slightly pessimistically: each fit has a fifth fewer models) how well the stored one predicts models
it has not seen. (A single random half judged ~half the models with a fit on half of them: with the
demo's 24 models, one miss cost 8 points of the share within ±5%.)

Sessions: the LUT's blocks and the whole models are measured at different times, maybe under
different load. Both record the reference workload (``budgetnas.profiler.reference``): each entry and
each model keeps the median over its kept visits (``reference_ms``); the LUT's session is the median
of its entries' (else its meta's ``protocol.reference_ms``), the models' the median of theirs.
:func:`sessions` compares them; with ``correct`` the models' times are divided by the ratio before
anything is fitted, so a calibration predicts on the LUT session's scale. A session after the fit
(measuring what a calibrated LUT predicted) is put on that scale by :func:`anchor_drift`: a few of
the fitted models (:func:`pick_anchors`) measured again beside the new ones.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from budgetnas.core.errors import InvalidArgumentError, UnknownNameError
from budgetnas.luts.lut import LUT, Calibration, LUTPredictor

DEFAULT_METHOD = "grouped"


def _affine(predictor: LUTPredictor, archs: Sequence[Any], measured: np.ndarray, names: Sequence[str]) -> Calibration:
    return Calibration.fit(predictor.raw(archs), measured, names=names)


def _grouped(predictor: LUTPredictor, archs: Sequence[Any], measured: np.ndarray,
             names: Sequence[str]) -> Calibration:
    g, groups = predictor.group_sums(archs)
    return Calibration.fit(predictor.raw(archs), measured, g, groups, names=names)


# grouped: one scale per op and stage (budgetnas.luts.lut.key_group) beside slope and intercept; affine: those two only
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


def kendall_tau(x: np.ndarray, y: np.ndarray) -> float:
    """Kendall's tau-b (ties in either variable accounted for, as scipy's default); NaN when either
    variable is constant. numpy only (the base install has no scipy): O(n^2) pairs, in row chunks."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    n = len(x)
    s = tx = ty = 0.0
    for lo in range(0, n, 512):
        i = np.arange(lo, min(lo + 512, n))[:, None]
        upper = np.arange(n)[None, :] > i  # each pair once
        dx, dy = np.sign(x[i] - x[None, :]) * upper, np.sign(y[i] - y[None, :]) * upper
        s += float((dx * dy).sum())
        tx += float(np.abs(dx).sum())  # pairs not tied in x
        ty += float(np.abs(dy).sum())
    return s / np.sqrt(tx * ty) if tx > 0 and ty > 0 else float("nan")


def metrics(predicted: np.ndarray, measured: np.ndarray) -> dict[str, float | None]:
    """Relative errors of predictions (fractions, not percents): MAPE, RMSPE, the shares within
    ±5% and ±10% of measured, and Kendall's tau between predicted and measured."""
    rel = (np.asarray(predicted, np.float64) - measured) / measured
    tau = kendall_tau(predicted, measured) if len(measured) > 1 else float("nan")
    # None, not NaN, when either side is constant: JSON has no NaN
    return {"mape": float(np.mean(np.abs(rel))), "rmspe": float(np.sqrt(np.mean(rel**2))),
            "within_5pct": float(np.mean(np.abs(rel) <= 0.05)), "within_10pct": float(np.mean(np.abs(rel) <= 0.10)),
            "kendall_tau": tau if math.isfinite(tau) else None}


def session_ratio(measured_ms: float | None, baseline_ms: float | None) -> float | None:
    """How much slower the machine ran in one session than in another, by their reference medians
    (None when either session has no reference)."""
    if not measured_ms or not baseline_ms:
        return None
    return float(measured_ms) / float(baseline_ms)


def positive_ms(value: Any) -> float | None:
    """A reference time as stored in free-form records: a finite number > 0 (not a bool), else None."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
        return None
    return float(value)


def lut_reference_ms(lut: LUT) -> float | None:
    """The LUT's session reference: the median of its entries' (each the median over that entry's kept
    visits, as the models' are), else its meta's session median (a LUT whose entries lack them)."""
    refs = [r for r in (positive_ms(e.reference_ms) for e in lut.entries.values()) if r is not None]
    if refs:
        return float(np.median(refs))
    return positive_ms(lut.meta.protocol.get("reference_ms"))


@dataclass(frozen=True)
class Sessions:
    """How comparable the LUT's session and the whole models' were, and whether times were divided by it."""

    lut_ms: float | None
    models_ms: float | None
    models_with_reference: int
    corrected: bool

    @property
    def ratio(self) -> float | None:
        return session_ratio(self.models_ms, self.lut_ms)

    def to_dict(self) -> dict[str, Any]:
        return {"reference_ms": {"lut": self.lut_ms, "models": self.models_ms}, "session_ratio": self.ratio,
                "models_with_reference": self.models_with_reference, "sessions_corrected": self.corrected}


def sessions(lut: LUT, model_reference_ms: Sequence[float | None], measured_ms: np.ndarray,
             correct: bool = True) -> tuple[np.ndarray, Sessions]:
    """The models' times to fit and the comparison, from each model's ``reference_ms`` (None: not
    timed). With ``correct`` the times are divided by the session ratio when the LUT and *every* model
    timed the reference (a model without one may come from another session: nothing is assumed)."""
    refs = [r for r in (positive_ms(v) for v in model_reference_ms) if r is not None]
    models = float(np.median(refs)) if refs else None
    out = Sessions(lut_reference_ms(lut), models, len(refs), False)
    ratio = out.ratio
    if not correct or ratio is None or len(refs) < len(model_reference_ms):
        return np.asarray(measured_ms, np.float64), out
    return np.asarray(measured_ms, np.float64) / ratio, Sessions(out.lut_ms, models, len(refs), True)


def pick_anchors(fitted_ms: Sequence[float] | np.ndarray, k: int) -> list[int]:
    """``min(k, n)`` indices of measured models spread evenly over their sorted latencies, the fastest
    and the slowest included: the anchors :func:`anchor_drift` re-measures."""
    y = np.asarray(fitted_ms, np.float64)
    if k < 1:
        raise InvalidArgumentError(f"anchors: need at least 1, got {k}")
    order = np.argsort(y, kind="stable")
    return sorted({int(order[round(q)]) for q in np.linspace(0, len(y) - 1, min(k, len(y)))})


@dataclass(frozen=True)
class AnchorDrift:
    """How a later session ran whole models against the calibration's scale: models the calibration
    was fitted on (anchors), re-measured in that session, each ``now / as fitted`` (its earlier time
    divided by its session's ratio, as :func:`sessions` fitted it).

    Like for like, unlike the reference workload's ratio: the same kind of graph on the same runner,
    and on the very scale the predictions are in, whatever the reference's own error was then. Four
    demos re-measured on their VM, 2 sessions each: the reference read x0.81-0.96 the LUT session's,
    the anchors x0.95-1.00 their fitted times, each anchor within 2% of their median and each run's
    two sessions within 0.1% (bench/results/demo_anchors_20261206.txt)."""

    ratios: tuple[float, ...]

    @property
    def ratio(self) -> float:
        return float(np.median(self.ratios))

    def to_dict(self) -> dict[str, Any]:
        return {"ratio": self.ratio, "anchors": len(self.ratios), "min": min(self.ratios), "max": max(self.ratios)}


def anchor_drift(now_ms: Sequence[float], fitted_ms: Sequence[float]) -> AnchorDrift:
    """The drift from anchors measured ``now_ms`` and ``fitted_ms`` as the calibration saw them;
    refuses unequal lengths, none, and times that are not finite numbers > 0 ms, by name."""
    if len(now_ms) != len(fitted_ms) or not len(now_ms):
        raise InvalidArgumentError(f"anchors: {len(now_ms)} times now for {len(fitted_ms)} as fitted; "
                                   "need one of each per anchor, at least one")
    for what, values in (("now", now_ms), ("as fitted", fitted_ms)):
        bad = [v for v in values if positive_ms(v) is None]
        if bad:
            raise InvalidArgumentError(f"anchors: a time {what} is {bad[0]!r}; each must be a finite number > 0 ms")
    return AnchorDrift(tuple(float(a) / float(b) for a, b in zip(now_ms, fitted_ms, strict=True)))


FOLDS = 5  # cross-validation's parts: every fit on 4/5 of the models, as customary


def folds(n: int, seed: int, k: int = FOLDS) -> list[np.ndarray]:
    """``min(k, n)`` near-equal disjoint parts of ``n`` models covering them all (sorted indices),
    dealt at random by ``seed``."""
    order = np.random.default_rng(seed).permutation(n)
    return [np.sort(part) for part in np.array_split(order, min(k, n))]


@dataclass(frozen=True)
class Holdout:
    """The calibration fitted on every model, and each model's prediction by the same fit made
    without its fold (k-fold cross-validation)."""

    calibration: Calibration
    folds: tuple[np.ndarray, ...]
    predicted_ms: np.ndarray  # every model's prediction by the fit that did not see it

    @property
    def n_fit(self) -> int:
        """The models the smallest of the fits had."""
        return len(self.predicted_ms) - max(len(f) for f in self.folds)

    @property
    def eval_idx(self) -> np.ndarray:
        """Every model is judged (each by the fit without its fold)."""
        return np.arange(len(self.predicted_ms))

    def to_dict(self, raw_ms: np.ndarray, measured_ms: np.ndarray) -> dict[str, Any]:
        return {"n_fit": self.n_fit, "n_held_out": len(self.predicted_ms), "folds": len(self.folds),
                "raw": metrics(raw_ms, measured_ms), "calibrated": metrics(self.predicted_ms, measured_ms)}


MIN_HOLDOUT = 4  # each fit then has 3 models (an affine fit needs 2)


class HoldoutError(InvalidArgumentError):
    """The fit on every model worked, one without a fold did not: no held-out figures."""


def holdout(predictor: LUTPredictor, archs: Sequence[Any], measured_ms: Sequence[float] | np.ndarray,
            seed: int = 0, method: str = DEFAULT_METHOD, names: Sequence[str] = (),
            full: Calibration | None = None, k: int = FOLDS) -> Holdout:
    """:func:`fit_calibration` on every model (``full`` when the caller has it already), and the
    same fit without each of ``k`` random folds, judged on that fold."""
    y = np.asarray(measured_ms, np.float64)
    if len(archs) < MIN_HOLDOUT:
        raise InvalidArgumentError(f"calibration: {len(archs)} models; a held-out report needs {MIN_HOLDOUT}")
    if k < 2:
        raise InvalidArgumentError(f"calibration: cross-validation needs 2 folds or more, got {k}")
    if full is None:
        full = fit_calibration(predictor, archs, y, method, names)
    parts = folds(len(archs), seed, k)
    predicted = np.empty(len(archs))
    for part in parts:
        fit = np.setdiff1d(np.arange(len(archs)), part)
        try:
            cal = fit_calibration(predictor, [archs[i] for i in fit], y[fit], method,
                                  [names[i] for i in fit] if names else ())
        except InvalidArgumentError as exc:  # a few models: a fold's rest may hold no usable slope while all do
            raise HoldoutError(f"the fit on {len(fit)} of the {len(archs)} models, without a fold of "
                               f"{len(part)}, failed ({exc}); measure more models for held-out figures") from None
        predicted[part] = apply(predictor, cal, [archs[i] for i in part])
    return Holdout(full, tuple(parts), predicted)


def apply(predictor: LUTPredictor, cal: Calibration, archs: Sequence[Any]) -> np.ndarray:
    """``cal``'s predictions of ``archs`` (with its group scales, if any) over ``predictor``'s LUT."""
    if not cal.group_scales:
        return cal.apply(predictor.raw(archs))
    g, groups = predictor.group_sums(archs)
    return cal.apply(g @ np.array([cal.scale(x) for x in groups]))
