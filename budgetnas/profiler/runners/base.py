"""The runner interface: prepare a target once, then time single calls of it."""

from __future__ import annotations

import abc
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from budgetnas.core.errors import InvalidArgumentError
from budgetnas.profiler.artifacts import Artifact, ArtifactCache
from budgetnas.profiler.environment import environment
from budgetnas.profiler.export import EXPORTERS
from budgetnas.profiler.reference import REFERENCE_NAME, reference_target
from budgetnas.profiler.targets import Target, as_target, module_target

OVERHEAD_NAME = "__overhead__"


@dataclass
class Prepared:
    """A target loaded into a runtime: ``call()`` runs one inference on a fixed, pre-bound input."""

    name: str
    call: Callable[[], None]
    artifact: Artifact | None = None
    keep: list[Any] = field(default_factory=list, repr=False)  # objects the call needs kept alive


class _Trivial(nn.Module):
    """The cheapest graph a runtime will still execute: its latency is the per-call overhead."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(x)


class Runner(abc.ABC):
    """Runs targets on one runtime with fixed threads and batch.

    ``prepare(target)`` accepts a block key string (measured at this runner's batch) or a
    :class:`budgetnas.profiler.targets.Target`; ``time(prepared, n)`` returns ``n`` per-call latencies in ms
    (raw: the per-call overhead is *not* subtracted here, the protocol does that);
    ``prepare_overhead()`` is the trivial graph whose latency is that overhead.
    """

    name: ClassVar[str]
    default_batch: ClassVar[int] = 1

    def __init__(self, threads: int = 1, batch: int | None = None, cache: ArtifactCache | None = None,
                 exporter: str = "dynamo") -> None:
        if int(threads) < 1:
            raise InvalidArgumentError(f"threads must be >= 1, got {threads}")
        batch = self.default_batch if batch is None else int(batch)
        if batch < 1:
            raise InvalidArgumentError(f"batch must be >= 1, got {batch}")
        if exporter not in EXPORTERS:
            raise InvalidArgumentError(f"exporter {exporter!r} is not one of {list(EXPORTERS)}")
        self.threads, self.batch, self.exporter = int(threads), batch, exporter
        self.cache = cache or ArtifactCache()
        self.check_available()

    # ---- to implement -------------------------------------------------------------------------
    def check_available(self) -> None:  # noqa: B027 - optional hook, most runners run anywhere
        """Raise DeviceUnavailableError / MissingExtraError when this runner cannot run here."""

    @abc.abstractmethod
    def load(self, target: Target) -> Prepared: ...

    @abc.abstractmethod
    def runtime_version(self) -> str:
        """E.g. 'onnxruntime 1.32.0': a new runtime version means a new LUT."""

    # ---- shared -------------------------------------------------------------------------------
    def prepare(self, target: Target | str) -> Prepared:
        return self.load(as_target(target, self.batch))

    def prepare_overhead(self) -> Prepared:
        prepared = self.load(module_target(_Trivial(), torch.zeros(self.batch, 8), OVERHEAD_NAME))
        prepared.name = OVERHEAD_NAME
        return prepared

    def prepare_reference(self) -> Prepared:
        """The fixed workload timed beside every visit (``budgetnas.profiler.reference``)."""
        prepared = self.load(reference_target(self.batch))
        prepared.name = REFERENCE_NAME
        return prepared

    def time(self, prepared: Prepared, n: int) -> np.ndarray:
        call, clock = prepared.call, time.perf_counter_ns
        out = np.empty(n, np.float64)
        for i in range(n):
            t0 = clock()
            call()
            out[i] = clock() - t0
        return out / 1e6

    def settings(self) -> dict[str, Any]:
        return {"backend": self.name, "threads": self.threads, "batch": self.batch, "exporter": self.exporter}

    def environment(self) -> dict[str, Any]:
        return environment(self.threads, self.batch, {"backend": self.name, "runtime_version": self.runtime_version(),
                                                      **self.device_info()})

    def device_info(self) -> dict[str, Any]:
        return {}
