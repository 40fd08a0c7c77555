"""PNAG in the paper's own space judged on ImageNet: OFA-MBv3 w1.2 x Samsung Note10 LUT x Once-for-All's
published accuracy predictor (../shared/data/ofa_note10_lut, ../shared/data/ofa_acc_predictor).

The predictor is the ground truth here (as NAS-Bench-201's table is for nb201). Methods:

- ``ofa-evolution``: Once-for-All's evolutionary search as its tutorial runs it, *on the ground truth*
  (population 100, 500 generations, 25% parents, 50% mutation, mutation probability 0.1; ~50,000 oracle
  calls per budget), one search per budget;
- ``pnag``: trained once for every budget with ``--queries`` accuracy records in total (the paper's
  M = 16,000; a scarce 2,000 with ``--queries 2000``), under the protocol of ``budgetnas/generator/search.py``;
- ``random`` and ``evolution`` on the same queries and the same protocol as PNAG.

Per budget: true top-1 of the answer, its latency, oracle calls, seconds; for PNAG also the share of
1,000 generated samples within budget and ms to answer a new budget. Runs are JSON lines (resumable);
``--render`` rewrites the markdown and plots (the paper's Figures 3 and 5: frontier, sample histograms).

    .venv/bin/python bench/ofa_frontier.py --quick                     # short, one seed (minutes)
    nice .venv/bin/python bench/ofa_frontier.py --queries 16000,2000   # by hand, never CI
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from jsonl_runs import load_runs, run_pending  # noqa: E402

from budgetnas.generator.accuracy import prepare  # noqa: E402
from budgetnas.generator.latency import CostModelOracle, LatencyOracle  # noqa: E402
from budgetnas.generator.ofa_accuracy import OFAPredictorAccuracy  # noqa: E402
from budgetnas.generator.pnag import TrainConfig  # noqa: E402
from budgetnas.generator.search import Evolution, SearchOptions, run_method  # noqa: E402
from budgetnas.luts.lut import LUT, LUTMeta  # noqa: E402
from budgetnas.luts.token_cost import canonical_tokens, cost_model_from_lut, cost_model_from_lut_family  # noqa: E402
from budgetnas.spaces import SearchSpace, get_space  # noqa: E402

SHARED = REPO.parent / "shared" / "data"
BUDGETS_224 = (25.0, 35.0, 45.0, 55.0, 65.0, 75.0)
BUDGETS_SEARCHED = (15.0, 20.0, 25.0, 30.0, 40.0, 50.0, 60.0)
SEARCHED = (160, 176, 192, 208, 224)  # Once-for-All's resolutions


def note10_lut(lut_dir: Path, resolution: int) -> LUT:
    path = lut_dir / f"{resolution}_lookup_table.yaml"
    at = get_space("ofa-mbv3", width=1.2, resolution=resolution)
    return LUT.from_ofa_yaml(path.read_text(), LUTMeta(space=at.describe(), device="note10", backend="tflite"),
                             str(path))


def setting(lut_dir: Path, resolution: int | str) -> tuple[SearchSpace[Any], LatencyOracle]:
    """The space and its Note10 oracle: one resolution, or (``"searched"``) Once-for-All's five
    searched together from one LUT per resolution."""
    if resolution == "searched":
        sp = get_space("ofa-mbv3", width=1.2, resolutions=SEARCHED)
        fam = [(f"{r}_lookup_table.yaml", note10_lut(lut_dir, r)) for r in SEARCHED]
        return sp, CostModelOracle(sp, cost_model_from_lut_family(sp, fam))
    sp = get_space("ofa-mbv3", width=1.2, resolution=int(resolution))
    return sp, CostModelOracle(sp, cost_model_from_lut(sp, note10_lut(lut_dir, int(resolution))))


@dataclass
class Truth:
    """What Once-for-All's own evolution sees: the ground-truth predictor, every call counted."""

    space: SearchSpace[Any]
    latency: LatencyOracle
    source: OFAPredictorAccuracy
    lat_range: tuple[float, float]
    calls: int = 0

    def score(self, tokens: np.ndarray) -> np.ndarray:
        tok = canonical_tokens(self.space, tokens)
        self.calls += len(tok)
        return self.source.lookup(tok)


def commit() -> str:
    """The code a run measured: HEAD, with ``+`` when the working tree differs from it."""
    import subprocess

    def git(*a: str) -> str:
        return subprocess.run(["git", *a], cwd=REPO, capture_output=True, text=True).stdout.strip()

    head = git("rev-parse", "--short", "HEAD") or "unknown"
    return head + ("+" if git("status", "--porcelain", "--untracked-files=no") else "")


def run_task(task: dict[str, Any]) -> dict[str, Any]:
    import torch

    torch.set_num_threads(1)
    res = task["resolution"]
    sp, oracle = setting(Path(task["lut_dir"]), res)
    truth = OFAPredictorAccuracy(sp, task["npz"])
    budgets = list(task["budgets"])

    def true_top1(tok: np.ndarray) -> float:
        return float(truth.lookup(tok[None])[0])

    out: dict[str, Any] = {k: v for k, v in task.items() if k not in ("lut_dir", "npz", "bundles")}
    out["commit"] = commit()
    out["methods"] = {}
    opts = SearchOptions(train=TrainConfig(seed=task["seed"], iterations=task["iterations"]),
                         evo_generations=task["generations"])
    for m in task["methods"]:
        t0 = time.perf_counter()
        if m == "ofa-evolution":  # OFA's tutorial settings, on the ground truth, one search per budget
            tr = Truth(sp, oracle, truth, oracle.bounds())
            ofa = SearchOptions(evo_generations=task["ofa_generations"])
            rng = np.random.default_rng(task["seed"])
            answers, seconds = [], []
            for b in budgets:
                t1 = time.perf_counter()
                seen = Evolution.search_budget(tr, b, ofa, rng)  # type: ignore[arg-type]
                best = seen[int(np.argmax(truth.lookup(seen)))]
                answers.append(best)
                seconds.append(time.perf_counter() - t1)
            row: dict[str, Any] = {"calls": tr.calls, "queries": tr.calls, "seconds": sum(seconds),
                                   "answer_s": seconds}
        else:
            problem = prepare(sp, oracle, truth, task["queries"], seed=task["seed"])
            r = run_method(m, problem, budgets, opts)
            answers = [a.tokens for a in r.answers]
            row = {"calls": r.calls, "queries": r.queries, "seconds": time.perf_counter() - t0,
                   "answer_s": r.answer_seconds}
            if r.bundle is not None and task.get("bundles"):  # to time or inspect later (large: not results)
                Path(task["bundles"]).mkdir(parents=True, exist_ok=True)
                Path(task["bundles"], f"{res}_q{task['queries']}_s{task['seed']}_{m}.npz").write_bytes(r.bundle.to_bytes())
            if r.bundle is not None:
                share, samples, gen_ms = [], [], []
                for b in budgets:
                    g = r.bundle.generate(b, samples=1000, seed=1)
                    lat = np.array([np.nan if s["latency_ms"] is None else s["latency_ms"] for s in g["samples"]])
                    share.append(float(np.mean(lat <= b)))
                    samples.append([round(float(v), 3) for v in lat if not np.isnan(v)])
                    nb = b * float(np.random.default_rng(len(gen_ms)).uniform(0.9, 1.0))  # a budget never asked
                    t1 = time.perf_counter()
                    r.bundle.generate(nb, seed=2)
                    gen_ms.append(1000 * (time.perf_counter() - t1))
                row.update(share=share, samples=samples, gen_ms=float(np.max(gen_ms)))
        row["latency"] = [float(oracle(a[None])[0]) for a in answers]
        row["top1"] = [true_top1(a) for a in answers]
        row["archs"] = [sp.format(sp.from_tokens(a.tolist())) for a in answers]
        row["over"] = int(sum(lat > b for lat, b in zip(row["latency"], budgets, strict=True)))
        out["methods"][m] = row
        print(f"   {res} Q={task['queries']} seed {task['seed']} {m:14s} top1 "
              f"{' '.join(f'{v:.2f}' for v in row['top1'])} calls {row['calls']} {row['seconds']:.0f}s", flush=True)
    return out


# ---- rendering ---------------------------------------------------------------------------------

def ci95(xs: list[float]) -> str:
    a = np.asarray(xs, np.float64)
    if len(a) < 2:
        return f"{a.mean():.2f}"
    from scipy.stats import t

    return f"{a.mean():.2f} ± {t.ppf(0.975, len(a) - 1) * a.std(ddof=1) / np.sqrt(len(a)):.2f}"


def table(runs: list[dict[str, Any]], q: int, res: str) -> list[str]:
    rs = [r for r in runs if r["queries"] == q and str(r["resolution"]) == res]
    if not rs:
        return []
    budgets = rs[0]["budgets"]
    methods = list(rs[0]["methods"])
    what = "resolution searched (160..224)" if res == "searched" else f"resolution {res}"
    lines = [f"\n## {what}, PNAG's queries Q = {q} ({len(rs)} seeds)\n",
             "True top-1 (%) of the answer per budget (mean ± 95% t-interval over seeds); latency on the Note10 LUT.\n",
             "| method | " + " | ".join(f"{b:g} ms" for b in budgets) + " | over budget | oracle calls | "
             "records read | seconds |", "|---|" + "---|" * (len(budgets) + 4)]
    for m in methods:
        g = [r["methods"][m] for r in rs]
        cells = [ci95([x["top1"][i] for x in g]) for i in range(len(budgets))]
        lines.append(f"| {m} | " + " | ".join(cells) + f" | {sum(x['over'] for x in g)} | "
                     f"{np.mean([x['calls'] for x in g]):,.0f} | {np.mean([x['queries'] for x in g]):,.0f} | "
                     f"{np.mean([x['seconds'] for x in g]):.0f} |")
    first = min(rs, key=lambda r: r["seed"])  # rows are in the order their runs ended
    lines.append(f"\nLatency of the answers (ms, seed {first['seed']}): " + "; ".join(
        f"{m} " + ", ".join(f"{v:.1f}" for v in first["methods"][m]["latency"]) for m in methods))
    if "pnag" in methods and "ofa-evolution" in methods:
        gap = [np.mean([r["methods"]["pnag"]["top1"][i] - r["methods"]["ofa-evolution"]["top1"][i] for r in rs])
               for i in range(len(budgets))]
        worst = min(gap)
        g = [r["methods"]["pnag"] for r in rs]
        share = [s for x in g for s in x["share"]]
        ok = "**met**" if worst >= -0.1 else "**not met**"
        lines.append(f"\nGoal (PNAG within 0.1 point of Once-for-All's evolution or above, every budget): worst gap "
                     f"{worst:+.2f} points: {ok}. PNAG's samples within budget {np.mean(share):.1%} "
                     f"(min {min(share):.1%}); a new budget answered in {max(x['gen_ms'] for x in g):.1f} ms at most; "
                     f"Once-for-All's search {np.mean([s for r in rs for s in r['methods']['ofa-evolution']['answer_s']]):.1f} s "
                     "per budget.")
    return lines


def plots(runs: list[dict[str, Any]], out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made = []
    for q, res in sorted({(r["queries"], str(r["resolution"])) for r in runs}):
        r = next(x for x in runs if x["queries"] == q and str(x["resolution"]) == res and x["seed"] == 0)
        fig, ax = plt.subplots(figsize=(6, 4))
        for m, row in r["methods"].items():
            ax.plot(row["latency"], row["top1"], "o-", ms=4, lw=1, label=m)
        for b in r["budgets"]:
            ax.axvline(b, color="grey", ls=":", lw=0.6)
        ax.set_xlabel("Note10 latency (ms)")
        ax.set_ylabel("top-1 (%, OFA's predictor)")
        ax.set_title(f"answers per budget, resolution {res}, Q = {q} (seed 0)", fontsize=9)
        ax.legend(fontsize=7)
        fig.tight_layout()
        name = f"ofa_frontier_{res}_q{q}.png"
        fig.savefig(out / name, dpi=90)
        plt.close(fig)
        made.append(name)
        p = r["methods"].get("pnag")
        if p and "samples" in p:
            fig, axes = plt.subplots(1, len(r["budgets"]), figsize=(2.6 * len(r["budgets"]), 2.2), squeeze=False)
            for ax, b, lat in zip(axes[0], r["budgets"], p["samples"], strict=True):
                ax.hist(lat, bins=40, color="tab:blue")
                ax.axvline(b, color="red", ls="--", lw=1)
                ax.set_title(f"{b:g} ms", fontsize=8)
                ax.tick_params(labelsize=6)
            fig.suptitle(f"PNAG: latency of 1,000 generated samples per budget (red: budget), resolution {res}, Q = {q}",
                         fontsize=9)
            fig.tight_layout()
            name = f"ofa_hist_{res}_q{q}.png"
            fig.savefig(out / name, dpi=80)
            plt.close(fig)
            made.append(name)
    return made


def render(runs: list[dict[str, Any]], args: argparse.Namespace) -> str:
    lines = ["# OFA-MBv3 frontier on ImageNet (Note10 LUT x Once-for-All's accuracy predictor)\n",
             f"`{' '.join(sys.argv)}`\n", *([args.note + "\n"] if args.note else []),
             "Ground truth: Once-for-All's published accuracy predictor. *ofa-evolution* searches each budget on "
             "that truth with Once-for-All's tutorial settings; the other methods read at most Q accuracy records "
             "(the truth's answers) under `budgetnas/generator/search.py`'s protocol; PNAG is trained once for all budgets.\n"]
    for q, res in sorted({(r["queries"], str(r["resolution"])) for r in runs}, key=lambda x: (-x[0], x[1])):
        lines += table(runs, q, res)
    rel = os.path.relpath(Path(args.plots).resolve(), Path(args.out).resolve().parent)  # links from the report
    lines += ["", *[f"![{m}]({Path(rel, m).as_posix()})" for m in plots(runs, Path(args.plots))]]
    return "\n".join(lines) + "\n"


def key(t: dict[str, Any]) -> str:
    return json.dumps([t["resolution"], t["queries"], t["seed"], list(t["methods"])])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lut-dir", default=str(SHARED / "ofa_note10_lut"))
    ap.add_argument("--npz", default=str(SHARED / "ofa_acc_predictor/ofa_acc_predictor.npz"))
    ap.add_argument("--queries", default="16000", help="comma list of PNAG's query budgets Q")
    ap.add_argument("--resolutions", default="searched,224",
                    help="settings: 'searched' (160..224 together, budgets 15..60 ms) and/or one resolution (25..75 ms)")
    ap.add_argument("--methods", default="ofa-evolution,pnag,random,evolution")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--iterations", type=int, default=TrainConfig().iterations)
    ap.add_argument("--generations", type=int, default=100, help="generations of evolution on Q records")
    ap.add_argument("--ofa-generations", type=int, default=500, help="Once-for-All's evolution (its tutorial: 500)")
    ap.add_argument("--bundles", default="", help="a folder to keep each trained generator's bundle in")
    ap.add_argument("--workers", type=int, default=1, help="runs at once, each a process pinned to one thread")
    ap.add_argument("--quick", action="store_true", help="Q=2000, one seed, short training and searches")
    ap.add_argument("--render", action="store_true")
    ap.add_argument("--note", default="")
    ap.add_argument("--runs", default=str(REPO / "bench/results/ofa_frontier_runs.jsonl"))
    ap.add_argument("--out", default=str(REPO / "bench/results/ofa_frontier.md"))
    ap.add_argument("--plots", default=str(REPO / "bench/results"))
    args = ap.parse_args()
    if args.quick:
        args.queries, args.seeds, args.iterations, args.generations, args.ofa_generations = "2000", 1, 60, 20, 30
        args.resolutions = "searched"
        args.runs, args.out, args.plots = "/tmp/ofa_frontier_quick.jsonl", "/tmp/ofa_frontier_quick.md", "/tmp"
        Path(args.runs).unlink(missing_ok=True)
    for p in (args.lut_dir, args.npz):
        if not Path(p).exists():
            sys.exit(f"error: {p} not found (the reference data lives beside the repository)")
    runs_path = Path(args.runs)
    done = load_runs(runs_path)
    if not args.render:
        have = {key(r) for r in done}
        todo = [{"resolution": res if res == "searched" else int(res), "queries": int(q), "seed": s,
                 "budgets": list(BUDGETS_SEARCHED if res == "searched" else BUDGETS_224),
                 "methods": args.methods.split(","), "iterations": args.iterations, "generations": args.generations,
                 "ofa_generations": args.ofa_generations, "lut_dir": args.lut_dir, "npz": args.npz,
                 "bundles": args.bundles}
                for res in args.resolutions.split(",") for q in args.queries.split(",") for s in range(args.seeds)]
        todo = [t for t in todo if key(t) not in have]
        print(f"{len(todo)} runs to do ({len(done)} already in {runs_path})", flush=True)
        run_pending(todo, run_task, runs_path, done, workers=args.workers)
    text = render(done, args)
    Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
