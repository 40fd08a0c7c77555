"""PyTorch eager runners: ``torch-cpu`` (wall clock) and ``torch-cuda`` (CUDA events).

``torch.set_num_threads`` is process-wide: constructing a torch runner sets it for the process.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from budgetnas.core.errors import DeviceUnavailableError
from budgetnas.profiler.runners.base import Prepared, Runner
from budgetnas.profiler.targets import Target


def gpu_info() -> dict[str, Any]:
    if not torch.cuda.is_available():
        return {}
    props = torch.cuda.get_device_properties(0)
    return {"gpu_model": props.name, "gpu_memory_gb": round(props.total_memory / 2**30, 1),
            "cuda": torch.version.cuda}


class TorchCpuRunner(Runner):
    name = "torch-cpu"
    device = "cpu"

    def runtime_version(self) -> str:
        return f"torch {torch.__version__}"

    def check_available(self) -> None:
        torch.set_num_threads(self.threads)

    def load(self, target: Target) -> Prepared:
        module = target.build().to(self.device)
        x = target.example().to(self.device)

        def call() -> None:
            with torch.inference_mode():
                module(x)

        return Prepared(target.name, call, None, keep=[module, x])


class TorchCudaRunner(TorchCpuRunner):
    name = "torch-cuda"
    device = "cuda"
    default_batch = 64

    def check_available(self) -> None:
        if not torch.cuda.is_available():
            raise DeviceUnavailableError("torch-cuda needs a CUDA GPU and a CUDA build of torch; "
                                         "none is available here")

    def device_info(self) -> dict[str, Any]:
        return gpu_info()

    def time(self, prepared: Prepared, n: int) -> np.ndarray:
        """Per-call GPU time from CUDA events (host launch gaps excluded)."""
        events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(n)]
        torch.cuda.synchronize()
        for start, end in events:
            start.record()
            prepared.call()
            end.record()
        torch.cuda.synchronize()
        return np.array([s.elapsed_time(e) for s, e in events], np.float64)
