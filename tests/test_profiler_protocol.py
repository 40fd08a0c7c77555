"""The measurement protocol: budgets, caps, interleaving, overhead subtraction, noisy entries."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from budgetnas.errors import InvalidArgumentError
from profiler.artifacts import ArtifactCache
from profiler.protocol import Protocol, measure_many, trim_upper
from profiler.runners import Prepared, get_runner
from profiler.runners.base import OVERHEAD_NAME
from profiler.runners.ort import OrtCpuRunner
from profiler.targets import Target

KEYS = ["nor_conv_1x1-input:16x16x16-output:16x16x16", "nor_conv_3x3-input:16x16x16-output:16x16x16",
        "avg_pool_3x3-input:16x16x16-output:16x16x16"]


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ArtifactCache]:
    yield ArtifactCache(tmp_path_factory.getbasetemp() / "bn-cache")


def test_real_measurement_with_overhead_subtracted(cache: ArtifactCache) -> None:
    runner = get_runner("ort-cpu", cache=cache, exporter="torchscript")
    proto = Protocol.quick()
    m = measure_many(runner, [*KEYS, KEYS[0]], proto, progress=False)  # duplicates are measured once
    assert sorted(m.stats) == sorted(KEYS)
    oh = m.overhead.median_ms
    assert oh is not None and oh > 0
    for s in m.stats.values():
        assert s.count >= proto.min_runs * 0.8  # upper-tail outliers may be dropped
        assert s.overhead_ms == oh and s.warmup_runs == proto.warmup_runs
        assert s.median_ms is not None and s.min_ms is not None and s.p99_ms is not None
        assert 0 <= s.min_ms <= s.median_ms <= s.p99_ms
        assert s.samples_ms is not None and len(s.samples_ms) == s.count
    rec = m.record()
    assert rec["overhead"]["median_ms"] == oh and rec["rounds"] == proto.rounds


class ScriptedRunner(OrtCpuRunner):
    """A real runner whose clock is scripted, to check the protocol's bookkeeping exactly."""

    def __init__(self, per_call_ms: dict[str, float], noisy: set[str] | None = None) -> None:
        super().__init__(threads=1)
        self.per_call, self.noisy = per_call_ms, noisy or set()
        self.visits: list[str] = []  # one name per timed batch
        self.calls: dict[str, int] = {}
        self.rng = np.random.default_rng(0)

    def load(self, target: Target) -> Prepared:
        return Prepared(target.name, lambda: None)

    def prepare_overhead(self) -> Prepared:
        return Prepared(OVERHEAD_NAME, lambda: None)

    def time(self, prepared: Prepared, n: int) -> np.ndarray:
        self.visits.append(prepared.name)
        self.calls[prepared.name] = self.calls.get(prepared.name, 0) + n
        base = self.per_call[prepared.name]
        if prepared.name in self.noisy:
            return base * self.rng.uniform(0.2, 3.0, n)
        return np.full(n, base)


def test_budget_cap_interleaving_and_overhead() -> None:
    runner = ScriptedRunner({OVERHEAD_NAME: 0.01, KEYS[0]: 1.0, KEYS[1]: 100.0})
    proto = Protocol(warmup_runs=0, warmup_seconds=0.0, min_runs=10, min_seconds=0.05, max_runs=1000,
                     max_seconds=2.0, rounds=4, round_warmup=0, remeasure=0)
    m = measure_many(runner, KEYS[:2], proto, progress=False)
    fast, slow = m.stats[KEYS[0]], m.stats[KEYS[1]]
    # 1 ms calls: the seconds minimum (50 ms) binds -> 50 calls; 100 ms calls: runs minimum (10) -> 1 s, under the cap
    assert fast.count == 52 and slow.count == 12  # ceil(10/4)=3 per round; fast: 13 calls/round to reach 12.5 ms
    assert fast.median_ms == pytest.approx(0.99) and slow.median_ms == pytest.approx(99.99)
    assert fast.overhead_ms == pytest.approx(0.01)
    # rounds interleave entries: each one's visits span the others' (not one entry after the other)
    v = runner.visits
    for a in (OVERHEAD_NAME, *KEYS[:2]):
        for b in (OVERHEAD_NAME, *KEYS[:2]):
            assert v.index(a) < len(v) - 1 - v[::-1].index(b)


def test_cap_stops_long_entries() -> None:
    runner = ScriptedRunner({OVERHEAD_NAME: 0.0, KEYS[0]: 500.0})
    proto = Protocol(warmup_runs=0, warmup_seconds=0.0, min_runs=10, min_seconds=0.1, max_runs=100,
                     max_seconds=1.0, rounds=1, round_warmup=0, remeasure=0, outlier_iqr=None)
    m = measure_many(runner, KEYS[:1], proto, progress=False)
    assert m.stats[KEYS[0]].count == 2  # 2 x 500 ms reaches the 1 s cap before 10 runs


def test_noisy_entries_are_remeasured_and_flagged() -> None:
    runner = ScriptedRunner({OVERHEAD_NAME: 0.0, KEYS[0]: 1.0, KEYS[1]: 1.0}, noisy={KEYS[1]})
    proto = Protocol(warmup_runs=0, warmup_seconds=0.0, min_runs=20, min_seconds=0.0, max_runs=100,
                     max_seconds=1.0, rounds=2, round_warmup=0, remeasure=2, cv_threshold=0.1)
    m = measure_many(runner, KEYS[:2], proto, progress=False)
    assert m.remeasured == [KEYS[1]] and m.noisy == [KEYS[1]]
    assert not m.stats[KEYS[0]].noisy and m.stats[KEYS[1]].cv is not None and m.stats[KEYS[1]].cv > 0.1
    assert runner.calls[KEYS[1]] >= 3 * runner.calls[KEYS[0]]  # first pass + 2 re-measurements


def test_more_entries_than_live_are_reloaded_per_visit() -> None:
    runner = ScriptedRunner({OVERHEAD_NAME: 0.0, **dict.fromkeys(KEYS, 1.0)})
    loads: list[str] = []
    orig = runner.load
    runner.load = lambda t: (loads.append(t.name), orig(t))[1]  # type: ignore[method-assign]
    proto = Protocol.quick(max_live=2, warmup_runs=0, warmup_seconds=0.0)
    measure_many(runner, KEYS, proto, progress=False)
    assert sorted(loads) == sorted(KEYS * proto.rounds)


def test_trim_upper_drops_only_preemptions() -> None:
    x = np.concatenate([np.linspace(1.0, 1.1, 100), [50.0]])
    kept = trim_upper(x, 5.0)
    assert kept.max() <= 1.1 and len(kept) == 100
    assert len(trim_upper(x, None)) == 101


@pytest.mark.parametrize("bad", [dict(rounds=0), dict(min_runs=0), dict(max_runs=5, min_runs=10),
                                 dict(max_seconds=0.1, min_seconds=1.0)])
def test_protocol_rejects_bad_settings(bad: dict[str, float]) -> None:
    with pytest.raises(InvalidArgumentError):
        Protocol(**bad)  # type: ignore[arg-type]
