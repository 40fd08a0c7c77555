"""Throughput of the latency oracles on token matrices (goal: >= 1M archs/s for a LUT).

    .venv/bin/python bench/generator_oracles.py [--n 1000000]

Uses Once-for-All's Note10 LUT (ofa-mbv3, ../shared/data) when present, a synthetic nb201 LUT,
and the measured nb201 table; prints archs/s of each, and of the per-arch LUTPredictor for scale.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from budgetnas.generator.features import uniform_tokens  # noqa: E402
from budgetnas.generator.latency import CostModelOracle, TableOracle  # noqa: E402
from budgetnas.generator.tables import read_table  # noqa: E402
from budgetnas.luts.lut import LUT, LatencyStats, LUTMeta, LUTPredictor  # noqa: E402
from budgetnas.luts.token_cost import cost_model_from_lut  # noqa: E402
from budgetnas.spaces import get_space  # noqa: E402

DATA = REPO.parent / "shared" / "data"


def rate(fn, tokens: np.ndarray, repeat: int = 3) -> float:
    best = min(_time(fn, tokens) for _ in range(repeat))
    return len(tokens) / best


def _time(fn, tokens: np.ndarray) -> float:
    t0 = time.perf_counter()
    fn(tokens)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1_000_000)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    rows = []
    nb = get_space("nb201")
    entries = {k: LatencyStats(count=1, mean_ms=1.0, std_ms=0.0, median_ms=float(rng.uniform(0.1, 2)))
               for k in nb.all_block_keys()}
    lut = LUT(LUTMeta(space=nb.describe(), device="synthetic", backend="-"), entries)
    tok = uniform_tokens(nb, args.n, rng)
    rows.append(("nb201 LUT (synthetic) cost tables", rate(CostModelOracle(nb, cost_model_from_lut(nb, lut)), tok)))
    archs = [nb.from_tokens(t.tolist()) for t in tok[:5000]]
    rows.append(("nb201 LUTPredictor (per-arch walk), for scale", rate(LUTPredictor(lut, nb).raw, archs, 1)))
    csv = DATA / "nb201" / "nb201_bench.csv"
    if csv.exists():
        oracle = TableOracle(nb, read_table(f"{csv}:pixel3_latency_ms", nb))
        rows.append(("nb201 measured table (pixel3)", rate(oracle, tok)))
    yaml_path = DATA / "ofa_note10_lut" / "224_lookup_table.yaml"
    if yaml_path.exists():
        ofa = get_space("ofa-mbv3", width=1.2, resolution=224)
        olut = LUT.from_ofa_yaml(yaml_path.read_text(), LUTMeta(space=ofa.describe(), device="note10", backend="tflite"))
        otok = uniform_tokens(ofa, args.n, rng)
        rows.append(("ofa-mbv3 Note10 LUT cost tables", rate(CostModelOracle(ofa, cost_model_from_lut(ofa, olut)), otok)))
        oarchs = [ofa.from_tokens(t.tolist()) for t in otok[:5000]]
        rows.append(("ofa-mbv3 LUTPredictor (per-arch walk), for scale", rate(LUTPredictor(olut, ofa).raw, oarchs, 1)))
    print(f"| oracle | archs/s (n={args.n:,}) |\n|---|---|")
    for name, r in rows:
        print(f"| {name} | {r:,.0f} |")


if __name__ == "__main__":
    main()
