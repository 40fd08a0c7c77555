"""Which drift estimate follows the demo's models: the reference workload or re-measured validation models.

    python bench/demo_anchors.py runs/demo-* [--anchors 5] [--sessions 2]

For each kept ``make demo`` run (its ``budgetnas.db`` and ``demo.json``), measures its generated archs
together with ``--anchors`` of its validation models (``pick_anchors``) in ``--sessions`` separate sessions
on this machine, with the demo's runner and statistic. Prints per session the reference workload's ratio to
the LUT's session and the anchors' drift (their time now over their time as the calibration was fitted),
and each arch's measured / predicted after dividing by either. The drift that follows the models leaves the
archs' ratios steady from session to session; the spread of the anchors' own ratios shows how much one
session's models scatter. Nothing is stored. Run it on a quiet machine: it is a timing.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from budgetnas.db.repo import load_lut, model_measurement_rows
from budgetnas.db.session import Database
from budgetnas.luts.calibration import lut_reference_ms, pick_anchors, sessions
from budgetnas.luts.lut import LUT
from budgetnas.profiler.fidelity import measure_anchored
from budgetnas.profiler.protocol import Protocol
from budgetnas.profiler.runners import get_runner
from budgetnas.profiler.targets import model_target
from budgetnas.spaces import space_from_description


def run(path: Path, k: int, n_sessions: int) -> None:
    with Database(f"sqlite:///{path / 'budgetnas.db'}").session() as s:
        lut = LUT.from_json_dict(load_lut(s, 1))
        rows = model_measurement_rows(s, 1)
    space = space_from_description(lut.meta.space)
    fitted, ses = sessions(lut, [r for _, _, r in rows], np.array([ms for _, ms, _ in rows]), True)
    gen = list(json.loads((path / "demo.json").read_text())["rows"])
    picks = pick_anchors(fitted, k)
    anchors = [model_target(space, space.parse(rows[i][0])) for i in picks]
    archs = [model_target(space, space.parse(r["arch"])) for r in gen]
    runner = get_runner(lut.meta.backend, threads=lut.meta.threads)
    stat = lut.meta.statistic
    print(f"{path.name}: {len(rows)} validation models (their session x{ses.ratio or float('nan'):.3f} the LUT's), "
          f"{len(picks)} anchors, {len({a.name for a in archs})} distinct archs, statistic {stat}")
    for i in range(n_sessions):
        session = measure_anchored(runner, archs, anchors, [float(fitted[j]) for j in picks], stat, Protocol(),
                                   lut_reference_ms(lut), progress=False)
        m, drift, ref = session.measurement, session.drift, session.reference_ratio or float("nan")
        print(f"  session {i}: reference x{ref:.3f}; anchors x{drift.ratio:.3f} "
              f"(each: {' '.join(f'{x:.3f}' for x in drift.ratios)})")
        for r, t in zip(gen, archs, strict=True):
            v = m.stats[t.name].value(stat)
            print(f"    budget {r['budget_ms']:.3f} predicted {r['latency_ms']:.3f}: measured {v:.3f}, "
                  f"/ predicted {v / r['latency_ms']:.3f}, / reference {v / ref / r['latency_ms']:.3f}, "
                  f"/ anchors {v / drift.ratio / r['latency_ms']:.3f} "
                  f"({'fits' if v / drift.ratio <= r['budget_ms'] else 'over'})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", type=Path, nargs="+", help="kept demo run directories (runs/demo-*)")
    ap.add_argument("--anchors", type=int, default=5)
    ap.add_argument("--sessions", type=int, default=2)
    a = ap.parse_args()
    for p in a.runs:
        run(p, a.anchors, a.sessions)


if __name__ == "__main__":
    main()
