"""Repeatability: the same LUT profiled twice, once quiet and once beside a CPU hog, entry by entry.

    .venv/bin/python bench/repeatability.py                                  # nb201 at 32 px
    .venv/bin/python bench/repeatability.py --space ofa-mbv3 --width 1.0 --resolution 128
    .venv/bin/python bench/repeatability.py --quick                          # smoke run

Both profiles use the default protocol on the same runner. The second runs with ``bench/hog.py``
on the other core. For every block key: the relative difference of the busy profile's statistic
to the quiet one's, as taken and *corrected*, the busy value scaled by the quiet session's
reference time over the reference time beside that entry (``budgetnas.profiler.reference``). Prints the
median and 90th percentile of |difference| both ways, how many entries the protocol flagged
disturbed, and the session reference times. Goal (issue 15): median per-entry difference <= 3%
after correction. Not part of CI.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from hog import Hog

from budgetnas.profiler.lutbuild import profile_space
from budgetnas.profiler.protocol import Protocol
from budgetnas.profiler.runners import get_runner
from budgetnas.spaces import get_space


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--space", choices=["nb201", "ofa-mbv3"], default="nb201")
    ap.add_argument("--resolution", type=int, default=None, help="default: 32 (nb201), 128 (ofa-mbv3)")
    ap.add_argument("--width", type=float, default=1.0)
    ap.add_argument("--backend", default="ort-cpu")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--exporter", default="dynamo", choices=["dynamo", "torchscript"])
    ap.add_argument("--quick", action="store_true", help="short protocol (smoke run)")
    args = ap.parse_args()
    res = args.resolution or (32 if args.space == "nb201" else 128)
    space = get_space("nb201", resolution=res) if args.space == "nb201" else \
        get_space("ofa-mbv3", width=args.width, resolution=res)
    runner = get_runner(args.backend, threads=args.threads, exporter=args.exporter)
    proto = Protocol.quick() if args.quick else Protocol()
    print(f"# {space.name} r{res} on {args.backend} threads={args.threads}, protocol "
          f"{'quick' if args.quick else 'default'}, cpus {os.cpu_count()}, load {os.getloadavg()}", flush=True)
    quiet, mq = profile_space(space, runner, proto, progress=False)
    print(f"quiet: {len(quiet.entries)} entries, reference {mq.reference_ms} ms, disturbed {len(mq.disturbed)} "
          f"({mq.disturbed_visits} visits), load {os.getloadavg()}", flush=True)
    with Hog() as hog:
        print(f"busy: {hog.describe()}", flush=True)
        busy, mb = profile_space(space, runner, proto, progress=False)
    print(f"busy: reference {mb.reference_ms} ms (x{(mb.reference_ms or 0) / (mq.reference_ms or 1):.3f} the quiet "
          f"session's), disturbed {len(mb.disturbed)} ({mb.disturbed_visits} visits), load {os.getloadavg()}")
    stat = quiet.meta.statistic
    keys = sorted(set(quiet.entries) & set(busy.entries))
    q = np.array([quiet.entries[k].value(stat) for k in keys])
    b = np.array([busy.entries[k].value(stat) for k in keys])
    ref = np.array([busy.entries[k].reference_ms or np.nan for k in keys])
    ok = q > 0
    raw = np.abs(b[ok] / q[ok] - 1)
    fixed = np.abs(b[ok] * (mq.reference_ms or np.nan) / ref[ok] / q[ok] - 1)
    for name, d in (("as taken", raw), ("corrected", fixed)):
        print(f"{name:10}: median |diff| {np.nanmedian(d):.2%}, p90 {np.nanpercentile(d, 90):.2%} "
              f"over {len(d)} entries")
    print(f"-> goal (median after correction <= 3%): {'met' if np.nanmedian(fixed) <= 0.03 else 'NOT met'}")


if __name__ == "__main__":
    main()
