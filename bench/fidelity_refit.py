"""Judge a stored ``bench/lut_fidelity.py`` run again with this checkout's calibration.

    .venv/bin/python bench/fidelity_refit.py DIR [DIR ...]

DIR is a run's ``--out-dir``: its ``lut_r{R}.json`` and ``models_r{R}_{median,min}.json`` (every model's arch, raw
sum and measured latency). Nothing is measured: the same measurements judged by the current code's calibration and
held-out procedure (``budgetnas.luts.calibration.holdout``, seed 0), so a change to either is compared on identical
data. ``--split`` judges, as runs before the cross-validation did, only the run's own held-out half (its stored
``eval_idx``) by a fit on the other half. Prints the table ``lut_fidelity.py`` prints.

A DIR holding a ``budgetnas.db`` (a ``make demo`` run) is judged the same way: LUT 1's stored whole models, their
times divided by the session ratio as the server's ``/calibrate`` divides them; ``--split`` then judges the half that
the server's seed-0 split held out before the cross-validation.
"""

from __future__ import annotations

import argparse
import json
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from budgetnas.luts.calibration import apply, fit_calibration, holdout, metrics, sessions
from budgetnas.luts.lut import LUT, LUTPredictor
from budgetnas.spaces import space_from_description

Rows = dict[str, dict[str, float | None]]


def judge(pred: LUTPredictor, archs: list[Any], y: np.ndarray, ev: np.ndarray | None) -> Rows:
    """Cross-validated figures (``ev`` None), else a fit on the models not in ``ev``, judged on ``ev``."""
    raw = pred.raw(archs)
    fits = (("calibrated_affine", "affine"), ("calibrated", "grouped"))
    if ev is None:
        return {"raw": metrics(raw, y), **{name: metrics(holdout(pred, archs, y, 0, method).predicted_ms, y)
                                           for name, method in fits}}
    fit = np.setdiff1d(np.arange(len(archs)), ev)
    if not len(fit):
        raise SystemExit("every model was held out (a cross-validated run): no half to refit on")
    out = {"raw": metrics(raw[ev], y[ev])}
    for name, method in fits:
        cal = fit_calibration(pred, [archs[i] for i in fit], y[fit], method)
        out[name] = metrics(apply(pred, cal, [archs[i] for i in ev]), y[ev])
    return out


def demo_rows(db: Path, split: bool) -> Rows:
    from budgetnas.db.repo import load_lut, model_measurement_rows
    from budgetnas.db.session import Database

    with Database(f"sqlite:///{db}").session() as s:
        lut = LUT.from_json_dict({**load_lut(s, 1), "calibration": None})
        rows = model_measurement_rows(s, 1)
    space = space_from_description(lut.meta.space)
    y, _ = sessions(lut, [r for _, _, r in rows], np.array([ms for _, ms, _ in rows]), True)
    order = np.random.default_rng(0).permutation(len(rows))  # the server's seed-0 half before the folds
    return judge(LUTPredictor(lut, space), [space.parse(a) for a, _, _ in rows], y,
                 np.sort(order[len(rows) // 2:]) if split else None)


def refit(lut_path: Path, models_path: Path, stat: str, split: bool = False) -> Rows:
    lut = LUT.load(lut_path)
    lut = replace(lut, meta=replace(lut.meta, statistic=stat))
    space = space_from_description(lut.meta.space)
    d = json.loads(models_path.read_text())
    archs = [space.parse(a) for a in d["archs"]]
    y = np.asarray(d["measured_ms"], np.float64)
    pred = LUTPredictor(lut, space)
    raw = pred.raw(archs)
    if not np.allclose(raw, d["raw_ms"], rtol=1e-9):
        raise SystemExit(f"{models_path}: its raw sums are not this checkout's sums of {lut_path.name} "
                         "(the space's walk changed since the run): refit would compare different things")
    return judge(pred, archs, y, np.asarray(d["eval_idx"], np.int64) if split else None)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dirs", type=Path, nargs="+", help="lut_fidelity.py --out-dir directories")
    ap.add_argument("--split", action="store_true", help="judge the run's own held-out half only (its eval_idx)")
    args = ap.parse_args()
    for d in args.dirs:
        if (d / "budgetnas.db").exists():
            show(f"{d} (demo)", demo_rows(d / "budgetnas.db", args.split))
        for models in sorted(d.glob("models_r*_*.json")):
            m = re.fullmatch(r"models_r(\d+)_(\w+)\.json", models.name)
            if not m:
                continue
            res, stat = m.groups()
            show(f"{d} r{res} statistic={stat}", refit(d / f"lut_r{res}.json", models, stat, args.split))


def show(title: str, rows: Rows) -> None:
    print(title)
    print(f"  {'':20}{'MAPE':>8}{'RMSPE':>8}{'±5%':>8}{'±10%':>8}{'tau':>8}")
    for name, r in rows.items():
        tau = r["kendall_tau"]
        print(f"  {name:20}{r['mape'] or 0:8.2%}{r['rmspe'] or 0:8.2%}{r['within_5pct'] or 0:8.1%}"
              f"{r['within_10pct'] or 0:8.1%}{tau if tau is not None else float('nan'):8.3f}")


if __name__ == "__main__":
    main()
