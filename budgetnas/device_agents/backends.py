"""The ``--backend`` registry: what an agent measures with.

- cpu: ``ort-cpu``, ``torch-cpu``, ``litert-cpu``: the profiler's runners and protocol in this
  process, optionally pinned to cores (``os.sched_setaffinity``).
- gpu: ``torch-cuda``, ``ort-cuda``: the profiler's CUDA runners (CUDA events, batch 64 unless the
  LUT says otherwise), GPU name and driver from ``nvidia-smi`` recorded; without a GPU they refuse
  to start (DeviceUnavailableError), never fake a number.
- phone: ``android-litert``: the job's module exported to ``.tflite`` by the profiler, run by the
  user's ``benchmark_model`` on a phone over adb (``budgetnas.device_agents.adb``).

A backend turns one leased job into (LatencyStats, environment, output); any BudgetNASError it
raises fails the job with the output attached.
"""

from __future__ import annotations

import abc
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from budgetnas.core.errors import InvalidArgumentError, UnknownNameError
from budgetnas.luts.lut import LatencyStats


@dataclass
class BackendOptions:
    threads: int = 1
    batch: int | None = None  # None: the runner's default (64 on GPUs, 1 elsewhere) when a job carries none
    cores: list[int] | None = None  # pin to these CPUs (cpu backends) / taskset mask on the phone
    quick: bool = False  # the profiler's short protocol (tests, smoke runs)
    adb: str | None = None
    benchmark_binary: str | None = None
    protocol: dict[str, Any] = field(default_factory=dict)  # overrides of the protocol's fields
    cache_dir: str | None = None


@dataclass
class Measured:
    stats: LatencyStats
    environment: dict[str, Any]
    output: str = ""


@dataclass(frozen=True)
class JobSpec:
    """What a leased job asks for (the fields of REST v1's job object that matter to measuring)."""

    id: int
    kind: str
    key: str | None
    arch: str | None
    space: dict[str, Any]
    batch: int | None
    threads: int | None

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> JobSpec:
        return cls(int(d["id"]), str(d["kind"]), d.get("key"), d.get("arch"), dict(d.get("space") or {}),
                   d.get("batch"), d.get("threads"))


def job_target(job: JobSpec, batch: int) -> Any:
    """The profiler target of a job: a block key, or a whole model of the job's space."""
    from budgetnas.profiler.targets import block_target, model_target

    if job.kind == "block" and job.key:
        return block_target(job.key, batch)
    if job.kind == "model" and job.arch:
        from budgetnas.spaces import get_space

        params = {k: v for k, v in job.space.items() if k != "space"}
        return model_target(get_space(str(job.space.get("space")), **params), job.arch, batch)
    raise InvalidArgumentError(f"job {job.id}: kind {job.kind!r} without a key or arch")


class Backend(abc.ABC):
    name: ClassVar[str]
    kind: ClassVar[str]  # cpu | gpu | phone

    def __init__(self, options: BackendOptions) -> None:
        self.options = options

    @abc.abstractmethod
    def facts(self) -> dict[str, Any]:
        """Hardware and runtime facts of the device, for its record on the server."""

    @abc.abstractmethod
    def measure(self, job: JobSpec) -> Measured: ...

    def measure_together(self, jobs: list[JobSpec]) -> dict[int, Measured]:
        """Several jobs measured in one session, by job id; {} where the backend measures one at a time."""
        return {}

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release the device (phone connection)."""

    def threads_for(self, job: JobSpec) -> int:
        # The LUT's threads define what is measured; the agent's --threads only fills a gap.
        return int(job.threads) if job.threads else self.options.threads


BACKENDS: dict[str, type[Backend]] = {}


def register_backend(cls: type[Backend]) -> type[Backend]:
    BACKENDS[cls.name] = cls
    return cls


def list_backends() -> list[str]:
    return sorted(BACKENDS)


def get_backend(name: str, options: BackendOptions) -> Backend:
    try:
        cls = BACKENDS[name]
    except KeyError:
        raise UnknownNameError("backend", name, list_backends()) from None
    return cls(options)


def pin_cores(cores: list[int] | None) -> list[int] | None:
    """Pin this process (and the runtime threads it starts later) to ``cores``."""
    if not cores:
        return None
    if not hasattr(os, "sched_setaffinity"):
        raise InvalidArgumentError("--cores needs os.sched_setaffinity (Linux)")
    try:
        os.sched_setaffinity(0, set(cores))
    except OSError as exc:
        raise InvalidArgumentError(f"--cores {cores}: cannot pin: {exc.strerror}") from None
    return sorted(os.sched_getaffinity(0))


# ---- cpu and gpu: the profiler's runners -----------------------------------------------------------
class ProfilerBackend(Backend):
    """A profiler runner (same name) measured with the profiler's protocol."""

    def __init__(self, options: BackendOptions) -> None:
        super().__init__(options)
        from budgetnas.profiler.artifacts import ArtifactCache
        from budgetnas.profiler.runners import get_runner

        self.pinned = pin_cores(options.cores)
        self.cache = ArtifactCache(options.cache_dir) if options.cache_dir else None
        self._runners: dict[tuple[int, int | None], Any] = {}
        # constructing the default runner checks the runtime (raises without CUDA / litert-torch)
        self.protocol()  # a bad --protocol field fails at start (TypeError -> CLI error)
        self._runners[(options.threads, options.batch)] = get_runner(self.name, threads=options.threads,
                                                                     batch=options.batch, cache=self.cache)

    def runner(self, threads: int, batch: int | None) -> Any:
        from budgetnas.profiler.runners import get_runner

        key = (threads, batch)
        if key not in self._runners:
            self._runners[key] = get_runner(self.name, threads=threads, batch=batch, cache=self.cache)
        return self._runners[key]

    def protocol(self) -> Any:
        from budgetnas.profiler.protocol import Protocol

        over = self.options.protocol
        return Protocol.quick(**over) if self.options.quick else Protocol(**over)

    def facts(self) -> dict[str, Any]:
        from budgetnas.device_agents.facts import cpu_facts

        r = next(iter(self._runners.values()))
        return {"kind": self.kind, **cpu_facts(), "runtime_version": r.runtime_version(), "backend": self.name,
                **({"pinned_cores": self.pinned} if self.pinned else {})}

    def measure(self, job: JobSpec) -> Measured:
        from budgetnas.profiler.protocol import measure

        runner = self.runner(self.threads_for(job), job.batch or self.options.batch)
        stats = measure(runner, job_target(job, runner.batch), self.protocol())
        return Measured(stats, self._environment(runner))

    def _environment(self, runner: Any, **extra: Any) -> dict[str, Any]:
        """What a result says about how it was measured: the runner's facts, the protocol, the pinning."""
        env = {**runner.environment(), "protocol": self.protocol().to_dict(), **extra}
        if self.pinned:
            env["pinned_cores"] = self.pinned
        return env

    def measure_together(self, jobs: list[JobSpec]) -> dict[int, Measured]:
        """The jobs in interleaved rounds (``measure_many``), as ``budgetnas profile`` measures a LUT: every
        entry is timed between the others, not alone after its own warm-up. Jobs that share a runner
        (threads, batch) share a session."""
        from budgetnas.profiler.protocol import measure_many

        groups: dict[tuple[int, int | None], list[JobSpec]] = {}
        for job in jobs:
            groups.setdefault((self.threads_for(job), job.batch or self.options.batch), []).append(job)
        out: dict[int, Measured] = {}
        for (threads, batch), group in groups.items():
            runner = self.runner(threads, batch)
            targets = [job_target(job, runner.batch) for job in group]
            m = measure_many(runner, targets, self.protocol(), progress=False)
            for job, target in zip(group, targets, strict=True):
                out[job.id] = Measured(m.stats[target.name], self._environment(runner, measured_together=len(group)))
        return out


@register_backend
class OrtCpuBackend(ProfilerBackend):
    name, kind = "ort-cpu", "cpu"


@register_backend
class TorchCpuBackend(ProfilerBackend):
    name, kind = "torch-cpu", "cpu"


@register_backend
class LiteRTCpuBackend(ProfilerBackend):
    name, kind = "litert-cpu", "cpu"


class _GpuBackend(ProfilerBackend):
    kind = "gpu"

    def facts(self) -> dict[str, Any]:
        from budgetnas.device_agents.facts import nvidia_gpus

        gpus = nvidia_gpus()
        base = super().facts()
        return {**base, "kind": "gpu", "gpus": gpus,
                **({"gpu_name": gpus[0]["name"], "gpu_driver": gpus[0]["driver"]} if gpus else {})}

    def measure(self, job: JobSpec) -> Measured:
        m = super().measure(job)
        from budgetnas.device_agents.facts import nvidia_gpus

        gpus = nvidia_gpus()
        if gpus:
            m.environment.update(gpu_name=gpus[0]["name"], gpu_driver=gpus[0]["driver"])
        return m


@register_backend
class TorchCudaBackend(_GpuBackend):
    name = "torch-cuda"


@register_backend
class OrtCudaBackend(_GpuBackend):
    name = "ort-cuda"


# ---- phone ---------------------------------------------------------------------------------------
def cores_to_mask(cores: list[int] | None) -> str | None:
    return None if not cores else format(sum(1 << c for c in set(cores)), "x")


@register_backend
class AndroidLiteRTBackend(Backend):
    """``benchmark_model`` on a phone; the ``.tflite`` comes from the profiler's export (litert-torch)."""

    name, kind = "android-litert", "phone"

    def __init__(self, options: BackendOptions) -> None:
        super().__init__(options)
        from budgetnas.device_agents.adb.benchmark import PhoneBenchmark, PhoneProtocol
        from budgetnas.device_agents.adb.client import AdbClient
        from budgetnas.profiler.artifacts import ArtifactCache
        from budgetnas.profiler.export import require_litert_torch

        if not options.adb:
            raise InvalidArgumentError("--backend android-litert needs --adb SERIAL or HOST:PORT")
        if not options.benchmark_binary:
            raise InvalidArgumentError("--backend android-litert needs --benchmark-binary PATH "
                                       "(TFLite's benchmark_model for the phone's ABI)")
        if not Path(options.benchmark_binary).is_file():
            raise InvalidArgumentError(f"--benchmark-binary {options.benchmark_binary}: no such file")
        require_litert_torch()  # the .tflite of a block is made here, by the profiler's export
        self.cache = ArtifactCache(options.cache_dir) if options.cache_dir else ArtifactCache()
        self.client = AdbClient(options.adb)
        self._facts = self.client.facts()  # connects now: a wrong address fails at start, not per job
        proto = {"threads": options.threads, "cpu_mask": cores_to_mask(options.cores), **options.protocol}
        if options.quick:
            proto = {"warmup_runs": 2, "num_runs": 10, "min_secs": 0.05, "warmup_min_secs": 0.02, "rounds": 2,
                     **proto}
        self.base_protocol = PhoneProtocol(**proto)
        self.bench = PhoneBenchmark(self.client, options.benchmark_binary, self.base_protocol)

    def facts(self) -> dict[str, Any]:
        return {**self._facts, "backend": self.name, "benchmark_binary": Path(self.bench.binary).name}

    def measure(self, job: JobSpec) -> Measured:
        from dataclasses import replace

        from budgetnas.profiler.export import tflite_artifact

        art = tflite_artifact(job_target(job, job.batch or 1), self.cache)
        self.bench.protocol = replace(self.base_protocol, threads=self.threads_for(job))
        stats, env, output = self.bench.measure(art.path)
        env = {**env, "phone": self._facts, "artifact_sha256": art.sha256, "batch": job.batch or 1,
               "runtime_version": "benchmark_model"}
        return Measured(stats, env, output)

    def close(self) -> None:
        self.client.close()

