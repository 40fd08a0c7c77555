"""Run the user's ``benchmark_model`` on a phone over adb and turn its output into ``LatencyStats``.

The tool is the measurement protocol on a phone (warm-ups, runs, min seconds); we add rounds
(several invocations, cooling down between them) so the stats carry a robust centre even when the
tool prints no median: ``median_ms`` is the tool's ``median=`` when printed, otherwise the median
of the per-round averages.
"""

from __future__ import annotations

import hashlib
import re
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from budgetnas.core.errors import BudgetNASError, InvalidArgumentError
from budgetnas.device_agents.adb.client import REMOTE_DIR, AdbClient, quote
from budgetnas.device_agents.adb.parse import BenchmarkOutputError, BenchmarkResult, parse_benchmark_output
from budgetnas.luts.lut import LatencyStats

_RC = re.compile(r"__budgetnas_rc=(\d+)\s*$")


class BenchmarkRunError(BudgetNASError):
    """``benchmark_model`` failed on the phone; ``output`` holds everything it printed."""

    def __init__(self, message: str, output: str) -> None:
        super().__init__(message)
        self.output = output


@dataclass
class PhoneProtocol:
    """How ``benchmark_model`` is invoked: threads, warm-ups, runs, min seconds, rounds, core mask."""

    threads: int = 1
    warmup_runs: int = 5
    num_runs: int = 50
    min_secs: float = 1.0
    warmup_min_secs: float | None = None  # None: the tool's default (0.5 s)
    rounds: int = 3
    cpu_mask: str | None = None  # hex, e.g. "f0" = the big cores of many 4+4 SoCs
    cool_below_c: float | None = 40.0
    max_cool_wait_s: float = 300.0
    extra_args: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.threads < 1 or self.rounds < 1 or self.num_runs < 1 or self.warmup_runs < 0 or self.min_secs < 0:
            raise InvalidArgumentError("threads, rounds and num_runs must be >= 1; warmup_runs, min_secs >= 0")
        if self.cpu_mask is not None and not re.fullmatch(r"(0x)?[0-9a-fA-F]+", self.cpu_mask):
            raise InvalidArgumentError(f"cpu mask {self.cpu_mask!r} must be hexadecimal, e.g. f0")

    def to_dict(self) -> dict[str, Any]:
        return {"threads": self.threads, "warmup_runs": self.warmup_runs, "num_runs": self.num_runs,
                "min_secs": self.min_secs, "warmup_min_secs": self.warmup_min_secs, "rounds": self.rounds,
                "cpu_mask": self.cpu_mask, "cool_below_c": self.cool_below_c}


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class PhoneBenchmark:
    """``benchmark_model`` on one phone: pushes the binary once and each model once (by content hash)."""

    def __init__(self, client: AdbClient, binary: str | Path, protocol: PhoneProtocol,
                 remote_dir: str = REMOTE_DIR) -> None:
        self.client, self.binary, self.protocol = client, Path(binary), protocol
        self.remote_dir = remote_dir.rstrip("/")
        if not self.binary.is_file():
            raise InvalidArgumentError(f"benchmark binary {self.binary} does not exist")
        self.remote_binary = f"{self.remote_dir}/{self.binary.name}"
        self._binary_pushed = False

    def command(self, remote_model: str) -> str:
        p = self.protocol
        args = [self.remote_binary, f"--graph={remote_model}", f"--num_threads={p.threads}",
                f"--warmup_runs={p.warmup_runs}", f"--num_runs={p.num_runs}", f"--min_secs={p.min_secs:g}",
                *([f"--warmup_min_secs={p.warmup_min_secs:g}"] if p.warmup_min_secs is not None else []),
                *p.extra_args]
        pin = f"taskset {p.cpu_mask.removeprefix('0x')} " if p.cpu_mask else ""
        # shell v1 carries no exit status, so the command prints it last.
        return f"cd {quote(self.remote_dir)} && {pin}{quote(*args)} 2>&1; echo __budgetnas_rc=$?"

    def run_once(self, remote_model: str, timeout_s: float = 600.0) -> tuple[BenchmarkResult, str]:
        out = self.client.shell(self.command(remote_model), timeout_s=timeout_s)
        m = _RC.search(out)
        body = out[: m.start()] if m else out
        try:
            res = parse_benchmark_output(body)
        except BenchmarkOutputError as exc:
            rc = m.group(1) if m else "?"
            raise BenchmarkRunError(f"{exc} (exit status {rc})", out) from None
        return res, body

    def measure(self, model: str | Path) -> tuple[LatencyStats, dict[str, Any], str]:
        """Stats, the environment it was taken in, and the tool's full output (all rounds)."""
        if not self._binary_pushed:
            self.client.ensure_file(self.binary, self.remote_binary, 0o755)
            self._binary_pushed = True
        remote_model = f"{self.remote_dir}/{sha256_file(model)[:20]}.tflite"
        self.client.ensure_file(model, remote_model, 0o644)
        p = self.protocol
        results: list[BenchmarkResult] = []
        outputs: list[str] = []
        temps: list[float | None] = []
        for _ in range(p.rounds):
            if p.cool_below_c is not None:
                temps.append(self.client.wait_cool(p.cool_below_c, p.max_cool_wait_s))
            res, out = self.run_once(remote_model)
            results.append(res)
            outputs.append(out)
        stats = combine_rounds(results, p)
        env = {"benchmark_binary": self.binary.name, "format": results[-1].format, "protocol": p.to_dict(),
               "round_avg_ms": [r.avg_ms for r in results],
               "temperature_c": [t for t in temps if t is not None] or None,
               "init_ms": results[-1].init_ms}
        return stats, env, "\n".join(outputs)


def combine_rounds(results: list[BenchmarkResult], protocol: PhoneProtocol) -> LatencyStats:
    """One ``LatencyStats`` from per-round summaries (pooled mean and std, min of mins)."""
    if not results:
        raise InvalidArgumentError("no benchmark rounds to combine")
    counts = [r.count or protocol.num_runs for r in results]
    total = sum(counts)
    mean = sum(c * r.avg_ms for c, r in zip(counts, results, strict=True)) / total
    # pooled variance: within-round variance plus the spread of round means
    within = sum(c * (r.std_ms or 0.0) ** 2 for c, r in zip(counts, results, strict=True))
    between = sum(c * (r.avg_ms - mean) ** 2 for c, r in zip(counts, results, strict=True))
    std = (max(within + between, 0.0) / max(total - 1, 1)) ** 0.5
    medians = [r.median_ms for r in results]
    median = (statistics.median(m for m in medians if m is not None) if all(m is not None for m in medians)
              else statistics.median(r.avg_ms for r in results))
    mins = [r.min_ms for r in results if r.min_ms is not None]
    spread = (max(r.avg_ms for r in results) - min(r.avg_ms for r in results)) / median if median > 0 else 0.0
    return LatencyStats(
        count=total, mean_ms=mean, std_ms=std, median_ms=median, min_ms=min(mins) if mins else None,
        cv=std / mean if mean > 0 else 0.0, warmup_runs=protocol.warmup_runs,
        seconds=sum(c * r.avg_ms for c, r in zip(counts, results, strict=True)) / 1000.0,
        noisy=len(results) > 1 and spread > 0.1,
    )
