"""Judge a stored ``bench/lut_fidelity.py`` run again with this checkout's calibration.

    .venv/bin/python bench/fidelity_refit.py DIR [DIR ...]

DIR is a run's ``--out-dir``: its ``lut_r{R}.json`` and ``models_r{R}_{median,min}.json`` (every model's arch, raw
sum and measured latency). Nothing is measured: the same measurements judged by the current code's calibration and
held-out procedure (``budgetnas.luts.calibration.holdout``, seed 0), so a change to either is compared on identical
data. ``--split`` judges, as runs before the cross-validation did, only the run's own held-out half (its stored
``eval_idx``) by a fit on the other half. Prints the table ``lut_fidelity.py`` prints.
"""

from __future__ import annotations

import argparse
import json
import re
from dataclasses import replace
from pathlib import Path

import numpy as np

from budgetnas.luts.calibration import apply, fit_calibration, holdout, metrics
from budgetnas.luts.lut import LUT, LUTPredictor
from budgetnas.spaces import get_space


def refit(lut_path: Path, models_path: Path, stat: str, split: bool = False) -> dict[str, dict[str, float | None]]:
    lut = LUT.load(lut_path)
    lut = replace(lut, meta=replace(lut.meta, statistic=stat))
    desc = lut.meta.space
    space = get_space(desc["space"], **{k: v for k, v in desc.items() if k != "space"})
    d = json.loads(models_path.read_text())
    archs = [space.parse(a) for a in d["archs"]]
    y = np.asarray(d["measured_ms"], np.float64)
    pred = LUTPredictor(lut, space)
    raw = pred.raw(archs)
    if not np.allclose(raw, d["raw_ms"], rtol=1e-9):
        raise SystemExit(f"{models_path}: its raw sums are not this checkout's sums of {lut_path.name} "
                         "(the space's walk changed since the run): refit would compare different things")
    if not split:
        return {"raw": metrics(raw, y), **{name: metrics(holdout(pred, archs, y, 0, method).predicted_ms, y)
                                           for name, method in (("calibrated_affine", "affine"),
                                                                ("calibrated", "grouped"))}}
    ev = np.asarray(d["eval_idx"], np.int64)
    fit = np.setdiff1d(np.arange(len(archs)), ev)
    if not len(fit):
        raise SystemExit(f"{models_path}: every model was held out (a cross-validated run): no half to refit on")
    out = {"raw": metrics(raw[ev], y[ev])}
    for name, method in (("calibrated_affine", "affine"), ("calibrated", "grouped")):
        cal = fit_calibration(pred, [archs[i] for i in fit], y[fit], method)
        out[name] = metrics(apply(pred, cal, [archs[i] for i in ev]), y[ev])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dirs", type=Path, nargs="+", help="lut_fidelity.py --out-dir directories")
    ap.add_argument("--split", action="store_true", help="judge the run's own held-out half only (its eval_idx)")
    args = ap.parse_args()
    for d in args.dirs:
        for models in sorted(d.glob("models_r*_*.json")):
            m = re.fullmatch(r"models_r(\d+)_(\w+)\.json", models.name)
            if not m:
                continue
            res, stat = m.groups()
            rows = refit(d / f"lut_r{res}.json", models, stat, args.split)
            print(f"{d} r{res} statistic={stat}")
            print(f"  {'':20}{'MAPE':>8}{'RMSPE':>8}{'±5%':>8}{'±10%':>8}{'tau':>8}")
            for name, r in rows.items():
                tau = r["kendall_tau"]
                print(f"  {name:20}{r['mape'] or 0:8.2%}{r['rmspe'] or 0:8.2%}{r['within_5pct'] or 0:8.1%}"
                      f"{r['within_10pct'] or 0:8.1%}{tau if tau is not None else float('nan'):8.3f}")


if __name__ == "__main__":
    main()
