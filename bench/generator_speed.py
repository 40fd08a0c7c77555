"""Time to answer a new budget with a trained generator bundle (goal: < 50 ms on CPU).

    .venv/bin/python bench/generator_speed.py gen.bundle [--n 50]

Each call uses a fresh budget drawn over the bundle's range, so nothing is cached; prints the
median and 90th percentile, and the share of that time spent sampling the LSTM.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from budgetnas.cli.generator import load_bundle  # noqa: E402
from budgetnas.generator.bundle import CANDIDATES  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bundle", type=Path)
    ap.add_argument("--n", type=int, default=50)
    args = ap.parse_args()
    b = load_bundle(args.bundle)
    rng = np.random.default_rng(0)
    lo, hi = b.cheapest, b.dearest
    budgets = rng.uniform(lo + 0.2 * (hi - lo), hi, args.n)
    b.generate(float(budgets[0]), seed=0)  # warm-up (imports, first allocation)
    total, sample = [], []
    for bud in budgets:
        t0 = time.perf_counter()
        b.generate(float(bud), seed=1)
        total.append(1000 * (time.perf_counter() - t0))
        t0 = time.perf_counter()
        b.sample(float(bud), CANDIDATES, rng)
        sample.append(1000 * (time.perf_counter() - t0))
    print(f"| bundle | budgets | median ms | p90 ms | LSTM sampling of {CANDIDATES} candidates, median ms |")
    print("|---|---|---|---|---|")
    print(f"| {args.bundle.name} ({b.meta['space']['space']}) | {args.n} new, {lo + 0.2 * (hi - lo):.3g}..{hi:.3g} ms | "
          f"{np.median(total):.1f} | {np.percentile(total, 90):.1f} | {np.median(sample):.1f} |")


if __name__ == "__main__":
    main()
