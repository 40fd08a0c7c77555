"""PNAG vs baselines on NAS-Bench-201 ground truth (../shared/data/nb201/nb201_bench.csv).

For each device x dataset: the methods read at most --max-queries accuracy records (through the
counting source), answer budgets at 20/40/60/80/100% of the table's latency range, and are scored
against the whole table (used here only to score): regret = best feasible accuracy - accuracy of
the returned arch. Also: share of 1,000 generated samples within budget, generation time for a
new budget, training time, and the paper's ablations (Table 2 rewards, Table 3 Pareto vs
independent, Table 5 K). Writes markdown tables (and PNG plots) and prints them.

    .venv/bin/python bench/nb201_frontier.py --quick            # pixel3 x cifar10, short training
    nice -n 10 .venv/bin/python bench/nb201_frontier.py         # the full sweep (by hand, never CI)
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from generator.accuracy import TableAccuracy, prepare  # noqa: E402
from generator.latency import TableOracle  # noqa: E402
from generator.pnag import TrainConfig  # noqa: E402
from generator.search import MethodResult, SearchOptions, run_method  # noqa: E402
from generator.tables import read_table  # noqa: E402
from spaces import get_space  # noqa: E402

PCTS = (0.2, 0.4, 0.6, 0.8, 1.0)
GENERATOR_METHODS = {"pnag", "pareto-noacc", "mnas", "tunas"}


def regrets_of(answers: list, budgets: list[float], truth: dict[bytes, float], lat_all: np.ndarray,
               acc_all: np.ndarray, oracle: TableOracle) -> tuple[list[float], int]:
    regrets, over = [], 0
    for b, ans in zip(budgets, answers, strict=True):
        best = float(np.max(acc_all[lat_all <= b]))
        true_lat = float(oracle(ans.tokens[None])[0])
        over += int(not true_lat <= b)
        regrets.append(best - truth[ans.tokens.tobytes()])
    return regrets, over


def score(res: MethodResult, budgets: list[float], truth: dict[bytes, float], lat_all: np.ndarray,
          acc_all: np.ndarray, oracle: TableOracle, no_records: list | None = None) -> dict[str, float]:
    """``no_records``: the method's answers when the records read may not compete in the final choice."""
    regrets, over = regrets_of(res.answers, budgets, truth, lat_all, acc_all, oracle)
    row = {"regret": float(np.mean(regrets)), "max_regret": float(np.max(regrets)), "over": over,
           "train_s": res.train_seconds, "answer_ms": 1000 * float(np.mean(res.answer_seconds))}
    if res.bundle is not None:
        sp = res.bundle.space
        no_records = []
        for b in budgets:
            out = res.bundle.generate(b, seed=0, use_records=False)
            tok = np.asarray(sp.to_tokens(sp.parse(out["arch"])), np.int64)
            no_records.append(type(res.answers[0])(tok, out["latency_ms"], out["accuracy"]))
    if res.bare is not None:
        no_records = res.bare
    if no_records is not None:
        nr, nr_over = regrets_of(no_records, budgets, truth, lat_all, acc_all, oracle)
        row.update(regret_gen=float(np.mean(nr)), over_gen=nr_over)
    for p, r in zip(PCTS, regrets, strict=True):
        row[f"r{int(p * 100)}"] = r
    if res.bundle is not None:
        shares, gaps, gen_ms = [], [], []
        rng = np.random.default_rng(0)
        for b in budgets:
            out = res.bundle.generate(b, samples=1000, seed=1)
            lat = np.array([np.nan if s["latency_ms"] is None else s["latency_ms"] for s in out["samples"]])
            fit = lat <= b
            shares.append(float(fit.mean()))
            gaps.append(float(np.median((b - lat[fit]) / b)) if fit.any() else float("nan"))
            for _ in range(3):  # a new budget each time: no caching can help
                nb = float(b * rng.uniform(0.9, 1.0))
                t0 = time.perf_counter()
                res.bundle.generate(nb, seed=2)
                gen_ms.append(1000 * (time.perf_counter() - t0))
        row.update(share=float(np.mean(shares)), min_share=float(np.min(shares)), gap=float(np.nanmean(gaps)),
                   gen_ms=float(np.median(gen_ms)))
    return row


def fmt(v: float | int | None, spec: str = ".2f") -> str:
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return "—"
    return format(v, spec)


def histogram_plot(res: MethodResult, budgets: list[float], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    assert res.bundle is not None
    fig, axes = plt.subplots(1, len(budgets), figsize=(3.2 * len(budgets), 2.8), sharey=True)
    for ax, b, p in zip(axes, budgets, PCTS, strict=True):
        out = res.bundle.generate(b, samples=1000, seed=1)
        lat = [s["latency_ms"] for s in out["samples"] if s["latency_ms"] is not None]
        ax.hist(lat, bins=40, color="tab:blue", alpha=0.8)
        ax.axvline(b, color="red", ls="--", lw=1)
        ax.set_title(f"{int(p * 100)}%: B={b:.2f} ms", fontsize=9)
        ax.set_xlabel("latency (ms)")
    axes[0].set_ylabel("count of 1,000 samples")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def frontier_plot(results: dict[str, MethodResult], budgets: list[float], lat_all: np.ndarray,
                  acc_all: np.ndarray, truth: dict[bytes, float], oracle: TableOracle, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    order = np.argsort(lat_all)
    ax.step(lat_all[order], np.maximum.accumulate(acc_all[order]), where="post", color="black", lw=1,
            label="true frontier (table scan)")
    for name, res in results.items():
        xs = [float(oracle(a.tokens[None])[0]) for a in res.answers]
        ys = [truth[a.tokens.tobytes()] for a in res.answers]
        ax.plot(xs, ys, "o-", ms=4, lw=0.8, label=name)
    for b in budgets:
        ax.axvline(b, color="grey", ls=":", lw=0.6)
    lo = float(np.percentile(acc_all, 5))
    ax.set_ylim(lo, float(acc_all.max()) + 0.5)
    ax.set_xlabel("latency (ms)")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def render(lines: list[str], summary: dict[str, list[dict[str, float]]], t2: dict[str, list[float]],
           t3: list[tuple[str, dict[str, float], dict[str, float]]], t5: dict[int, list[dict[str, float]]]) -> str:
    """The whole markdown so far: per-setting tables, then summary and ablations."""
    out = list(lines)
    out.append("\n## Summary over all settings\n")
    out.append("| method | mean regret | settings with mean regret <= 0.3 | archs over budget | mean regret, own "
               "candidates only | samples within budget | gen ms / new budget | train s (mean) |")
    out.append("|---|---|---|---|---|---|---|---|")
    for m, rs in summary.items():
        share = fmt(float(np.mean([r["share"] for r in rs])), ".1%") if "share" in rs[0] else "—"
        gen = fmt(float(np.mean([r["gen_ms"] for r in rs])), ".1f") if "gen_ms" in rs[0] else "—"
        out.append(f"| {m} | {np.mean([r['regret'] for r in rs]):.3f} | "
                   f"{sum(r['regret'] <= 0.3 for r in rs)}/{len(rs)} | {sum(int(r['over']) for r in rs)} | "
                   f"{fmt(float(np.mean([r.get('regret_gen', np.nan) for r in rs])), '.3f')} | {share} | "
                     f"{gen} | {np.mean([r['train_s'] for r in rs]):.1f} |")
    if t2:
        out.append("\n## Table 2 — reward functions (same generator, same queries)\n")
        out.append("| reward | mean regret | mean regret, generated candidates only | samples within budget |\n"
                   "|---|---|---|---|")
        names = {"pnag": "Pareto (Eq. 6)", "pareto-noacc": "Pareto without accuracy condition",
                 "mnas": "MnasNet ACC·(LAT/B)^-0.07", "tunas": "TuNAS ACC - 0.07·|LAT/B - 1|"}
        for m in t2:
            out.append(f"| {names[m]} | {np.mean(t2[m]):.3f} | "
                       f"{np.mean([r['regret_gen'] for r in summary[m]]):.3f} | "
                         f"{np.mean([r['share'] for r in summary[m]]):.1%} |")
    if t3:
        out.append("\n## Table 3 — one Pareto generator vs repeated independent search per budget\n")
        out.append("| setting | PNAG regret (generated only) | PNAG train s | independent regret (generated only) "
                   "| independent train s (5 searches) |")
        out.append("|---|---|---|---|---|")
        for setting, a, b in t3:
            out.append(f"| {setting} | {a['regret']:.3f} ({a['regret_gen']:.3f}) | {a['train_s']:.1f} | "
                       f"{b['regret']:.3f} ({fmt(b.get('regret_gen'), '.3f')}) | {b['train_s']:.1f} |")
    if t5:
        out.append("\n## Table 5 — number of budget anchors K\n")
        out.append("| K | mean regret | mean regret, generated only | samples within budget (mean / min) |\n"
                   "|---|---|---|---|")
        for k in sorted(t5):
            rs = t5[k]
            out.append(f"| {k} | {np.mean([r['regret'] for r in rs]):.3f} | "
                       f"{np.mean([r['regret_gen'] for r in rs]):.3f} | "
                         f"{np.mean([r['share'] for r in rs]):.1%} / {np.min([r['min_share'] for r in rs]):.1%} |")
    return "\n".join(out) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--csv", default=str(REPO.parent / "shared/data/nb201/nb201_bench.csv"))
    ap.add_argument("--devices", default="pixel3,raspi4,edgegpu")
    ap.add_argument("--datasets", default="cifar10,cifar100,imagenet16_120")
    ap.add_argument("--methods", default="pnag,random,evolution,mnas,tunas,pareto-noacc,sgnas")
    ap.add_argument("--ablations", default="independent,k", help="comma list of: independent, k ('' for none)")
    ap.add_argument("--max-queries", type=int, default=1000)
    ap.add_argument("--iterations", type=int, default=1000)
    ap.add_argument("--generations", type=int, default=100, help="evolution generations (OFA: 500)")
    ap.add_argument("--random-samples", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="pixel3 x cifar10, 100 iterations, 30 generations")
    ap.add_argument("--out", default=str(REPO / "bench/results/nb201_frontier.md"))
    ap.add_argument("--plots", default=str(REPO / "bench/results"))
    args = ap.parse_args()
    if args.quick:
        args.devices, args.datasets, args.iterations, args.generations = "pixel3", "cifar10", 100, 30
    csv = Path(args.csv)
    if not csv.exists():
        sys.exit(f"error: {csv} not found (the reference data lives beside the repository)")
    sp = get_space("nb201")
    methods = [m for m in args.methods.split(",") if m]
    ablations = {a for a in args.ablations.split(",") if a}
    plots = Path(args.plots)
    plots.mkdir(parents=True, exist_ok=True)
    lines = ["# nb201 frontier benchmark\n",
             f"`{' '.join(sys.argv)}` — max {args.max_queries} accuracy queries, {args.iterations} training "
             f"iterations, evolution {args.generations} generations, random search {args.random_samples} archs "
             f"per budget, seed {args.seed}; budgets at 20/40/60/80/100% of each table's latency range. "
             f"Regret in accuracy points vs the best feasible arch of the whole table.\n"]
    summary: dict[str, list[dict[str, float]]] = {}
    t2: dict[str, list[float]] = {}
    t3: list[tuple[str, dict[str, float], dict[str, float]]] = []
    t5: dict[int, list[dict[str, float]]] = {}
    for device in args.devices.split(","):
        for dataset in args.datasets.split(","):
            setting = f"{device} × {dataset}"
            print(f"== {setting}", flush=True)
            lat_table = read_table(f"{csv}:{device}_latency_ms", sp)
            acc_table = read_table(f"{csv}:{dataset}_acc", sp)
            oracle = TableOracle(sp, lat_table)
            truth = {r.tobytes(): float(v) for r, v in zip(acc_table.tokens, acc_table.values, strict=True)}
            acc_all = acc_table.values
            lat_all = oracle(acc_table.tokens)
            keep = ~np.isnan(lat_all) & ~np.isnan(acc_all)
            lat_all, acc_all = lat_all[keep], acc_all[keep]
            lo, hi = float(lat_all.min()), float(lat_all.max())
            budgets = [lo + p * (hi - lo) for p in PCTS]
            t0 = time.perf_counter()
            problem = prepare(sp, oracle, TableAccuracy(acc_table), args.max_queries, seed=args.seed)
            prep_s = time.perf_counter() - t0
            print(f"   queries {problem.accuracy.used}, predictor tau {problem.report.kendall_tau:.3f} "
                  f"rmse {problem.report.rmse:.2f}, {prep_s:.1f}s", flush=True)
            opts = SearchOptions(train=TrainConfig(iterations=args.iterations, seed=args.seed),
                                 evo_generations=args.generations, random_samples=args.random_samples)
            results: dict[str, MethodResult] = {}
            rows: dict[str, dict[str, float]] = {}
            for m in methods:
                res = run_method(m, problem, budgets, opts)
                results[m] = res
                bare = None
                if m in ("random", "evolution", "sgnas"):  # cheap to rerun without the records competing
                    bare = run_method(m, problem, budgets, replace(opts, use_records=False)).answers
                rows[m] = score(res, budgets, truth, lat_all, acc_all, oracle, bare)
                rows[m]["train_s"] += prep_s
                print(f"   {m:13s} regret {rows[m]['regret']:.3f} (own candidates only "
                      f"{fmt(rows[m].get('regret_gen'), '.3f')}) over {rows[m]['over']} "
                      f"share {fmt(rows[m].get('share'), '.3f')} train {rows[m]['train_s']:.1f}s", flush=True)
                summary.setdefault(m, []).append(rows[m])
                if m in GENERATOR_METHODS:
                    t2.setdefault(m, []).append(rows[m]["regret"])
            assert problem.accuracy.used <= args.max_queries
            lines.append(f"\n## {setting}\n\nlatency range {lo:.3f}..{hi:.3f} ms; budgets "
                         + ", ".join(f"{b:.2f}" for b in budgets) + f" ms; {problem.accuracy.used} accuracy "
                         f"records read; predictor held-out Kendall tau {problem.report.kendall_tau:.3f}, RMSE "
                         f"{problem.report.rmse:.2f} (n={problem.report.n_test}); query selection + predictor "
                         f"{prep_s:.1f}s (included in train s)\n")
            lines.append("| method | mean regret | max regret | regret @20/40/60/80/100% | over budget | "
                         "mean regret, own candidates only | samples within budget (mean / min) | "
                         "median gap under budget | gen ms / new budget | train s |")
            lines.append("|---|---|---|---|---|---|---|---|---|---|")
            for m, r in rows.items():
                per = " / ".join(fmt(r[f"r{int(p * 100)}"]) for p in PCTS)
                share = f"{fmt(r.get('share'), '.1%')} / {fmt(r.get('min_share'), '.1%')}" if "share" in r else "—"
                lines.append(f"| {m} | {r['regret']:.3f} | {r['max_regret']:.2f} | {per} | {r['over']}/5 | "
                             f"{fmt(r.get('regret_gen'), '.3f')} | {share} "
                             f"| {fmt(r.get('gap'), '.1%')} | {fmt(r.get('gen_ms'), '.1f')} | {r['train_s']:.1f} |")
            tag = f"{device}_{dataset}"
            if "pnag" in results:
                histogram_plot(results["pnag"], budgets, plots / f"nb201_hist_{tag}.png",
                               f"PNAG: latency of 1,000 generated archs per budget ({setting})")
            frontier_plot(results, budgets, lat_all, acc_all, truth, oracle, plots / f"nb201_frontier_{tag}.png",
                          f"generated frontier vs baselines ({setting})")
            if "independent" in ablations and "pnag" in rows:
                res = run_method("independent", problem, budgets, opts)
                t3.append((setting, rows["pnag"], score(res, budgets, truth, lat_all, acc_all, oracle)))
                print(f"   independent   regret {t3[-1][2]['regret']:.3f} train {t3[-1][2]['train_s']:.1f}s")
            if "k" in ablations:
                for k in (2, 5, 10, 30):
                    if k == 10 and "pnag" in rows:
                        t5.setdefault(k, []).append(rows["pnag"])
                        continue
                    o = replace(opts, train=replace(opts.train, budgets=k))
                    r = score(run_method("pnag", problem, budgets, o), budgets, truth, lat_all, acc_all, oracle)
                    t5.setdefault(k, []).append(r)
                    print(f"   K={k:<3d}         regret {r['regret']:.3f} share {r['share']:.3f}", flush=True)
            Path(args.out).write_text(render(lines, summary, t2, t3, t5))  # partial results survive an interrupt
    text = render(lines, summary, t2, t3, t5)
    Path(args.out).write_text(text)
    print(text)


if __name__ == "__main__":
    main()
