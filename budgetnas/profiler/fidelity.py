"""How well a LUT predicts whole models: measure N random models on the LUT's runner, fit the
calibration, report on held-out models.

    report = validate(lut, n_models=100, seed=0)          # FidelityReport
    report.to_dict()   # {"n_models", "n_fit", "n_eval", "raw": {...}, "calibrated": {...}, "calibration", ...}
    plot_fidelity(report, "fidelity.png")

The fit is the project's one calibration (``budgetnas.luts.calibration``, the same as the server's
``/calibrate``): ``calibration`` is fitted on every model (what ``--update-lut`` stores); the
figures are k-fold cross-validated: every model judged by the same fit made without its fold (5 random
folds). Metrics (fractions, not percents) for raw sums and calibrated predictions of every model:
``mape``, ``rmspe``, ``within_5pct``, ``within_10pct`` (share with |error| <= 5% / 10% of
measured) and ``kendall_tau``. Whole models run on the same runner (backend, threads, batch,
exporter) with the same interleaved protocol as the blocks; all N models share the same rounds, and
the folds are random, so no fold is measured in a different period than the others.

Sessions: the LUT's blocks and the whole models are measured at different times, maybe under
different load. Both record the reference workload (``budgetnas.profiler.reference``); the ratio of
the models' median reference to the LUT's is reported as ``session_ratio`` (1.0: equally quiet) and,
with ``correct_sessions``, the whole models' times are divided by it before anything is fitted or
compared (``budgetnas.luts.calibration.sessions``, the server's rule too), so the report judges the
LUT, not the difference between the two sessions. ``uncorrected`` keeps the
calibrated figures without that division; ``disturbed_models`` counts models the protocol flagged.

The truth's own noise: one session's time of a whole model can scatter by a few percent from the next
session's (2.4-2.7% sd on the project's VM in a noisy hour), which alone caps the share within ±5%.
``validate(model_sessions=N)`` measures the models N times and pools them (:func:`pooled_ms`), and
reports ``session_noise`` (that scatter) and ``model_sessions``.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from budgetnas.core.errors import DataFileError, InvalidArgumentError, MissingKeysError
from budgetnas.luts.calibration import (
    DEFAULT_METHOD,
    MIN_HOLDOUT,
    AnchorDrift,
    Holdout,
    anchor_drift,
    check_method,
    holdout,
    metrics,
    positive_ms,
    session_ratio,
    sessions,
)
from budgetnas.luts.lut import LUT, Calibration, LUTPredictor
from budgetnas.profiler.protocol import Measurement, Protocol, measure_many
from budgetnas.profiler.runners import Runner, get_runner
from budgetnas.profiler.targets import Target, model_target
from budgetnas.spaces import space_from_description

MIN_MODELS = MIN_HOLDOUT  # each fold's fit needs the others
MAX_LIVE_MODELS = 24  # whole models kept loaded at once; beyond, each visit reloads (bounded memory)


@dataclass
class FidelityReport:
    archs: list[str]
    raw_ms: np.ndarray
    measured_ms: np.ndarray
    fit: Holdout
    lut_meta: dict[str, Any]
    noisy_models: int = 0
    wall_seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def calibration(self) -> Calibration:
        """Fitted on every model: what ``--update-lut`` stores (and the server's ``/calibrate`` would)."""
        return self.fit.calibration

    @property
    def eval_idx(self) -> np.ndarray:
        return self.fit.eval_idx

    @property
    def calibrated_ms(self) -> np.ndarray:
        """Every model's prediction by the fit made without its fold (every one is judged)."""
        return self.fit.predicted_ms

    def to_dict(self) -> dict[str, Any]:
        return {
            "n_models": len(self.archs), "n_fit": self.fit.n_fit, "n_eval": len(self.eval_idx),
            "folds": len(self.fit.folds),
            "space": self.lut_meta.get("space"), "backend": self.lut_meta.get("backend"),
            "threads": self.lut_meta.get("threads"), "batch": self.lut_meta.get("batch"),
            **{k: v for k, v in self.fit.to_dict(self.raw_ms, self.measured_ms).items() if k in ("raw", "calibrated")},
            "calibration": self.calibration.to_dict(),
            "measured_ms_median": float(np.median(self.measured_ms)),
            "noisy_models": self.noisy_models, "wall_seconds": round(self.wall_seconds, 1), **self.extra,
        }


def runner_for(lut: LUT, **kw: Any) -> Runner:
    """The runner a LUT was measured with (backend, threads, batch, exporter)."""
    m = lut.meta
    return get_runner(m.backend, threads=m.threads, batch=m.batch,
                      exporter=str(m.protocol.get("exporter", "dynamo")), **kw)


def measure_models(lut: LUT, n_models: int, seed: int = 0, runner: Runner | None = None,
                   protocol: Protocol | None = None,
                   progress: bool = True) -> tuple[list[str], np.ndarray, Measurement]:
    """Sample ``n_models`` archs of the LUT's space, check coverage, measure them (interleaved rounds).

    Returns the canonical arch strings, their raw LUT sums and the measurement.
    """
    if n_models < MIN_MODELS:
        raise InvalidArgumentError(f"--models must be >= {MIN_MODELS} (each judged by a fit on the others)")
    space = space_from_description(lut.meta.space)
    runner = runner or runner_for(lut)
    archs = space.sample_many(n_models, seed)
    try:
        raw = LUTPredictor(lut, space).raw(archs)
    except MissingKeysError as exc:
        raise DataFileError(f"the LUT does not cover these models: {exc}") from None
    proto = protocol or Protocol()
    proto = replace(proto, max_live=min(proto.max_live, MAX_LIVE_MODELS))
    targets = [model_target(space, a, runner.batch) for a in archs]
    m = measure_many(runner, targets, proto, progress=progress, desc=f"measuring {n_models} models")
    return [t.name for t in targets], raw, m


def pooled_ms(ms: Sequence[Measurement], names: Sequence[str], stat: str) -> tuple[np.ndarray, float | None]:
    """Each model's time pooled over sessions that measured the same models, on the first session's
    scale: every later session divided by the median ratio of all its models to the first's (like for
    like: the same graphs), then each model's geometric mean. Also the noise of one session's time
    (the sd of the log ratio between two sessions over sqrt 2, averaged over the pairs; None for one)."""
    if not ms:
        raise InvalidArgumentError("pooled_ms: no sessions")
    if len(ms) == 1:
        return np.array([ms[0].stats[n].value(stat) for n in names]), None
    logs = np.log([[m.stats[n].value(stat) for n in names] for m in ms])
    logs -= np.median(logs - logs[0], axis=1, keepdims=True)  # each session on the first's scale
    pairs = [np.std(logs[i] - logs[j]) / np.sqrt(2) for i in range(len(ms)) for j in range(i)]
    return np.exp(logs.mean(0)), float(np.mean(pairs)) if pairs else None


@dataclass(frozen=True)
class AnchoredSession:
    """Targets measured in one session beside anchors (models a calibration was fitted on): the
    measurement, the anchors' drift from the calibration's scale (:func:`anchor_drift`) and the
    reference workload's ratio to the LUT's session (None where either was not timed)."""

    measurement: Measurement
    drift: AnchorDrift
    reference_ratio: float | None


def measure_anchored(runner: Runner, targets: Sequence[Target], anchors: Sequence[Target], fitted_ms: Sequence[float],
                     statistic: str, protocol: Protocol | None = None, lut_reference_ms: float | None = None,
                     progress: bool = True, desc: str = "measuring") -> AnchoredSession:
    """``targets`` and ``anchors`` measured in one session (each distinct model once: two budgets may get
    one arch, an arch may be an anchor), the anchors judged against ``fitted_ms`` (their times as the
    calibration was fitted on them, in ``anchors``' order). Anchors without one time each, or times
    that are not finite numbers > 0 ms, are refused before anything is measured."""
    if len(fitted_ms) != len(anchors) or not anchors or any(positive_ms(v) is None for v in fitted_ms):
        raise InvalidArgumentError(f"anchors: {len(anchors)} models with times as fitted {list(fitted_ms)!r}; "
                                   "need one finite time > 0 ms per anchor, at least one anchor")
    unique = list({t.name: t for t in [*targets, *anchors]}.values())
    m = measure_many(runner, unique, protocol, progress=progress, desc=desc)
    drift = anchor_drift([m.stats[t.name].value(statistic) for t in anchors], fitted_ms)
    # the reference's median over every visit of the session: steadier than a few per-entry medians
    return AnchoredSession(m, drift, session_ratio(positive_ms(m.reference_ms), lut_reference_ms))


def report_from(lut: LUT, names: list[str], raw: np.ndarray, m: Measurement, seed: int = 0,
                method: str = DEFAULT_METHOD, correct_sessions: bool = True,
                repeats: Sequence[Measurement] = ()) -> FidelityReport:
    """The calibration (``method``, see ``budgetnas.luts.calibration``) of every model, and its
    figures cross-validated: each model judged by the same fit made without its fold.

    Whole models are summarised with the LUT's own statistic (median, min...), so both sides agree.
    ``repeats``: later sessions of the same models, pooled with ``m`` (:func:`pooled_ms`; the session
    correction is ``m``'s, whose scale they are put on). Beside a grouped fit the report also gives the
    plain affine calibration's figures as ``calibrated_affine``, for comparison.
    """
    stat = lut.meta.statistic
    as_taken, noise = pooled_ms([m, *repeats], names, stat)
    measured, sess = sessions(lut, [m.stats[n].reference_ms for n in names], as_taken, correct_sessions)
    space = space_from_description(lut.meta.space)
    predictor, archs = LUTPredictor(lut, space), [space.parse(a) for a in names]
    fit = holdout(predictor, archs, measured, seed, method, names)
    ev = fit.eval_idx
    extra: dict[str, Any] = {"statistic": stat, "overhead_ms": m.overhead.median_ms, "calibration_method": method,
                             **sess.to_dict(), "disturbed_models": len(set(m.disturbed) & set(names)),
                             "model_sessions": 1 + len(repeats), "session_noise": noise}
    if method != "affine":
        affine = holdout(predictor, archs, measured, seed, "affine", names)
        extra["calibrated_affine"] = metrics(affine.predicted_ms[ev], measured[ev])
    if extra["sessions_corrected"]:  # the same fit on the times as taken, for comparison
        plain = holdout(predictor, archs, as_taken, seed, "affine", names)
        extra["uncorrected"] = {"raw": metrics(raw[ev], as_taken[ev]),
                                "calibrated_affine": metrics(plain.predicted_ms[ev], as_taken[ev])}
    return FidelityReport(names, raw, measured, fit, lut.to_json_dict(samples=False)["meta"],
                          noisy_models=sum(m.stats[k].noisy for k in set(names)),
                          wall_seconds=m.wall_seconds, extra=extra)


def validate(lut: LUT, n_models: int, seed: int = 0, runner: Runner | None = None,
             protocol: Protocol | None = None, progress: bool = True, method: str = DEFAULT_METHOD,
             correct_sessions: bool = True, model_sessions: int = 1) -> FidelityReport:
    """Measure ``n_models`` random models in ``model_sessions`` sessions (pooled: :func:`pooled_ms`) and report."""
    check_method(method)  # before any measuring
    if model_sessions < 1:
        raise InvalidArgumentError(f"model_sessions: must be >= 1, got {model_sessions}")
    names, raw, m = measure_models(lut, n_models, seed, runner, protocol, progress)
    repeats = [measure_models(lut, n_models, seed, runner, protocol, progress)[2] for _ in range(model_sessions - 1)]
    return report_from(lut, names, raw, m, seed, method, correct_sessions, repeats)


def check_writable(path: str | Path) -> Path:
    """Fail before any measuring when an output path cannot be written."""
    p = Path(path)
    parent = p.parent if str(p.parent) else Path(".")
    if p.is_dir():
        raise DataFileError(f"cannot write {p}: it is a directory")
    if not parent.is_dir():
        raise DataFileError(f"cannot write {p}: directory {parent} does not exist")
    if not os.access(parent, os.W_OK) or (p.exists() and not os.access(p, os.W_OK)):
        raise DataFileError(f"cannot write {p}: permission denied")
    return p


def plot_fidelity(report: FidelityReport, path: str | Path) -> None:
    """Predicted vs measured for the held-out models (raw and calibrated), written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    p = check_writable(path)
    e = report.eval_idx
    meas, raw, cal = report.measured_ms[e], report.raw_ms[e], report.calibrated_ms[e]
    d = report.to_dict()
    fig, ax = plt.subplots(figsize=(5.5, 5), dpi=110)
    lo, hi = float(min(meas.min(), raw.min(), cal.min())) * 0.95, float(max(meas.max(), raw.max(), cal.max())) * 1.05
    xs = np.linspace(lo, hi, 2)
    ax.plot(xs, xs, "k-", lw=1, label="y = x")
    ax.fill_between(xs, xs * 0.95, xs * 1.05, color="0.85", label="±5%")
    ax.scatter(meas, raw, s=12, alpha=0.6, label=f"raw sum (RMSPE {d['raw']['rmspe']:.1%})")
    ax.scatter(meas, cal, s=12, alpha=0.8, label=f"calibrated (RMSPE {d['calibrated']['rmspe']:.1%}, "
                                                f"{d['calibrated']['within_5pct']:.0%} within ±5%)")
    ax.set_xlabel("measured whole model (ms)")
    ax.set_ylabel("predicted from LUT (ms)")
    ax.set_title(f"{d['space'].get('space')} on {d['backend']} ({len(e)} held-out models)", fontsize=10)
    ax.legend(fontsize=8, loc="upper left")
    fig.tight_layout()
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".png", dir=p.parent if str(p.parent) else ".")
    os.close(fd)
    try:
        fig.savefig(tmp, format="png")
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    finally:
        plt.close(fig)
