"""How strong the grouped calibration's ridge should be: held-out fidelity over random fit sets, offline.

    .venv/bin/python bench/calibration_ridge.py DIR [DIR ...] [--fit-sizes 8,12,24,half] [--draws 20]

DIR is a ``bench/lut_fidelity.py --out-dir`` (its ``lut_r{R}.json`` and ``models_r{R}_{stat}.json``) or a demo run
directory (its ``budgetnas.db``: LUT 1 and its whole-model measurements). Nothing is measured. For each fit size n,
``--draws`` random sets of n models fit the calibration and the other models judge it (``half``: half of all
models). Compared on the same draws: the raw sum, the affine fit, the grouped fit at fixed ridge strengths λ
(counted in models; ``0.1n`` is the fit before the data chose it) and the grouped fit as shipped (λ chosen by
restricted likelihood, ``budgetnas.luts.lut._fit_group_scales``). Prints mean ±5% share and RMSPE per cell.
Times are taken as stored: the sessions' reference ratio is not divided out (the demo's own figures divide it).
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from budgetnas.luts.calibration import apply, metrics
from budgetnas.luts.lut import LUT, Calibration, LUTPredictor
from budgetnas.spaces import space_from_description

Fit = Callable[[LUTPredictor, list[Any], np.ndarray], Calibration]


def grouped(ridge: Callable[[int], float | None]) -> Fit:
    def fit(pred: LUTPredictor, archs: list[Any], y: np.ndarray) -> Calibration:
        g, groups = pred.group_sums(archs)
        return Calibration.fit(pred.raw(archs), y, g, groups, ridge=ridge(len(y)))
    return fit


FITS: dict[str, Fit] = {
    "affine": lambda pred, archs, y: Calibration.fit(pred.raw(archs), y),
    "λ=0.1n": grouped(lambda n: 0.1 * n),
    "λ=3": grouped(lambda n: 3.0),
    "λ=30": grouped(lambda n: 30.0),
    "shipped": grouped(lambda n: None),
}


def _space(lut: LUT) -> Any:
    return space_from_description(lut.meta.space)


def datasets(d: Path) -> Iterator[tuple[str, LUTPredictor, list[Any], np.ndarray]]:
    if (d / "budgetnas.db").exists():
        from budgetnas.db.repo import load_lut, model_measurements
        from budgetnas.db.session import Database

        with Database(f"sqlite:///{d / 'budgetnas.db'}").session() as s:
            lut = LUT.from_json_dict(load_lut(s, 1))
            rows = model_measurements(s, 1)
        space = _space(lut)
        yield f"{d.name} ({lut.meta.statistic})", LUTPredictor(lut, space), [space.parse(a) for a, _ in rows], \
            np.array([v for _, v in rows])
        return
    for models in sorted(d.glob("models_r*_*.json")):
        m = re.fullmatch(r"models_r(\d+)_(\w+)\.json", models.name)
        if not m:
            continue
        res, stat = m.groups()
        lut = LUT.load(d / f"lut_r{res}.json")
        lut = replace(lut, meta=replace(lut.meta, statistic=stat))
        space = _space(lut)
        data = json.loads(models.read_text())
        archs = [space.parse(a) for a in data["archs"]]
        pred = LUTPredictor(lut, space)
        if not np.allclose(pred.raw(archs), data["raw_ms"], rtol=1e-9):
            print(f"skipped {models}: its raw sums are not this checkout's (the space's walk changed since)")
            continue
        yield f"{d.name} r{res} ({stat})", pred, archs, np.asarray(data["measured_ms"], np.float64)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("dirs", type=Path, nargs="+")
    ap.add_argument("--fit-sizes", default="8,12,24,half", help="models per fit, comma-separated ('half': N/2)")
    ap.add_argument("--draws", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    print(f"{'data':34}{'n':>5}  " + "".join(f"{k:>15}" for k in ("raw", *FITS)) + "   (±5% share / RMSPE)")
    for d in args.dirs:
        for name, pred, archs, y in datasets(d):
            rng = np.random.default_rng(args.seed)
            sizes = {len(archs) // 2 if size == "half" else int(size) for size in args.fit_sizes.split(",")}
            for n in sorted(sizes):
                if not 2 <= n <= len(archs) - 4:
                    continue
                cells: dict[str, list[tuple[float, float]]] = {}
                for _ in range(args.draws):
                    perm = rng.permutation(len(archs))
                    fit, held = perm[:n], perm[n:]
                    fa, ha = [archs[i] for i in fit], [archs[i] for i in held]
                    rows = {"raw": metrics(pred.raw(ha), y[held])}
                    for k, f in FITS.items():
                        rows[k] = metrics(apply(pred, f(pred, fa, y[fit]), ha), y[held])
                    for k, r in rows.items():
                        cells.setdefault(k, []).append((r["within_5pct"] or 0.0, r["rmspe"] or 0.0))
                print(f"{name:34}{n:5d}  " + "".join(
                    f"{100 * np.mean([a for a, _ in v]):7.0f}%/{100 * np.mean([b for _, b in v]):5.2f}%"
                    for v in cells.values()), flush=True)


if __name__ == "__main__":
    main()
