"""The environment record stored with every measurement: what ran where, and how loaded it was.

``environment(threads=, batch=, extra=)`` returns a JSON-able dict: CPU model, logical/physical
cores, the cpufreq governor where readable, load average, total memory, OS, Python and runtime
versions (numpy, torch, onnxruntime, ai-edge-litert when importable), GPU model when CUDA is there,
plus the threads and batch of the run. Nothing here raises: unreadable fields are simply absent.
"""

from __future__ import annotations

import contextlib
import os
import platform
import socket
from importlib import metadata
from pathlib import Path
from typing import Any

_RUNTIMES = ("numpy", "torch", "onnxruntime", "onnxruntime-gpu", "ai-edge-litert", "litert-torch", "onnx")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def governor() -> str | None:
    try:
        return Path("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor").read_text().strip()
    except OSError:
        return None


def package_version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def runtime_versions() -> dict[str, str]:
    return {n: v for n in _RUNTIMES if (v := package_version(n)) is not None}


def environment(threads: int, batch: int, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    import psutil

    env: dict[str, Any] = {
        "hostname": socket.gethostname(),
        "cpu_model": cpu_model(),
        "cpu_logical": os.cpu_count(),
        "cpu_physical": psutil.cpu_count(logical=False),
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "os": platform.platform(),
        "python": platform.python_version(),
        "runtimes": runtime_versions(),
        "threads": threads,
        "batch": batch,
    }
    gov = governor()
    if gov is not None:
        env["governor"] = gov
    with contextlib.suppress(OSError):
        env["load_average"] = [round(v, 2) for v in os.getloadavg()]
    env.update(extra or {})
    return env
