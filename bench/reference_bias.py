"""Does the reference workload read the machine, or what was measured just before it?

    .venv/bin/python bench/reference_bias.py                 # ofa-mbv3 w1.0 r128, 3 pairs of sessions per setting
    .venv/bin/python bench/reference_bias.py --repeats 1     # quicker

A LUT session visits blocks; the session that validates it visits whole models. Both time the same
reference workload around every visit, and the ratio of the two sessions' reference times is divided out
of the models as the machine's drift (``budgetnas.luts.calibration.sessions``). On a quiet machine that
ratio should be 1. This bench measures it: sessions of block keys and sessions of whole models on one core,
with the default protocol's ``reference_warmup`` and with 0 (the reference timed cold after each entry),
both settings in every repeat and the order alternated. Prints each session's reference time and the
models-over-blocks ratio per setting. Not part of CI; say what else ran.
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from budgetnas.profiler.protocol import Protocol, measure_many
from budgetnas.profiler.runners import get_runner
from budgetnas.profiler.targets import model_target
from budgetnas.spaces import get_space


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--width", type=float, default=1.0)
    ap.add_argument("--resolution", type=int, default=128)
    ap.add_argument("--blocks", type=int, default=24, help="block keys per blocks session")
    ap.add_argument("--models", type=int, default=6, help="whole models per models session")
    ap.add_argument("--repeats", type=int, default=3, help="pairs of sessions per setting")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core, as the agents measure
    space = get_space("ofa-mbv3", width=args.width, resolution=args.resolution)
    rng = np.random.default_rng(args.seed)
    keys = sorted(space.all_block_keys())
    blocks = [keys[int(i)] for i in rng.choice(len(keys), min(args.blocks, len(keys)), replace=False)]
    models = [model_target(space, space.sample(rng)) for _ in range(args.models)]
    runner = get_runner("ort-cpu", threads=1, exporter="torchscript")
    base = Protocol.quick(rounds=3)
    print(f"# ofa-mbv3 w{args.width} r{args.resolution}: {len(blocks)} blocks vs {len(models)} whole models per "
          f"session, ort-cpu 1 thread, Protocol.quick(rounds=3); load {os.getloadavg()[0]:.2f}", flush=True)
    settings = (base.reference_warmup or 2, 0)
    ratios: dict[int, list[float]] = {w: [] for w in settings}
    for r in range(args.repeats):
        # both settings in every repeat, in alternating order, and blocks/models alternating too: the machine's own
        # slow drift over the run (caches, frequency) then falls on both settings and both kinds of session alike
        for w in settings if r % 2 == 0 else settings[::-1]:
            proto = replace(base, reference_warmup=w)
            refs = {}
            for kind in ("blocks", "models") if r % 2 == 0 else ("models", "blocks"):
                refs[kind] = measure_many(runner, blocks if kind == "blocks" else models, proto,
                                          progress=False).reference_ms
            ref_b, ref_m = refs["blocks"], refs["models"]
            assert ref_b is not None and ref_m is not None
            ratios[w].append(ref_m / ref_b)
            print(f"repeat {r} reference_warmup={w}: blocks session {ref_b:.4f} ms, models session {ref_m:.4f} ms, "
                  f"ratio {ref_m / ref_b:.3f}", flush=True)
    for w, rs in ratios.items():
        print(f"reference_warmup={w}: models/blocks reference ratio median {np.median(rs):.3f} (range "
              f"{min(rs):.3f}-{max(rs):.3f}; 1.000 = no drift read where there is none)")
    print(f"load at the end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
