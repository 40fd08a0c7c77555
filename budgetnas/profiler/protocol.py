"""The measurement protocol: warm up, interleave rounds across entries, subtract overhead, summarise.

    from budgetnas.profiler.protocol import Protocol, measure, measure_many
    runner = get_runner("ort-cpu", threads=1)
    stats = measure(runner, "expanded_conv-input:...", Protocol.quick())      # -> budgetnas.luts.lut.LatencyStats
    result = measure_many(runner, keys_or_targets, Protocol())               # -> Measurement
    result.stats[key], result.overhead, result.noisy, result.protocol

For each entry: ``warmup_runs`` calls *and* ``warmup_seconds`` of calls are discarded. Then
``rounds`` rounds; each round visits every entry (plus the trivial overhead graph) in a fresh
random order and takes its share of the budget: at least ``min_runs / rounds`` calls and
``min_seconds / rounds`` seconds, capped at ``max_runs / rounds`` calls or ``max_seconds / rounds``
seconds. Interleaving spreads slow drift of a shared machine over all entries instead of biasing
whichever was measured during a busy spell. ``round_warmup`` calls are discarded at each visit
(cache state changed since the last one). When more entries than ``max_live`` are measured, each
visit loads the entry afresh (and warms it up again) so memory stays bounded.

The per-call overhead of the runtime is the median latency of the trivial graph, measured in the
same rounds; it is subtracted from every sample (floored at 0) and stored as ``overhead_ms``, so a
sum of block latencies does not count one call overhead per block. Entries whose cv exceeds
``cv_threshold`` (and whose std exceeds ``min_noise_ms``: near-zero blocks have a meaningless cv)
are re-measured up to ``remeasure`` times, the lowest-cv attempt kept; still noisy -> ``noisy``.

Interference (``budgetnas.profiler.reference``): around every visit of an entry the fixed reference workload
is timed (``reference_runs`` calls, half before the visit and half after, each half after
``reference_warmup`` untimed calls); the median of those is the visit's reference time. A visit whose
reference ran more than ``disturbed_ratio`` times the session's median reference was *disturbed* (another
process, a frequency drop): an entry's statistics use its undisturbed visits only, when at least half of its
visits are; otherwise it is re-measured with the noisy ones, and if that does not help it is kept with
``disturbed`` set. Every entry records ``reference_ms``, the median reference time of the visits it kept, so entries
measured in different sessions (a LUT, the whole models that validate it, an agent's job) can be
compared and the sessions' drift divided out. ``reference_runs=0`` turns it off.

Samples above ``median + outlier_iqr * IQR`` are dropped before the statistics (``None`` keeps
all): on a shared machine they are preemptions of the process, not the block's latency, and a
handful of them otherwise sets std and cv of a sub-millisecond block. Only the upper tail is cut
(nothing makes a call faster than it is); the median, which predictions sum, barely moves.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
from torch import nn
from tqdm import tqdm

from budgetnas.core.errors import InvalidArgumentError
from budgetnas.luts.lut import LatencyStats
from budgetnas.profiler.reference import REFERENCE_NAME
from budgetnas.profiler.runners.base import OVERHEAD_NAME, Prepared, Runner
from budgetnas.profiler.targets import Target, as_target


@dataclass(frozen=True)
class Protocol:
    warmup_runs: int = 10
    warmup_seconds: float = 0.2
    min_runs: int = 50
    min_seconds: float = 1.0
    max_runs: int = 2000
    max_seconds: float = 10.0
    rounds: int = 5
    round_warmup: int = 2
    cv_threshold: float = 0.1
    outlier_iqr: float | None = 5.0
    min_noise_ms: float = 0.002
    remeasure: int = 2
    subtract_overhead: bool = True
    max_live: int = 128
    keep_samples: bool = True
    reference_runs: int = 6
    # untimed calls before each half: the entry just run evicts the reference from the caches, so its first call
    # is slow (+17% after an r128 model, +3% after a block); timed cold, a session of whole models read its
    # reference 2.6% slower than a session of blocks at r128 (bench/reference_bias.py), a drift that is not there
    reference_warmup: int = 2
    disturbed_ratio: float = 1.2  # a priori: a fifth slower than usual is more than a quiet machine drifts
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("min_runs", "max_runs", "rounds", "max_live"):
            if getattr(self, name) < 1:
                raise InvalidArgumentError(f"protocol {name} must be >= 1")
        if self.reference_runs < 0:
            raise InvalidArgumentError("protocol reference_runs must be >= 0 (0: no reference workload)")
        if self.reference_warmup < 0:
            raise InvalidArgumentError("protocol reference_warmup must be >= 0")
        if not self.disturbed_ratio > 1.0:
            raise InvalidArgumentError("protocol disturbed_ratio must be > 1")
        if self.max_runs < self.min_runs or self.max_seconds < self.min_seconds:
            raise InvalidArgumentError("protocol caps (max_runs, max_seconds) must be >= the minimums")

    @classmethod
    def quick(cls, **kw: Any) -> Protocol:
        """A short protocol for tests and smoke runs (numbers are rougher)."""
        base: dict[str, Any] = dict(warmup_runs=3, warmup_seconds=0.01, min_runs=10, min_seconds=0.05,
                                    max_runs=200, max_seconds=1.0, rounds=2, round_warmup=1, remeasure=1)
        return cls(**{**base, **kw})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Measurement:
    stats: dict[str, LatencyStats]
    overhead: LatencyStats
    protocol: Protocol
    wall_seconds: float
    remeasured: list[str] = field(default_factory=list)
    reference_ms: float | None = None  # the session's median reference time (None: not taken)
    disturbed_visits: int = 0  # visits whose reference ran over ``disturbed_ratio`` x the session's

    @property
    def noisy(self) -> list[str]:
        return sorted(k for k, s in self.stats.items() if s.noisy)

    @property
    def disturbed(self) -> list[str]:
        return sorted(k for k, s in self.stats.items() if s.disturbed)

    def record(self) -> dict[str, Any]:
        """How the numbers were taken, for a LUT's ``meta.protocol``."""
        out = {**self.protocol.to_dict(), "overhead": self.overhead.to_dict(samples=False),
               "wall_seconds": round(self.wall_seconds, 2), "remeasured": len(self.remeasured),
               "noisy": len(self.noisy), "disturbed": len(self.disturbed), "disturbed_visits": self.disturbed_visits}
        if self.reference_ms is not None:
            out["reference_ms"] = self.reference_ms
        return out


class _Entry:
    """One thing being measured: its samples so far and, while live, its loaded runtime."""

    def __init__(self, target: Target) -> None:
        self.target = target
        self.prepared: Prepared | None = None
        self.samples: list[np.ndarray] = []
        self.refs: list[float] = []  # per visit: the reference workload's median around it
        self.seconds = 0.0

    @property
    def runs(self) -> int:
        return sum(len(s) for s in self.samples)


def _warm(runner: Runner, p: Prepared, runs: int, seconds: float, cap: int) -> None:
    t0, n = time.perf_counter(), 0
    while n < cap and (n < runs or time.perf_counter() - t0 < seconds):
        p.call()
        n += 1


def _take(runner: Runner, p: Prepared, runs: int, seconds: float, max_runs: int, max_seconds: float) -> np.ndarray:
    """At least ``runs`` calls and ``seconds`` of timed calls, at most ``max_runs`` / ``max_seconds``."""
    got: list[np.ndarray] = []
    n, spent = 0, 0.0
    batch = 1  # one call first: its duration sizes the next batch, so a slow entry cannot overshoot the cap
    while True:
        t = runner.time(p, batch)
        got.append(t)
        n += len(t)
        spent += float(t.sum()) / 1e3
        if (n >= runs and spent >= seconds) or n >= max_runs or spent >= max_seconds:
            break
        per_call = max(spent / n, 1e-7)
        need = max(runs - n, math.ceil((seconds - spent) / per_call))
        batch = max(1, min(need, max_runs - n, math.ceil((max_seconds - spent) / per_call)))
    return np.concatenate(got)


def _rounds(runner: Runner, entries: list[_Entry], overhead: _Entry, reference: _Entry, proto: Protocol,
            rng: np.random.Generator, tick: Callable[[], None], prep_tick: Callable[[], None]) -> None:
    r = proto.rounds
    before = (proto.reference_runs + 1) // 2
    if proto.reference_runs and reference.prepared is None:
        reference.prepared = runner.prepare_reference()
        _warm(runner, reference.prepared, proto.warmup_runs, proto.warmup_seconds, proto.max_runs)

    def ref_times(n: int) -> np.ndarray:
        assert reference.prepared is not None
        k = proto.reference_warmup  # one batch, its first k calls discarded (warm-up)
        return runner.time(reference.prepared, k + n)[k:] if n else np.zeros(0)

    live = len(entries) <= proto.max_live
    runs, max_runs = math.ceil(proto.min_runs / r), max(1, proto.max_runs // r)
    seconds, max_seconds = proto.min_seconds / r, proto.max_seconds / r
    if overhead.prepared is None:
        overhead.prepared = runner.prepare_overhead()
        _warm(runner, overhead.prepared, proto.warmup_runs, proto.warmup_seconds, proto.max_runs)
    for e in entries:
        if e.prepared is None and live:
            e.prepared = runner.load(e.target)
            _warm(runner, e.prepared, proto.warmup_runs, proto.warmup_seconds, proto.max_runs)
            prep_tick()
    for _ in range(r):
        order = [overhead, *entries]
        for i in rng.permutation(len(order)):
            e = order[int(i)]
            if e.prepared is None:  # not live: load afresh for this visit, full warm-up
                p = runner.load(e.target)
                _warm(runner, p, proto.warmup_runs, proto.warmup_seconds, proto.max_runs)
            else:
                p = e.prepared
                _warm(runner, p, proto.round_warmup, 0.0, proto.round_warmup)
            visit_ref = e is not overhead and proto.reference_runs > 0
            ref = ref_times(before) if visit_ref else None
            t = _take(runner, p, runs, seconds, max_runs, max_seconds)
            if ref is not None:
                e.refs.append(float(np.median(np.concatenate([ref, ref_times(proto.reference_runs - before)]))))
            e.samples.append(t)
            e.seconds += float(t.sum()) / 1e3
            if e is not overhead:
                tick()
    if not live:
        for e in entries:
            e.prepared = None


def trim_upper(x: np.ndarray, k: float | None) -> np.ndarray:
    """Drop samples above median + k * IQR (preemptions); keeps everything when k is None."""
    if k is None or x.size < 8:
        return x
    q1, med, q3 = np.percentile(x, [25, 50, 75])
    return x[x <= med + k * max(q3 - q1, 1e-9)]


def _visits(e: _Entry, session_ref: float | None, proto: Protocol) -> tuple[list[int], bool]:
    """The visits whose samples count, and whether the entry stays disturbed (see the module doc)."""
    every = list(range(len(e.samples)))
    if session_ref is None or len(e.refs) != len(e.samples):
        return every, False
    quiet = [i for i in every if e.refs[i] <= proto.disturbed_ratio * session_ref]
    return (quiet, False) if 2 * len(quiet) >= len(every) else (every, True)


def _stats(e: _Entry, overhead_ms: float, proto: Protocol, session_ref: float | None = None) -> LatencyStats:
    keep, disturbed = _visits(e, session_ref, proto)
    x = np.maximum(trim_upper(np.concatenate([e.samples[i] for i in keep]), proto.outlier_iqr) - overhead_ms, 0.0)
    ref = float(np.median([e.refs[i] for i in keep])) if session_ref is not None and e.refs else None
    s = LatencyStats.from_samples(x, keep_samples=proto.keep_samples, warmup_runs=proto.warmup_runs,
                                  seconds=round(e.seconds, 4), overhead_ms=overhead_ms, reference_ms=ref,
                                  disturbed=disturbed)
    noisy = (s.cv or 0.0) > proto.cv_threshold and s.std_ms > proto.min_noise_ms
    return replace(s, noisy=noisy)


def _session_reference(entries: list[_Entry]) -> float | None:
    refs = [r for e in entries for r in e.refs]
    return float(np.median(refs)) if refs else None


def _worse(new: LatencyStats, old: LatencyStats) -> bool:
    """Whether a re-measurement is no better: undisturbed beats disturbed, then the lower cv wins."""
    return (new.disturbed, new.cv or 0.0) >= (old.disturbed, old.cv or 0.0)


def measure_many(runner: Runner, targets: Sequence[Target | str], protocol: Protocol | None = None,
                 progress: bool = True, desc: str = "measuring") -> Measurement:
    """Measure every target (block key strings or Targets) with interleaved rounds on ``runner``."""
    proto = protocol or Protocol()
    t_start = time.perf_counter()
    seen: dict[str, _Entry] = {}
    for t in targets:
        tg = as_target(t, runner.batch)
        seen.setdefault(tg.name, _Entry(tg))
    entries = list(seen.values())
    overhead = _Entry(Target(OVERHEAD_NAME, {}, (), nn.Identity))  # loaded via runner.prepare_overhead()
    reference = _Entry(Target(REFERENCE_NAME, {}, (), nn.Identity))  # loaded via runner.prepare_reference()
    rng = np.random.default_rng(proto.seed)
    total = len(entries) * proto.rounds
    live = len(entries) <= proto.max_live
    with tqdm(total=len(entries) if live else 0, desc=f"{desc}: loading", unit="entry", leave=False,
              disable=not progress or not live) as prep, \
            tqdm(total=total, desc=desc, unit="visit", disable=not progress or not entries, leave=False) as bar:
        _rounds(runner, entries, overhead, reference, proto, rng, lambda: bar.update(1), lambda: prep.update(1))
    oh_samples = trim_upper(np.concatenate(overhead.samples), proto.outlier_iqr)
    overhead_ms = float(np.median(oh_samples)) if proto.subtract_overhead else 0.0
    oh_stats = LatencyStats.from_samples(oh_samples, keep_samples=False, warmup_runs=proto.warmup_runs,
                                         seconds=round(overhead.seconds, 4))
    session_ref = _session_reference(entries)  # the first pass's: re-measurements are judged against it
    disturbed_visits = sum(r > proto.disturbed_ratio * session_ref for e in entries for r in e.refs) \
        if session_ref is not None else 0
    stats = {e.target.name: _stats(e, overhead_ms, proto, session_ref) for e in entries}
    remeasured: list[str] = []
    for _ in range(proto.remeasure):
        again = [e for e in entries if stats[e.target.name].noisy or stats[e.target.name].disturbed]
        if not again:
            break
        remeasured += [e.target.name for e in again]
        for e in again:
            e.samples, e.refs, e.seconds = [], [], 0.0
        with tqdm(total=len(again) * proto.rounds, desc=f"{desc} (re-measuring noisy or disturbed)", unit="visit",
                  disable=not progress, leave=False) as bar:
            _rounds(runner, again, overhead, reference, proto, rng, lambda: bar.update(1), lambda: None)
        for e in again:
            new = _stats(e, overhead_ms, proto, session_ref)
            if not _worse(new, stats[e.target.name]):
                stats[e.target.name] = new
    return Measurement(stats, oh_stats, proto, time.perf_counter() - t_start, sorted(set(remeasured)),
                       session_ref, disturbed_visits)


def measure(runner: Runner, target: Target | str, protocol: Protocol | None = None) -> LatencyStats:
    """One block key or Target, with the full protocol (overhead measured alongside)."""
    m = measure_many(runner, [target], protocol, progress=False)
    return next(iter(m.stats.values()))
