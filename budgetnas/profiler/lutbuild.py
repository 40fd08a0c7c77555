"""Build a LUT: measure every block key of a space on one runner.

    lut, measurement = profile_space(space, get_runner("ort-cpu"), Protocol(), device="my-laptop")
    lut.save("lut.json")       # budgetnas.luts.lut format (JSON; documented in budgetnas/luts/lut.py)

``meta.protocol`` records the protocol, the exporter and opset, the measured per-call overhead
and how many entries were re-measured or stayed noisy; ``meta.environment`` the machine record.
"""

from __future__ import annotations

import socket
from typing import Any

from budgetnas.luts.lut import LUT, LUTMeta
from budgetnas.profiler.export import OPSET
from budgetnas.profiler.protocol import Measurement, Protocol, measure_many
from budgetnas.profiler.runners.base import Runner
from budgetnas.spaces.base import SearchSpace


def lut_meta(space: SearchSpace[Any], runner: Runner, m: Measurement, device: str | None) -> LUTMeta:
    return LUTMeta(space=space.describe(), device=device or socket.gethostname(), backend=runner.name,
                   batch=runner.batch, threads=runner.threads, runtime_version=runner.runtime_version(),
                   statistic="median", environment=runner.environment(),
                   protocol={**m.record(), "exporter": runner.exporter, "opset": OPSET})


def profile_space(space: SearchSpace[Any], runner: Runner, protocol: Protocol | None = None,
                  device: str | None = None, progress: bool = True) -> tuple[LUT, Measurement]:
    keys = space.all_block_keys()
    m = measure_many(runner, keys, protocol, progress=progress, desc=f"profiling {space.name} on {runner.name}")
    return LUT(lut_meta(space, runner, m, device), m.stats), m
