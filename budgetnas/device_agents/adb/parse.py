"""Pure parsers for what a phone prints: TFLite/LiteRT ``benchmark_model`` output, ``getprop``, sysfs.

``benchmark_model`` has printed its timings in several formats over the years; every one we know is
handled, with or without a log prefix (``INFO: ``, absl's ``I1124 05:01:02.123 123 file.cc:42] ``,
or LiteRT's ``benchmark_litert_model`` tags)::

    count=7810 first=131 curr=121 min=104 max=680 avg=124.9 std=19 [p5=.. median=.. p95=..]
    Inference timings in us: Init: 3210, First inference: 212, Warmup (avg): 127.3, Inference (avg): 124.9
    Average inference timings in us: Warmup: 150.248, Init: 709, Inference: 145.394   (TF 1.x/2.0-2.2)
    Average inference timings in us: Warmup: 150.248, Init: 709, no stats: 145.394     (TF 1.13)

All times the tool prints are microseconds; what we return is milliseconds.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from budgetnas.core.errors import BudgetNASError

_NUM = r"[-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?"
_STAT_LINE = re.compile(r"count=(\d+)((?:\s+[a-z0-9_]+=" + _NUM + r")+)")
_KV = re.compile(r"([a-z0-9_]+)=(" + _NUM + r")")
_CURRENT = re.compile(
    r"Inference timings in us:\s*Init:\s*(?P<init>" + _NUM + r"),\s*First inference:\s*(?P<first>" + _NUM
    + r"),\s*Warmup \(avg\):\s*(?P<warmup>" + _NUM + r"),\s*Inference \(avg\):\s*(?P<avg>" + _NUM + r")")
_OLDER = re.compile(
    r"Average inference timings in us:\s*Warmup:\s*(?P<warmup>" + _NUM + r"),\s*Init:\s*(?P<init>" + _NUM
    + r"),\s*(?:Inference|no stats):\s*(?P<avg>" + _NUM + r")")
_RUNNING = re.compile(r"Running benchmark for at least (\d+) iterations")
_FAILURES = (
    re.compile(r"Failed to (?:load|mmap|create|allocate|invoke|apply|initialize)[^\n]*", re.I),
    re.compile(r"Benchmarking failed[^\n]*", re.I),
    re.compile(r"Could not open[^\n]*", re.I),
    re.compile(r"(?:not found|Permission denied|cannot execute|inaccessible or not found)[^\n]*", re.I),
)


class BenchmarkOutputError(BudgetNASError):
    """``benchmark_model`` printed nothing we can read timings from (the message says what it did print)."""


@dataclass(frozen=True)
class StatLine:
    """One ``count=... avg=... std=...`` line: a run of ``count`` inferences, times in microseconds."""

    count: int
    first_us: float | None
    min_us: float | None
    max_us: float | None
    avg_us: float
    std_us: float
    median_us: float | None = None
    p5_us: float | None = None
    p95_us: float | None = None


@dataclass(frozen=True)
class BenchmarkResult:
    """What one ``benchmark_model`` invocation measured (ms), and which output format said so."""

    format: str  # "current" | "older" | "stat-lines"
    avg_ms: float
    count: int | None
    std_ms: float | None
    min_ms: float | None
    max_ms: float | None
    median_ms: float | None
    init_ms: float | None
    first_ms: float | None
    warmup_avg_ms: float | None
    warmup_runs: int | None


def parse_stat_line(line: str) -> StatLine | None:
    m = _STAT_LINE.search(line)
    if m is None:
        return None
    kv = {k: float(v) for k, v in _KV.findall(m.group(2))}
    if "avg" not in kv:
        return None
    return StatLine(count=int(m.group(1)), first_us=kv.get("first"), min_us=kv.get("min"), max_us=kv.get("max"),
                    avg_us=kv["avg"], std_us=kv.get("std", 0.0), median_us=kv.get("median"), p5_us=kv.get("p5"),
                    p95_us=kv.get("p95"))


def _ms(us: float | None) -> float | None:
    return None if us is None else us / 1000.0


def failure_reason(output: str) -> str | None:
    """The first line of ``output`` that says why the tool failed, if any."""
    for pat in _FAILURES:
        m = pat.search(output)
        if m:
            return m.group(0).strip()
    return None


def parse_benchmark_output(output: str) -> BenchmarkResult:
    """Timings of one ``benchmark_model`` / ``benchmark_litert_model`` run.

    The tool prints a stats line for the warm-up run and one for the measured run; the summary line
    (current or older format) names which is which. When only stats lines exist (a truncated log),
    the last one is the measured run and the one before it, if any, the warm-up.
    """
    stats = [s for s in (parse_stat_line(ln) for ln in output.splitlines()) if s is not None]
    run = stats[-1] if stats else None
    warm = stats[-2] if len(stats) >= 2 else None
    iterations = [int(n) for n in _RUNNING.findall(output)]
    warmup_runs = warm.count if warm else (iterations[0] if len(iterations) >= 2 else None)

    init: float | None
    first: float | None
    warmup: float | None
    m = _CURRENT.search(output)
    if m:
        fmt, avg_us = "current", float(m["avg"])
        init, first, warmup = float(m["init"]), float(m["first"]), float(m["warmup"])
    else:
        m = _OLDER.search(output)
        if m:
            fmt, avg_us = "older", float(m["avg"])
            init, first, warmup = float(m["init"]), None, float(m["warmup"])
        elif run is not None:
            fmt, avg_us = "stat-lines", run.avg_us
            init, first, warmup = None, None, (warm.avg_us if warm else None)
        else:
            reason = failure_reason(output)
            tail = output.strip()[-400:] or "<no output>"
            raise BenchmarkOutputError(
                f"benchmark_model output has no timings ({reason or 'no known format'}): {tail}")
    # The summary's average is authoritative; the stats line adds spread when it describes the same run.
    same = run is not None and abs(run.avg_us - avg_us) <= max(0.01 * avg_us, 0.5)
    return BenchmarkResult(
        format=fmt, avg_ms=avg_us / 1000.0,
        count=run.count if same and run else None,
        std_ms=_ms(run.std_us) if same and run else None,
        min_ms=_ms(run.min_us) if same and run else None,
        max_ms=_ms(run.max_us) if same and run else None,
        median_ms=_ms(run.median_us) if same and run else None,
        init_ms=_ms(init), first_ms=_ms(first if first is not None else (run.first_us if run and same else None)),
        warmup_avg_ms=_ms(warmup), warmup_runs=warmup_runs,
    )


# ---- getprop and sysfs ------------------------------------------------------------------------
_GETPROP = re.compile(r"^\[([^\]]+)\]:\s*\[(.*)\]\s*$")


def parse_getprop(output: str) -> dict[str, str]:
    """``getprop`` with no argument prints ``[name]: [value]`` lines (values never span lines we need)."""
    props = {}
    for line in output.splitlines():
        m = _GETPROP.match(line.strip())
        if m:
            props[m.group(1)] = m.group(2)
    return props


def device_facts(props: dict[str, str]) -> dict[str, str]:
    """The hardware and runtime facts a LUT's device record keeps, from ``getprop``."""
    def first(*names: str) -> str:
        return next((props[n] for n in names if props.get(n)), "")

    return {
        "kind": "android",
        "manufacturer": first("ro.product.manufacturer"),
        "model": first("ro.product.model"),
        "device": first("ro.product.device"),
        "soc": first("ro.soc.model", "ro.hardware.chipname", "ro.board.platform", "ro.hardware"),
        "board": first("ro.product.board", "ro.board.platform"),
        "android": first("ro.build.version.release"),
        "sdk": first("ro.build.version.sdk"),
        "abi": first("ro.product.cpu.abi"),
        "build": first("ro.build.fingerprint", "ro.build.display.id"),
    }


def parse_temperatures(output: str) -> list[float]:
    """Temperatures in °C from sysfs readings, one integer a line.

    Thermal zones report millidegrees, batteries tenths of a degree; anything above 1000 is
    millidegrees, above 150 tenths. Zones that read negative or absurd values (disabled sensors) are dropped.
    """
    temps = []
    for tok in output.split():
        try:
            v = float(tok)
        except ValueError:
            continue
        c = v / 1000.0 if abs(v) >= 1000 else v / 10.0 if abs(v) > 150 else v
        if 0.0 < c < 150.0:
            temps.append(c)
    return temps
