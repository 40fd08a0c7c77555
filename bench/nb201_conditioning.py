"""The shipped sampler's calibration (``GeneratorBundle.conditioned``), paired: one PNAG run per
setting, its bundle scored with and without the calibration on the same budgets and seeds.

Per device x dataset x seed (NAS-Bench-201 ground truth, ../shared/data/nb201/nb201_bench.csv, the
protocol of bench/nb201_frontier.py): the share of 1,000 generated samples within each budget
(20..100% of the range), distinct fitting archs among 256 samples, ms to answer a new budget, and
whether the final answers (the bundle's final-pick rule, records used) are the same archs.

    nice .venv/bin/python bench/nb201_conditioning.py --seeds 1 --workers 2     # 9 runs, ~10 min on 2 cores
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))

from jsonl_runs import load_runs, run_pending  # noqa: E402
from nb201_frontier import SP, Setting, generator_stats  # noqa: E402


def run_task(task: dict[str, Any]) -> dict[str, Any]:
    import torch

    from budgetnas.generator.accuracy import TableAccuracy, prepare
    from budgetnas.generator.bundle import GeneratorBundle
    from budgetnas.generator.pnag import TrainConfig
    from budgetnas.generator.search import SearchOptions, run_method

    torch.set_num_threads(1)
    st = Setting(Path(task["csv"]), task["device"], task["dataset"])
    problem = prepare(SP, st.oracle, TableAccuracy(st.acc_table), task["queries"], seed=task["seed"])
    t0 = time.perf_counter()
    res = run_method("pnag", problem, st.budgets, SearchOptions(train=TrainConfig(seed=task["seed"])))
    seconds = time.perf_counter() - t0
    cond = res.bundle
    assert cond is not None and "cond_budget" in cond.a
    plain = GeneratorBundle(dict(cond.meta), {k: v for k, v in cond.a.items() if not k.startswith("cond_")})
    out: dict[str, Any] = {**{k: v for k, v in task.items() if k != "csv"}, "seconds": seconds}
    for name, bundle in (("plain", plain), ("conditioned", cond)):
        res.bundle = bundle
        g = generator_stats(res, st.budgets)
        answers = [bundle.generate(b, seed=task["seed"], use_records=True)["arch"] for b in st.budgets]
        out[name] = {"share": g["share"], "distinct": g["distinct"], "gen_ms": g["gen_ms"], "answers": answers}
    out["same_answers"] = out["plain"]["answers"] == out["conditioned"]["answers"]
    print(f"   {task['device']} x {task['dataset']} seed {task['seed']}: share min {min(out['plain']['share']):.3f}"
          f" -> {min(out['conditioned']['share']):.3f}, distinct min {min(out['plain']['distinct'])} -> "
          f"{min(out['conditioned']['distinct'])}, same answers {out['same_answers']}, {seconds:.0f}s", flush=True)
    return out


def render(runs: list[dict[str, Any]], note: str) -> str:
    lines = ["# The shipped sampler's calibration, paired (nb201)\n", note + "\n" if note else "",
             "One PNAG run per setting (`bench/nb201_conditioning.py`); its bundle scored without and with "
             "`GeneratorBundle.conditioned` (the same samples' seeds). Share: of 1,000 samples within each budget "
             "(20..100% of the range); distinct: fitting archs among 256 samples.\n",
             "| setting | Q | seed | share min, plain | share min, calibrated | budgets >= 99%, plain | calibrated | "
             "distinct min, plain | calibrated | same answers | new budget ms (calibrated) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(runs, key=lambda r: (r["queries"], r["seed"], r["device"], r["dataset"])):
        p, c = r["plain"], r["conditioned"]
        lines.append(f"| {r['device']} x {r['dataset']} | {r['queries']} | {r['seed']} | {min(p['share']):.3f} | "
                     f"{min(c['share']):.3f} | {sum(v >= 0.99 for v in p['share'])}/{len(p['share'])} | "
                     f"{sum(v >= 0.99 for v in c['share'])}/{len(c['share'])} | {min(p['distinct'])} | "
                     f"{min(c['distinct'])} | {r['same_answers']} | {c['gen_ms']:.1f} |")
    ps = [v for r in runs for v in r["plain"]["share"]]
    cs = [v for r in runs for v in r["conditioned"]["share"]]
    lines += ["", f"Over {len(runs)} runs ({len(ps)} budgets): budgets with >= 99% of samples within budget "
              f"{sum(v >= 0.99 for v in ps)} -> {sum(v >= 0.99 for v in cs)}; lowest share {min(ps):.3f} -> "
              f"{min(cs):.3f}; mean {np.mean(ps):.4f} -> {np.mean(cs):.4f}; runs with the same final answers "
              f"{sum(r['same_answers'] for r in runs)}/{len(runs)}; distinct fitting archs, min "
              f"{min(min(r['plain']['distinct']) for r in runs)} -> {min(min(r['conditioned']['distinct']) for r in runs)}."]
    return "\n".join(lines) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--csv", default=str(REPO.parent / "shared/data/nb201/nb201_bench.csv"))
    ap.add_argument("--devices", default="pixel3,raspi4,edgegpu")
    ap.add_argument("--datasets", default="cifar10,cifar100,imagenet16_120")
    ap.add_argument("--queries", type=int, default=100)
    ap.add_argument("--seeds", type=int, default=1)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--note", default="", help="how the runs were made, what else ran")
    ap.add_argument("--render", action="store_true")
    ap.add_argument("--runs", default=str(REPO / "bench/results/nb201_frontier_conditioning_runs.jsonl"))
    ap.add_argument("--out", default=str(REPO / "bench/results/nb201_frontier_conditioning.md"))
    args = ap.parse_args()
    if not Path(args.csv).exists():
        sys.exit(f"error: {args.csv} not found (the reference data lives beside the repository)")
    done = load_runs(Path(args.runs))
    if not args.render:
        key = lambda t: json.dumps([t["device"], t["dataset"], t["queries"], t["seed"]])  # noqa: E731
        have = {key(r) for r in done}
        todo = [t for t in ({"csv": args.csv, "device": d, "dataset": ds, "queries": args.queries, "seed": s}
                            for s in range(args.seeds) for d in args.devices.split(",")
                            for ds in args.datasets.split(",")) if key(t) not in have]
        print(f"{len(todo)} runs to do", flush=True)
        run_pending(todo, run_task, Path(args.runs), done, args.workers)
    text = render(done, args.note)
    Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
