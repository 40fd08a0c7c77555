"""Pure parsers for the hardware facts an agent reports: ``nvidia-smi`` CSV and ``/proc/cpuinfo``."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

NVIDIA_SMI_QUERY = ["nvidia-smi", "--query-gpu=index,name,driver_version,memory.total,pci.bus_id",
                    "--format=csv,noheader"]


def parse_nvidia_smi(output: str) -> list[dict[str, Any]]:
    """``nvidia-smi --query-gpu=index,name,driver_version,memory.total,pci.bus_id --format=csv,noheader``."""
    gpus = []
    for line in output.strip().splitlines():
        parts = [p.strip() for p in line.split(",")]
        if len(parts) < 3 or not parts[0].isdigit():
            continue
        gpu: dict[str, Any] = {"index": int(parts[0]), "name": parts[1], "driver": parts[2]}
        if len(parts) > 3 and parts[3].endswith("MiB"):
            gpu["memory_mib"] = int(parts[3].split()[0])
        if len(parts) > 4:
            gpu["pci_bus_id"] = parts[4]
        gpus.append(gpu)
    return gpus


def nvidia_gpus() -> list[dict[str, Any]]:
    """The GPUs ``nvidia-smi`` lists (empty without the tool or a driver)."""
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(NVIDIA_SMI_QUERY, capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return parse_nvidia_smi(out)


def parse_cpuinfo(text: str) -> dict[str, Any]:
    """CPU model, logical CPUs, physical cores and the SIMD flags that change kernel choice."""
    model = ""
    logical = 0
    cores: set[tuple[str, str]] = set()
    flags: set[str] = set()
    phys = core = ""
    for line in [*text.splitlines(), ""]:
        key, _, val = (s.strip() for s in line.partition(":"))
        if key == "processor":
            logical += 1
        elif key in ("model name", "Model", "Hardware") and not model:
            model = val
        elif key == "physical id":
            phys = val
        elif key == "core id":
            core = val
        elif key in ("flags", "Features"):
            flags |= set(val.split())
        elif not line.strip() and core:
            cores.add((phys, core))
            phys = core = ""
    simd = sorted(f for f in flags if f in {"avx", "avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile",
                                             "fma", "neon", "asimd", "asimddp", "sve", "sve2", "i8mm", "bf16"})
    return {"cpu_model": model, "logical_cpus": logical, "physical_cores": len(cores) or None, "simd": simd}


def cpu_facts() -> dict[str, Any]:
    try:
        return parse_cpuinfo(Path("/proc/cpuinfo").read_text())
    except OSError:
        return {}
