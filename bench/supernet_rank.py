"""Does the supernet rank sub-networks consistently? Train on digits with two seeds, evaluate the
same sub-networks (BN-recalibrated) with both, report Kendall tau between the two rankings and the
spread of accuracies. Writes bench/results/supernet_rank.md.

Two sets of sub-networks are ranked:
- ``random``: uniformly sampled from the space (what ``supernet eval --archs N`` records);
- ``ladder``: the 27 sub-networks whose layers are all alike (depth d, expand e, kernel k in every
  unit), from the smallest to the largest: they span the space's capacity range, where
  uniformly sampled sub-networks crowd its middle.

    nice -n 10 .venv/bin/python bench/supernet_rank.py --quick
"""

from __future__ import annotations

import argparse
import itertools
import platform
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.stats import kendalltau, spearmanr
from torch.utils.data import DataLoader

from budgetnas.generator.supernet import checkpoint
from budgetnas.generator.supernet.data import load_dataset
from budgetnas.generator.supernet.evaluate import CALIB_IMAGES, EvalData, Scores, eval_data, recalibrated, scores
from budgetnas.generator.supernet.network import OFASupernet
from budgetnas.generator.supernet.train import TrainConfig, train
from budgetnas.spaces.ofa_mbv3 import DEPTHS, EXPANDS, KERNELS, N_UNITS, OFAArch, OFAMobileNetV3

RESULTS = Path(__file__).resolve().parent / "results" / "supernet_rank.md"


def ladder(space: OFAMobileNetV3) -> list[OFAArch]:
    """Every sub-network whose layers all share one (depth, expand, kernel)."""
    return [OFAArch(space.width, space.resolution, (((k, e),) * d,) * N_UNITS)
            for d, e, k in itertools.product(DEPTHS, EXPANDS, KERNELS)]


@dataclass
class SetScores:
    """One set of sub-networks scored by each seed's supernet."""

    names: list[str]
    params: list[int]
    top1: list[list[float]] = field(default_factory=list)  # [seed][arch]
    loss: list[list[float]] = field(default_factory=list)
    halves: list[list[tuple[Scores, Scores]]] = field(default_factory=list)  # [seed][arch]: even, odd images

    def add(self, scored: list[tuple[Scores, Scores, Scores]]) -> None:
        self.top1.append([full.top1 for full, _, _ in scored])
        self.loss.append([full.loss for full, _, _ in scored])
        self.halves.append([(a, b) for _, a, b in scored])

    def tau(self, metric: str) -> tuple[float, float]:
        a, b = (np.asarray(v) for v in getattr(self, metric))
        return float(kendalltau(a, b).statistic), float(spearmanr(a, b).statistic)

    def split_half_tau(self, metric: str) -> list[float]:
        """Per seed: Kendall tau between the rankings on the even and on the odd validation images.

        No training noise enters it, only the finite validation set: the agreement that half the
        images allow on their own.
        """
        return [float(kendalltau([getattr(a, metric) for a, _ in h], [getattr(b, metric) for _, b in h]).statistic)
                for h in self.halves]

    def params_tau(self) -> list[float]:
        """Does capacity order the sub-networks? Kendall tau of parameter count against -loss, per seed."""
        return [float(kendalltau(self.params, -np.asarray(v)).statistic) for v in self.loss]


def split_halves(ed: EvalData) -> tuple[DataLoader[Any], DataLoader[Any]]:
    """The validation batches cut into their even and their odd images."""
    batches = list(ed.val)
    return (DataLoader([(x[0::2], y[0::2]) for x, y in batches], batch_size=None),  # type: ignore[arg-type]
            DataLoader([(x[1::2], y[1::2]) for x, y in batches], batch_size=None))  # type: ignore[arg-type]


def score_arch(net: OFASupernet, arch: OFAArch, ed: EvalData, halves: tuple[DataLoader[Any], DataLoader[Any]],
               dev: torch.device) -> tuple[Scores, Scores, Scores]:
    """``evaluate_arch`` on all validation images, then on each half (same recalibrated model)."""
    model = recalibrated(net, arch, ed, dev)
    return scores(model, ed.val, dev), scores(model, halves[0], dev), scores(model, halves[1], dev)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="fewer steps per phase and fewer sub-networks")
    ap.add_argument("--seeds", type=int, nargs=2, default=[0, 1])
    ap.add_argument("--archs", type=int, default=None, help="random sub-networks to rank (default 32, quick 20)")
    ap.add_argument("--arch-seed", type=int, default=123)
    ap.add_argument("--epochs", type=int, default=None, help="epochs per phase (default 1)")
    ap.add_argument("--max-batches", type=int, default=None, help="steps per epoch cap (default all 44, quick 24)")
    ap.add_argument("--input-size", type=int, default=32)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--n-random", type=int, default=2, help="random sub-networks per sandwich step (as `supernet train`)")
    ap.add_argument("--no-augment", dest="augment", action="store_false", help="train on undistorted images")
    ap.add_argument("--calib-images", type=int, default=CALIB_IMAGES)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: no OpenMP spin-waiting when shared)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args()
    n_archs = args.archs or (20 if args.quick else 32)
    # 1 epoch per phase: about 2.5-3 min per seed here. 2 epochs take 6 min, but digits then saturates
    # (top-1 98%, spread 0.5 points) and the seeds agree less (supernet_rank_2ep.md).
    epochs = args.epochs or 1
    max_batches = args.max_batches if args.max_batches is not None else (24 if args.quick else None)

    sets: dict[str, SetScores] = {}
    times: list[float] = []
    eval_times: list[float] = []
    cpu_times: list[float] = []
    cfg = TrainConfig()
    data = load_dataset("digits", args.input_size)
    dev = torch.device("cpu")
    with tempfile.TemporaryDirectory(prefix="supernet_rank_") as tmp:
        for seed in args.seeds:
            cfg = TrainConfig(dataset="digits", width=1.0, resolution=128, input_size=args.input_size,
                              epochs=epochs, batch_size=args.batch_size, max_batches=max_batches,
                              n_random=args.n_random, augment=args.augment, seed=seed, threads=args.threads)
            path = Path(tmp) / f"seed{seed}.ckpt"
            t0, c0 = time.perf_counter(), time.process_time()
            train(cfg, path, progress=sys.stderr.isatty())
            times.append(time.perf_counter() - t0)
            cpu_times.append(time.process_time() - c0)
            print(f"seed {seed}: trained in {times[-1]:.1f}s wall, {cpu_times[-1]:.1f}s CPU", flush=True)
            ckpt = checkpoint.load(path)
            space = checkpoint.space_of(ckpt)
            net = OFASupernet(space)
            net.load_state_dict(ckpt["state"])
            t0 = time.perf_counter()
            ed = eval_data(data, dev, args.calib_images)
            halves = split_halves(ed)
            for set_name, archs in (("random", space.sample_many(n_archs, args.arch_seed)), ("ladder", ladder(space))):
                if set_name not in sets:
                    sets[set_name] = SetScores([space.format(a) for a in archs],
                                               [sum(p.numel() for p in net.extract(a).parameters()) for a in archs])
                sets[set_name].add([score_arch(net, a, ed, halves, dev) for a in archs])
            eval_times.append(time.perf_counter() - t0)
            print(f"seed {seed}: evaluated {sum(len(s.names) for s in sets.values())} sub-networks in "
                  f"{eval_times[-1]:.1f}s", flush=True)
    sizes = len(data.train), len(data.val)  # type: ignore[arg-type]
    text = "\n".join(report(args, sets, cfg, epochs, max_batches, n_archs, sizes, times, cpu_times, eval_times))
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    plot(sets, args.seeds, args.out.with_suffix(".png"))
    print(f"wrote {args.out} and {args.out.with_suffix('.png')}")


def plot(sets: dict[str, SetScores], seeds: list[int], path: Path) -> None:
    """Seed against seed, one panel per metric: points along a rising line are ranked alike."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4.6))
    for ax, metric, label in ((axes[0], "top1", "top-1"), (axes[1], "loss", "validation loss")):
        for (name, st), marker in zip(sets.items(), "os", strict=False):
            a, b = getattr(st, metric)
            ax.scatter(a, b, marker=marker, alpha=0.7, label=f"{name} ({len(a)}): tau {st.tau(metric)[0]:.2f}")
        lo = min(min(min(v) for v in getattr(st, metric)) for st in sets.values())
        hi = max(max(max(v) for v in getattr(st, metric)) for st in sets.values())
        ax.plot([lo, hi], [lo, hi], color="grey", lw=0.8, ls="--")
        ax.set_xlabel(f"{label}, seed {seeds[0]}")
        ax.set_ylabel(f"{label}, seed {seeds[1]}")
        ax.legend(fontsize=8)
    fig.suptitle("Same sub-networks, two supernet training seeds (digits)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def report(args: argparse.Namespace, sets: dict[str, SetScores], cfg: TrainConfig, epochs: int,
           max_batches: int | None, n_archs: int, sizes: tuple[int, int], times: list[float],
           cpu_times: list[float], eval_times: list[float]) -> list[str]:
    s0, s1 = args.seeds
    n_train, n_val = sizes
    calib = min(args.calib_images, n_train)
    lines = [
        "# Supernet ranking consistency (bench/supernet_rank.py)",
        "",
        f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {platform.machine()} CPU "
        f"({args.threads} torch thread(s)), torch {torch.__version__}.",
        "",
        "## Settings",
        "",
        f"- dataset digits ({n_train} train / {n_val} val images), space ofa-mbv3 w1.0 r128 (block keys of r128), "
        f"input {args.input_size}x{args.input_size} px, 10 classes; training images "
        f"{'randomly distorted (rotation, zoom, shift)' if args.augment else 'undistorted'}",
        f"- phases {', '.join(cfg.phases)}; {epochs} epoch(s) per phase, "
        f"{'at most ' + str(max_batches) if max_batches else 'all'} steps of {args.batch_size} images per epoch",
        f"- sandwich rule (largest + smallest + {args.n_random} random) with in-place distillation; SGD lr {cfg.lr}, "
        "cosine per phase",
        f"- sub-networks: `random` = {n_archs} uniformly sampled (seed {args.arch_seed}); `ladder` = the 27 with "
        "the same depth, expand and kernel in every unit (smallest to largest)",
        f"- BN recalibrated on {calib} training images, then top-1 and mean cross-entropy on the {n_val} validation "
        "images",
        f"- command: `{' '.join(sys.argv)}`",
        "",
        "## Figures",
        "",
        f"| | seed {s0} | seed {s1} |",
        "|---|---|---|",
        f"| training wall time (s) | {times[0]:.1f} | {times[1]:.1f} |",
        f"| training CPU time (s) | {cpu_times[0]:.1f} | {cpu_times[1]:.1f} |",
        f"| evaluation time, both sets (s) | {eval_times[0]:.1f} | {eval_times[1]:.1f} |",
    ]
    for name, st in sets.items():
        a, b = (np.asarray(v) for v in st.top1)
        la, lb = (np.asarray(v) for v in st.loss)
        lines += [
            f"| `{name}` top-1 min..max | {a.min():.4f}..{a.max():.4f} | {b.min():.4f}..{b.max():.4f} |",
            f"| `{name}` top-1 mean (std) | {a.mean():.4f} ({a.std():.4f}) | {b.mean():.4f} ({b.std():.4f}) |",
            f"| `{name}` distinct top-1 values | {len(set(a.tolist()))} | {len(set(b.tolist()))} |",
            f"| `{name}` loss min..max | {la.min():.4f}..{la.max():.4f} | {lb.min():.4f}..{lb.max():.4f} |",
            f"| `{name}` Kendall tau, parameters vs -loss | {st.params_tau()[0]:.3f} | {st.params_tau()[1]:.3f} |",
            f"| `{name}` split-half tau, top-1 | {st.split_half_tau('top1')[0]:.3f} | "
            f"{st.split_half_tau('top1')[1]:.3f} |",
            f"| `{name}` split-half tau, loss | {st.split_half_tau('loss')[0]:.3f} | "
            f"{st.split_half_tau('loss')[1]:.3f} |",
        ]
    lines += ["", "Kendall tau (Spearman rho) between the two seeds' rankings; AttentiveNAS reports 0.94 between "
              "runs on ImageNet.", "", "| sub-networks | by top-1 | by validation loss |", "|---|---|---|"]
    for name, st in sets.items():
        (t, r), (tl, rl) = st.tau("top1"), st.tau("loss")
        lines.append(f"| `{name}` ({len(st.names)}) | **{t:.3f}** ({r:.3f}) | **{tl:.3f}** ({rl:.3f}) |")
    lines += ["", "The loss does not move in steps of one image, so it separates sub-networks that top-1 ties.",
              "", "Split-half tau: one supernet's sub-networks ranked on the even against the odd validation images. "
              "No training noise enters it, only the finite validation set: it shows how well half the images "
              "can rank these sub-networks at all (all of them do somewhat better)."]
    for name, st in sets.items():
        lines += ["", f"## Sub-networks: `{name}`", "",
                  f"| arch | parameters | top-1 seed {s0} | top-1 seed {s1} | loss seed {s0} | loss seed {s1} |",
                  "|---|---|---|---|---|---|",
                  *[f"| `{n}` | {p} | {x:.4f} | {y:.4f} | {u:.4f} | {v:.4f} |"
                    for n, p, x, y, u, v in zip(st.names, st.params, *st.top1, *st.loss, strict=True)]]
    lines.append("")
    return lines


if __name__ == "__main__":
    main()
