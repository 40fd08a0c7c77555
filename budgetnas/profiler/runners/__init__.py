"""Runner registry: one name per runtime and device.

    from budgetnas.profiler.runners import get_runner, list_runners
    runner = get_runner("ort-cpu", threads=1, batch=1)      # UnknownNameError for a bad name
    prepared = runner.prepare("expanded_conv-input:...")    # or a budgetnas.profiler.targets.Target
    ms = runner.time(prepared, 100)                         # raw per-call latencies (ms)
    runner.environment()                                    # the record stored with results

Names: ``ort-cpu``, ``ort-cuda``, ``torch-cpu``, ``torch-cuda``, ``litert-cpu``. Constructing a
runner that cannot run here raises (DeviceUnavailableError without CUDA, MissingExtraError
without litert-torch). CUDA runners default to batch 64, the others to 1. Use
:mod:`budgetnas.profiler.protocol` to turn timings into LatencyStats.
"""

from __future__ import annotations

from typing import Any

from budgetnas.core.errors import UnknownNameError
from budgetnas.profiler.artifacts import ArtifactCache
from budgetnas.profiler.runners.base import OVERHEAD_NAME, Prepared, Runner
from budgetnas.profiler.runners.litert import LiteRTCpuRunner
from budgetnas.profiler.runners.ort import OrtCpuRunner, OrtCudaRunner
from budgetnas.profiler.runners.torch_rt import TorchCpuRunner, TorchCudaRunner

RUNNERS: dict[str, type[Runner]] = {}


def register_runner(cls: type[Runner]) -> type[Runner]:
    RUNNERS[cls.name] = cls
    return cls


for _cls in (OrtCpuRunner, OrtCudaRunner, TorchCpuRunner, TorchCudaRunner, LiteRTCpuRunner):
    register_runner(_cls)


def list_runners() -> list[str]:
    return sorted(RUNNERS)


def runner_class(name: str) -> type[Runner]:
    try:
        return RUNNERS[name]
    except KeyError:
        raise UnknownNameError("backend", name, list_runners()) from None


def get_runner(name: str, threads: int = 1, batch: int | None = None, cache: ArtifactCache | None = None,
               **kw: Any) -> Runner:
    return runner_class(name)(threads=threads, batch=batch, cache=cache, **kw)


__all__ = ["OVERHEAD_NAME", "RUNNERS", "Prepared", "Runner", "get_runner", "list_runners", "register_runner",
           "runner_class"]
