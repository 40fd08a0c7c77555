"""PNAG vs baselines on NAS-Bench-201 ground truth (../shared/data/nb201/nb201_bench.csv), under one
protocol (``budgetnas.generator.search``): every method gets the same accuracy-query budget Q, the same
exploration records (half of Q, spread over the latency range), spends the other half validating
its own best candidates, and answers with the same final-pick rule.

Per device x dataset x Q x seed, for budgets at 20/40/60/80/100% of the table's latency range,
the regret (best accuracy of the whole table within the budget - true accuracy of the answer) of:

- each method's *final* answer (after validation), beside the naive user who reads Q random
  archs and keeps the best that fits;
- each method's *own-candidate* answer: its first candidates only, scored by the shared accuracy
  (exploration records + predictor), beside the *floor*: the exhaustive best of that shared score
  over the whole table (what a method could reach with the same information);
- predictor calls (training included), records read, seconds; for PNAG also the share of 1,000
  generated samples within budget, distinct fitting archs among 256 samples, whether the
  answers' predicted accuracy is non-decreasing in the budget, and ms to answer a new budget.

Runs are appended as JSON lines (``--runs``), so an interrupted sweep resumes; ``--render`` only
rewrites the markdown and plots from them. The ablations (Tables 2, 3, 5) run with ``--ablations``.

    .venv/bin/python bench/nb201_frontier.py --quick                  # one setting, one seed, short
    nice .venv/bin/python bench/nb201_frontier.py --workers 2         # the full sweep (by hand, never CI)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from functools import cache
from itertools import pairwise
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from jsonl_runs import load_runs, run_pending  # noqa: E402

from budgetnas.generator.accuracy import Problem, TableAccuracy, prepare  # noqa: E402
from budgetnas.generator.latency import TableOracle  # noqa: E402
from budgetnas.generator.pnag import TrainConfig  # noqa: E402
from budgetnas.generator.search import Answer, MethodResult, SearchOptions, run_method  # noqa: E402
from budgetnas.generator.tables import read_table  # noqa: E402
from budgetnas.spaces import get_space  # noqa: E402

PCTS = (0.2, 0.4, 0.6, 0.8, 1.0)
SP = get_space("nb201")


class Setting:
    """One device x dataset: the oracle, the whole table (for scoring only) and the budgets."""

    def __init__(self, csv: Path, device: str, dataset: str) -> None:
        self.device, self.dataset = device, dataset
        lat_table = read_table(f"{csv}:{device}_latency_ms", SP)
        self.acc_table = read_table(f"{csv}:{dataset}_acc", SP)
        self.oracle = TableOracle(SP, lat_table)
        tok = self.acc_table.tokens
        lat = self.oracle(tok)
        keep = ~np.isnan(lat) & ~np.isnan(self.acc_table.values)
        self.tok, self.lat, self.acc = tok[keep], lat[keep], self.acc_table.values[keep]
        self.truth = {r.tobytes(): float(v) for r, v in zip(self.tok, self.acc, strict=True)}
        lo, hi = float(self.lat.min()), float(self.lat.max())
        self.budgets = [lo + p * (hi - lo) for p in PCTS]
        self.best = [float(self.acc[self.lat <= b].max()) for b in self.budgets]

    def regrets(self, answers: list[Answer]) -> tuple[list[float], int]:
        out, over = [], 0
        for b, best, a in zip(self.budgets, self.best, answers, strict=True):
            over += int(not float(self.oracle(a.tokens[None])[0]) <= b)
            out.append(best - self.truth.get(a.tokens.tobytes(), float("nan")))
        return out, over

    def floor(self, problem: Problem) -> list[float]:
        """True regret of the exhaustive best of the shared score within each budget."""
        score = problem.score(self.tok)
        return [best - float(self.acc[self.lat <= b][np.argmax(score[self.lat <= b])])
                for b, best in zip(self.budgets, self.best, strict=True)]


def generator_stats(res: MethodResult, budgets: list[float]) -> dict[str, Any]:
    bundle = res.bundle
    assert bundle is not None
    share, distinct, gen_ms, samples = [], [], [], []
    rng = np.random.default_rng(0)
    for b in budgets:
        out = bundle.generate(b, samples=1000, seed=1)
        lat = np.array([np.nan if s["latency_ms"] is None else s["latency_ms"] for s in out["samples"]])
        share.append(float(np.mean(lat <= b)))
        samples.append([round(float(v), 4) for v in lat if not np.isnan(v)])
        s = bundle.sample(b, 256, np.random.default_rng(2))
        distinct.append(len(np.unique(s[bundle.latency(s) <= b], axis=0)))
        for _ in range(3):  # a new budget each time: no caching can help
            nb = float(b * rng.uniform(0.9, 1.0))
            t0 = time.perf_counter()
            bundle.generate(max(nb, bundle.cheapest), seed=2)
            gen_ms.append(1000 * (time.perf_counter() - t0))
    pred = [a.accuracy for a in res.answers]
    return {"share": share, "distinct": distinct, "gen_ms": float(np.median(gen_ms)),
            "monotone": bool(all(y >= x - 1e-9 for x, y in pairwise(pred))), "samples": samples}


def run_task(task: dict[str, Any]) -> dict[str, Any]:
    """One device x dataset x Q x seed (x variant): every method, scored."""
    import torch

    torch.set_num_threads(1)
    st = Setting(Path(task["csv"]), task["device"], task["dataset"])
    t0 = time.perf_counter()
    problem = prepare(SP, st.oracle, TableAccuracy(st.acc_table), task["queries"], seed=task["seed"])
    prep_s = time.perf_counter() - t0
    floor = st.floor(problem)
    cfg = dict(task.get("train", {}))
    rounds = cfg.pop("rounds", SearchOptions().rounds)
    validate_range = cfg.pop("validate_range", False)
    opts = SearchOptions(train=TrainConfig(seed=task["seed"], **cfg), evo_generations=task["generations"],
                         random_samples=task["random_samples"], rounds=rounds, validate_range=validate_range)
    out: dict[str, Any] = {k: v for k, v in task.items() if k != "csv"}
    out.update(budgets=st.budgets, floor=floor, explore_queries=problem.accuracy.used, prep_s=prep_s,
               predictor_tau=problem.report.kendall_tau, methods={})
    for m in task["methods"]:
        res = run_method(m, problem, st.budgets, opts)
        final, over = st.regrets(res.answers)
        own, own_over = st.regrets(res.own)
        row: dict[str, Any] = {"final": final, "own": own, "over": over, "own_over": own_over, "calls": res.calls,
                               "queries": res.queries, "seconds": res.train_seconds + (0 if m == "naive" else prep_s),
                               "answer_lat": [float(st.oracle(a.tokens[None])[0]) for a in res.answers],
                               "answer_acc": [st.truth.get(a.tokens.tobytes(), float("nan")) for a in res.answers]}
        if res.bundle is not None:
            row.update(generator_stats(res, st.budgets))
            if task["seed"] != 0:
                row.pop("samples")
        out["methods"][m] = row
        print(f"   {task['device']} x {task['dataset']} Q={task['queries']} seed {task['seed']} "
              f"{task.get('variant', '')} {m:12s} final {np.mean(final):.3f} own {np.mean(own):.3f} "
              f"floor {np.mean(floor):.3f} calls {res.calls} {row['seconds']:.1f}s", flush=True)
    return out


# ---- rendering ---------------------------------------------------------------------------------

def ci95(xs: list[float]) -> tuple[float, float]:
    """Mean and the half-width of its 95% t-interval."""
    a = np.asarray(xs, np.float64)
    if len(a) < 2:
        return float(a.mean()), float("nan")
    from scipy.stats import t

    return float(a.mean()), float(t.ppf(0.975, len(a) - 1) * a.std(ddof=1) / np.sqrt(len(a)))


def pm(xs: list[float], spec: str = ".3f") -> str:
    m, h = ci95(xs)
    return f"{m:{spec}}" if np.isnan(h) else f"{m:{spec}} ± {h:{spec}}"


def per_seed(runs: list[dict[str, Any]], get: Any) -> list[float]:
    """The value averaged over the settings of each seed: one number per seed (the CI's sample)."""
    seeds = sorted({r["seed"] for r in runs})
    return [float(np.mean([get(r) for r in runs if r["seed"] == s])) for s in seeds]


@cache
def table_size(csv: Path, device: str, dataset: str) -> int:
    """Archs the floor scores: every arch with a latency and an accuracy."""
    return len(Setting(csv, device, dataset).tok)


def main_table(runs: list[dict[str, Any]], q: int, csv: Path) -> list[str]:
    rs = [r for r in runs if r["queries"] == q and not r.get("variant")]
    if not rs:
        return []
    methods = list(rs[0]["methods"])
    n_set = len({(r["device"], r["dataset"]) for r in rs})
    seeds = sorted({r["seed"] for r in rs})
    lines = [f"\n## Q = {q} accuracy queries ({n_set} settings x {len(seeds)} seeds)\n",
             "Mean over settings and budgets; ± is the 95% t-interval over the seeds' means.\n",
             "| method | final regret | own-candidate regret | archs over budget | predictor calls | records read "
             "| seconds |", "|---|---|---|---|---|---|---|"]
    for m in methods:
        g = [r["methods"][m] for r in rs]
        lines.append(f"| {m} | {pm(per_seed(rs, lambda r, m=m: np.mean(r['methods'][m]['final'])))} | "
                     f"{pm(per_seed(rs, lambda r, m=m: np.mean(r['methods'][m]['own'])))} | "
                     f"{sum(x['over'] for x in g)}/{5 * len(g)} | {np.mean([x['calls'] for x in g]):,.0f} | "
                     f"{np.mean([x['queries'] for x in g]):.0f} | {np.mean([x['seconds'] for x in g]):.1f} |")
    scanned = np.mean([table_size(csv, r["device"], r["dataset"]) for r in rs])
    lines.append(f"| floor: exhaustive best of the shared score | — | "
                 f"{pm(per_seed(rs, lambda r: np.mean(r['floor'])))} | — | {scanned:,.0f} | "
                 f"{rs[0]['explore_queries']} | — |")
    if "pnag" in methods:
        p = [r["methods"]["pnag"] for r in rs]
        share = [s for x in p for s in x["share"]]
        distinct = [d for x in p for d in x["distinct"]]
        lines.append(f"\nPNAG's generator: samples within budget {np.mean(share):.1%} (min {np.min(share):.1%} over "
                     f"{len(share)} budgets); distinct fitting archs among 256 samples: min {np.min(distinct)}, "
                     f"median {np.median(distinct):.0f}; answers' predicted accuracy non-decreasing in the budget "
                     f"in {sum(x['monotone'] for x in p)}/{len(p)} runs; a new budget answered in "
                     f"{np.median([x['gen_ms'] for x in p]):.1f} ms (median), training "
                     f"{np.max([x['seconds'] for x in p]):.1f} s at most.")
    lines.append("\nPer setting (mean over seeds; final / own-candidate regret):\n")
    lines.append("| setting | " + " | ".join(methods) + " | floor |")
    lines.append("|---|" + "---|" * (len(methods) + 1))
    for dev, ds in sorted({(r["device"], r["dataset"]) for r in rs}):
        sel = [r for r in rs if r["device"] == dev and r["dataset"] == ds]
        cells = [f"{np.mean([np.mean(r['methods'][m]['final']) for r in sel]):.3f} / "
                 f"{np.mean([np.mean(r['methods'][m]['own']) for r in sel]):.3f}" for m in methods]
        lines.append(f"| {dev} × {ds} | " + " | ".join(cells) + f" | {np.mean([np.mean(r['floor']) for r in sel]):.3f} |")
    return lines


def ablation_table(runs: list[dict[str, Any]], title: str, variants: list[str], base: str | None = None) -> list[str]:
    """Variants side by side; ``base`` labels the main sweep's runs of the same settings, seeds and Q
    (the default configuration, not run twice)."""
    rs = [r for r in runs if r.get("variant") in variants]
    if not rs:
        return []
    groups = {v: [r for r in rs if r["variant"] == v] for v in variants}
    if base is not None:
        same = {(r["device"], r["dataset"], r["seed"], r["queries"]) for r in rs}
        groups = {base: [r for r in runs if not r.get("variant")
                         and (r["device"], r["dataset"], r["seed"], r["queries"]) in same], **groups}
    lines = [f"\n## {title}\n", "| variant | method | final regret | own-candidate regret | samples within budget | "
             "min distinct of 256 | train s | runs |", "|---|---|---|---|---|---|---|---|"]
    for v, sel in groups.items():
        if not sel:
            continue
        methods = sel[0]["methods"] if v != base else {"pnag": None}
        for m in methods:
            g = [r["methods"][m] for r in sel]
            share = f"{np.mean([s for x in g for s in x['share']]):.1%}" if "share" in g[0] else "—"
            dist = f"{np.min([d for x in g for d in x['distinct']])}" if "distinct" in g[0] else "—"
            lines.append(f"| {v} | {m} | {pm(per_seed(sel, lambda r, m=m: np.mean(r['methods'][m]['final'])))} | "
                         f"{pm(per_seed(sel, lambda r, m=m: np.mean(r['methods'][m]['own'])))} | {share} | {dist} | "
                         f"{np.mean([x['seconds'] for x in g]):.1f} | {len(sel)} |")
    return lines


def plots(runs: list[dict[str, Any]], out: Path, csv: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made = []
    for q in sorted({r["queries"] for r in runs}):
        rs = [r for r in runs if r["queries"] == q and r["seed"] == 0 and not r.get("variant")]
        if not rs:
            continue
        fig, axes = plt.subplots(3, 3, figsize=(13, 10))
        for ax, r in zip(axes.ravel(), rs, strict=False):
            st = Setting(csv, r["device"], r["dataset"])
            order = np.argsort(st.lat)
            ax.step(st.lat[order], np.maximum.accumulate(st.acc[order]), where="post", color="black", lw=1,
                    label="true frontier")
            for m, row in r["methods"].items():
                ax.plot(row["answer_lat"], row["answer_acc"], "o-", ms=3, lw=0.8, label=m)
            for b in r["budgets"]:
                ax.axvline(b, color="grey", ls=":", lw=0.6)
            ax.set_ylim(float(np.percentile(st.acc, 20)), float(st.acc.max()) + 0.5)
            ax.set_title(f"{r['device']} × {r['dataset']}", fontsize=9)
            ax.set_xlabel("latency (ms)", fontsize=8)
            ax.set_ylabel("true accuracy (%)", fontsize=8)
        axes.ravel()[0].legend(fontsize=6)
        fig.suptitle(f"final answers at Q = {q} (seed 0)")
        fig.tight_layout()
        name = f"nb201_frontier_q{q}.png"
        fig.savefig(out / name, dpi=90)
        plt.close(fig)
        made.append(name)
        with_s = [r for r in rs if "samples" in r["methods"].get("pnag", {})]
        if with_s:
            fig, axes = plt.subplots(len(with_s), 5, figsize=(15, 1.9 * len(with_s)), squeeze=False)
            for row_ax, r in zip(axes, with_s, strict=True):
                p = r["methods"]["pnag"]
                for ax, b, lat, pct in zip(row_ax, r["budgets"], p["samples"], PCTS, strict=True):
                    ax.hist(lat, bins=40, color="tab:blue")
                    ax.axvline(b, color="red", ls="--", lw=1)
                    ax.set_title(f"{r['device']}×{r['dataset']} {int(pct * 100)}%", fontsize=7)
                    ax.tick_params(labelsize=6)
            fig.suptitle(f"PNAG: latency of 1,000 generated samples per budget (red: budget), Q = {q}", fontsize=9)
            fig.tight_layout()
            name = f"nb201_hist_q{q}.png"
            fig.savefig(out / name, dpi=80)
            plt.close(fig)
            made.append(name)
    return made


def goals(runs: list[dict[str, Any]]) -> list[str]:
    """The generator issue's goals, each as measured here (met or not)."""
    main = [r for r in runs if not r.get("variant") and "pnag" in r["methods"]]
    out = ["\n## Goals, as measured\n"]

    def mean(rs: list[dict[str, Any]], m: str, k: str) -> float:
        return float(np.mean([np.mean(r["methods"][m][k]) for r in rs if m in r["methods"]]))

    def mark(ok: bool) -> str:
        return "**met**" if ok else "**not met**"

    def seeds(rs: list[dict[str, Any]]) -> str:
        n = len({r["seed"] for r in rs})
        return "" if n >= 5 else f" (only {n} seed{'s' if n > 1 else ''} of the 5 the goal asks: not yet judged)"

    q100 = [r for r in main if r["queries"] == 100]
    if q100 and {"naive", "random", "evolution"} <= set(q100[0]["methods"]):
        p, n = mean(q100, "pnag", "final"), mean(q100, "naive", "final")
        rnd, evo = mean(q100, "random", "final"), mean(q100, "evolution", "final")
        out.append(f"- Q=100: PNAG's final regret {p:.3f} vs naive random-100 {n:.3f} (ratio {p / n:.2f}; goal <= 0.5): "
                   f"{mark(p <= 0.5 * n)}; vs random search {rnd:.3f} and evolution {evo:.3f} (goal: below both): "
                   f"{mark(p < rnd and p < evo)}{seeds(q100)}.")
    q1k = [r for r in main if r["queries"] == 1000]
    if q1k and {"random", "evolution"} <= set(q1k[0]["methods"]):
        p, rnd, evo = mean(q1k, "pnag", "own"), mean(q1k, "random", "own"), mean(q1k, "evolution", "own")
        floor = float(np.mean([np.mean(r["floor"]) for r in q1k]))
        out.append(f"- Q=1000: PNAG's own-candidate regret {p:.3f} vs evolution {evo:.3f} and random {rnd:.3f} "
                   f"(goal: below both): {mark(p < evo and p < rnd)}; vs the floor {floor:.3f} (goal: within 0.1): "
                   f"{mark(p - floor <= 0.1)}{seeds(q1k)}.")
    if main:
        g = [r["methods"]["pnag"] for r in main]
        dist = [d for x in g for d in x["distinct"]]
        share = [s for x in g for s in x["share"]]
        over = sum(x["over"] for x in g)
        out.append(f"- Distinct fitting archs among 256 samples, min over {len(dist)} budgets: {min(dist)} (goal >= 20): "
                   f"{mark(min(dist) >= 20)}.")
        ok = sum(v >= 0.99 for v in share)
        out.append(f"- Samples within budget, per budget (goal >= 99% for each): {mark(ok == len(share))}: {ok}/{len(share)} "
                   f"budgets; the lowest share {min(share):.1%}, {np.mean(share):.2%} of all samples.")
        out.append(f"- Answers' predicted accuracy non-decreasing in the budget: {sum(x['monotone'] for x in g)}/{len(g)} "
                   f"runs: {mark(all(x['monotone'] for x in g))}. Answers over budget: {over}: {mark(over == 0)}.")
        out.append(f"- A new budget answered in {max(x['gen_ms'] for x in g):.1f} ms at most (goal < 50): "
                   f"{mark(max(x['gen_ms'] for x in g) < 50)}; training incl. query selection and validation "
                   f"{max(x['seconds'] for x in g):.0f} s at most (goal < 600): {mark(max(x['seconds'] for x in g) < 600)}.")
    return out


def render(runs: list[dict[str, Any]], args: argparse.Namespace) -> str:
    argv = [a for i, a in enumerate(sys.argv) if a != "--note" and (i == 0 or sys.argv[i - 1] != "--note")]
    lines = ["# nb201 frontier benchmark\n", f"`{' '.join(argv)}`\n", *([args.note + "\n"] if args.note else []),
             "Protocol: `budgetnas/generator/search.py`. Regret in accuracy points against the best arch of the whole table "
             "within the budget (budgets at 20/40/60/80/100% of each table's latency range). *final*: after the "
             "method's validation rounds, final-pick rule shared by all. *own-candidate*: the method's first "
             "candidates only, scored by the shared accuracy; *floor*: the exhaustive best of that score. "
             "*naive*: Q random archs read, best that fits kept.\n"]
    lines += goals(runs)
    for q in sorted({r["queries"] for r in runs}):
        lines += main_table(runs, q, Path(args.csv))
    lines += ablation_table(runs, "Table 2 — rewards (same generator, same protocol)",
                            ["reward:evaluator", "reward:pareto-noacc", "reward:mnas", "reward:tunas"],
                            "reward:pareto (default)")
    lines += ablation_table(runs, "Table 3 — one generator for all budgets vs independent search per budget",
                            ["table3"], "one generator (default)")
    lines += ablation_table(runs, "Table 5 — number of budget anchors K", ["K=2", "K=5", "K=30"], "K=10 (default)")
    lines += ablation_table(runs, "Design ablations (ours)", ["no-imitation", "no-scouts", "validate-range",
                                                              "rounds=0"], "default")
    made = plots(runs, Path(args.plots), Path(args.csv))
    rel = os.path.relpath(Path(args.plots).resolve(), Path(args.out).resolve().parent)  # links from the report
    lines += ["", *[f"![{m}]({Path(rel, m).as_posix()})" for m in made]]
    return "\n".join(lines) + "\n"


def tasks(args: argparse.Namespace) -> list[dict[str, Any]]:
    base = {"csv": args.csv, "generations": args.generations, "random_samples": args.random_samples}
    out = []
    methods = [m for m in args.methods.split(",") if m]
    for q in [int(x) for x in args.queries.split(",")]:
        for seed in range(args.seeds):
            for dev in args.devices.split(","):
                for ds in args.datasets.split(","):
                    out.append({**base, "device": dev, "dataset": ds, "queries": q, "seed": seed,
                                "methods": methods, "train": {"iterations": args.iterations}})
    abl = [a for a in args.ablations.split(",") if a]
    settings = [s.split(":") for s in args.ablation_settings.split(",")]
    for a in abl:
        variants: list[tuple[str, list[str], dict[str, Any]]] = []
        # the default configuration (pareto reward, one generator, K=10) is the main sweep's pnag
        if a == "rewards":
            variants = [(f"reward:{r}", [m], {}) for r, m in (("evaluator", "pnag-paper"),
                                                               ("pareto-noacc", "pareto-noacc"), ("mnas", "mnas"),
                                                               ("tunas", "tunas"))]
        elif a == "independent":
            variants = [("table3", ["independent"], {})]
        elif a == "k":
            variants = [(f"K={k}", ["pnag"], {"budgets": k}) for k in (2, 5, 30)]
        elif a == "design":
            variants = [("no-imitation", ["pnag"], {"imitation": 0.0}), ("no-scouts", ["pnag"], {"scouts": 0}),
                        ("validate-range", ["pnag"], {"validate_range": True}),
                        ("rounds=0", ["pnag", "random", "evolution"], {"rounds": 0})]
        for v, ms, train in variants:
            for seed in range(args.ablation_seeds):
                for dev, ds in settings:
                    t = {"iterations": args.iterations, **train}
                    out.append({**base, "device": dev, "dataset": ds, "queries": args.ablation_queries, "seed": seed,
                                "methods": ms, "train": t, "variant": v})
    return out


def key(t: dict[str, Any]) -> str:
    """One run's identity, for a task (methods: a list) and a finished run (methods: results by name)."""
    return json.dumps([t["device"], t["dataset"], t["queries"], t["seed"], t.get("variant", ""), list(t["methods"])])


SAME_PROBLEM = ("budgets", "floor", "explore_queries")  # what two runs of one key must share to be combined


def with_baselines(runs: list[dict[str, Any]], other: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each run with the methods it lacks taken from ``other``'s run of the same device, dataset, Q,
    seed and variant (a method-only rerun beside baselines whose code did not change). Refused
    where the two runs did not pose the same problem (budgets, floor, exploration records)."""
    def ident(r: dict[str, Any]) -> tuple[Any, ...]:
        return r["device"], r["dataset"], r["queries"], r["seed"], r.get("variant", "")

    by = {ident(r): r for r in other}
    out = []
    for r in runs:
        b = by.get(ident(r))
        if b is None:
            out.append(r)
            continue
        differ = [k for k in SAME_PROBLEM if b[k] != r[k]]
        if differ:
            sys.exit(f"error: --baselines: {ident(r)} poses another problem there ({', '.join(differ)} differ)")
        out.append({**r, "methods": {**r["methods"], **{m: v for m, v in b["methods"].items()
                                                          if m not in r["methods"]}}})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--csv", default=str(REPO.parent / "shared/data/nb201/nb201_bench.csv"))
    ap.add_argument("--devices", default="pixel3,raspi4,edgegpu")
    ap.add_argument("--datasets", default="cifar10,cifar100,imagenet16_120")
    ap.add_argument("--methods", default="pnag,random,evolution,naive")
    ap.add_argument("--queries", default="100,1000", help="comma list of Q regimes")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--iterations", type=int, default=TrainConfig().iterations)
    ap.add_argument("--generations", type=int, default=100, help="evolution generations (OFA: 500)")
    ap.add_argument("--random-samples", type=int, default=1000)
    ap.add_argument("--ablations", default="", help="comma list of: rewards, independent, k, design")
    ap.add_argument("--ablation-settings", default="pixel3:cifar10,raspi4:imagenet16_120,edgegpu:cifar100")
    ap.add_argument("--ablation-seeds", type=int, default=2)
    ap.add_argument("--ablation-queries", type=int, default=1000)
    ap.add_argument("--workers", type=int, default=1, help="processes (each pinned to one thread)")
    ap.add_argument("--quick", action="store_true", help="pixel3 x cifar10, Q=100, one seed, 100 iterations")
    ap.add_argument("--render", action="store_true", help="only rewrite the markdown and plots from --runs")
    ap.add_argument("--note", default="", help="a line for the report: how the runs were made, what else ran")
    ap.add_argument("--runs", default=str(REPO / "bench/results/nb201_frontier_runs.jsonl"))
    ap.add_argument("--baselines", default="", help="a runs file whose methods fill in those a run lacks "
                    "(same device, dataset, Q, seed, variant and problem): a rerun of one method beside unchanged baselines")
    ap.add_argument("--out", default=str(REPO / "bench/results/nb201_frontier.md"))
    ap.add_argument("--plots", default=str(REPO / "bench/results"))
    args = ap.parse_args()
    if args.quick:
        args.devices, args.datasets, args.queries, args.seeds, args.iterations = "pixel3", "cifar10", "100", 1, 100
        args.generations = 20
        args.runs, args.out = "/tmp/nb201_frontier_quick.jsonl", "/tmp/nb201_frontier_quick.md"
        args.plots = "/tmp"
        Path(args.runs).unlink(missing_ok=True)
    if not Path(args.csv).exists():
        sys.exit(f"error: {args.csv} not found (the reference data lives beside the repository)")
    runs_path = Path(args.runs)
    done = load_runs(runs_path)
    if not args.render:
        have = {key(r) for r in done}
        todo = [t for t in tasks(args) if key(t) not in have]
        print(f"{len(todo)} runs to do ({len(have)} already in {runs_path})", flush=True)
        run_pending(todo, run_task, runs_path, done, args.workers)
    text = render(with_baselines(done, load_runs(Path(args.baselines))) if args.baselines else done, args)
    Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
