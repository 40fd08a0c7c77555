"""A bounded CPU hog on another core, for the benchmarks' ``--interference`` modes.

    with Hog(seconds=600) as hog:     # pins this process to one core, the hog to another
        ...measure...
    hog.describe()                    # what ran, for the report

The hog is a separate process doing dense float work (numpy matmul on one thread, the kind of load
another inference job puts on a shared machine: caches, memory bandwidth, frequency). It stops
when the ``with`` block ends, and by itself after ``seconds`` in any case, so a crashed benchmark
cannot leave it running.
"""

from __future__ import annotations

import os
import subprocess
import sys
from types import TracebackType

_HOG = """
import os, sys, time
os.environ["OMP_NUM_THREADS"] = "1"
import numpy as np
end = time.monotonic() + float(sys.argv[1])
a = np.random.default_rng(0).random((512, 512))
while time.monotonic() < end:
    a = a @ a
    a /= np.abs(a).max()
"""


class Hog:
    def __init__(self, seconds: float = 3600.0) -> None:
        self.seconds = float(seconds)
        self.proc: subprocess.Popen[bytes] | None = None
        self.cores: tuple[int, int] | None = None  # (this process's core, the hog's)

    def __enter__(self) -> Hog:
        cores = sorted(os.sched_getaffinity(0))
        env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        self.proc = subprocess.Popen([sys.executable, "-c", _HOG, str(self.seconds)], env=env)
        if len(cores) >= 2:  # the measurement on one core, the hog on another: contention, not time-slicing
            self.cores = (cores[0], cores[1])
            os.sched_setaffinity(0, {cores[0]})
            os.sched_setaffinity(self.proc.pid, {cores[1]})
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None, tb: TracebackType | None) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        if self.cores is not None:
            os.sched_setaffinity(0, set(range(os.cpu_count() or 1)))

    def describe(self) -> str:
        where = f"measuring on core {self.cores[0]}, hog on core {self.cores[1]}" if self.cores else \
            "one core only: the hog time-slices with the measurement"
        return f"a numpy matmul hog (1 thread, pid {self.proc.pid if self.proc else '-'}); {where}"
