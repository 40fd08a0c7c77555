"""Profiling throughput: block keys profiled per minute at the default protocol, and the cv reached.

Profiles ``--keys`` block keys of a space (evenly spread over its sorted keys) on one runner, twice:
with an empty artifact cache (exports included) and again with the cache warm (measurement only).
Prints keys/minute for both, the median and p90 cv of the entries, and how many stayed noisy.

    .venv/bin/python bench/profile_throughput.py                           # ofa-mbv3 r224, 24 keys
    .venv/bin/python bench/profile_throughput.py --keys 8 --quick          # smoke run

Not part of CI.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from budgetnas.profiler.artifacts import ArtifactCache
from budgetnas.profiler.protocol import Protocol, measure_many
from budgetnas.profiler.runners import get_runner
from budgetnas.spaces import get_space


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--space", default="ofa-mbv3")
    ap.add_argument("--resolution", type=int, default=224)
    ap.add_argument("--keys", type=int, default=24, help="how many block keys (0: all)")
    ap.add_argument("--backend", default="ort-cpu")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--exporter", default="dynamo", choices=["dynamo", "torchscript"])
    ap.add_argument("--quick", action="store_true", help="quick protocol instead of the default")
    args = ap.parse_args()
    space = get_space(args.space, resolution=args.resolution)
    keys = space.all_block_keys()
    if args.keys and args.keys < len(keys):
        keys = [keys[int(i)] for i in np.linspace(0, len(keys) - 1, args.keys)]
    proto = Protocol.quick() if args.quick else Protocol()
    print(f"# {args.space} r{args.resolution}, {len(keys)} keys, {args.backend} threads={args.threads}, "
          f"exporter={args.exporter}, protocol={'quick' if args.quick else 'default'}, load={os.getloadavg()}")
    with tempfile.TemporaryDirectory() as tmp:
        runner = get_runner(args.backend, threads=args.threads, exporter=args.exporter, cache=ArtifactCache(tmp))
        for label in ("cold cache (export + measure)", "warm cache (measure only)"):
            t0 = time.perf_counter()
            m = measure_many(runner, keys, proto, desc=label)
            minutes = (time.perf_counter() - t0) / 60
            cvs = np.array([s.cv or 0.0 for s in m.stats.values()])
            print(f"{label}: {len(keys) / minutes:.1f} keys/min ({minutes * 60:.0f} s), median cv {np.median(cvs):.3f}, "
                  f"p90 cv {np.percentile(cvs, 90):.3f}, noisy {len(m.noisy)}/{len(keys)}, "
                  f"re-measured {len(m.remeasured)}, overhead {m.overhead.median_ms * 1e3:.1f} us/call, "
                  f"load {os.getloadavg()[0]:.1f}", flush=True)


if __name__ == "__main__":
    main()
