"""The measurement protocol: budgets, caps, interleaving, overhead subtraction, noisy entries."""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np
import pytest

from budgetnas.core.errors import InvalidArgumentError
from budgetnas.profiler.artifacts import ArtifactCache
from budgetnas.profiler.protocol import Protocol, measure_many, trim_upper
from budgetnas.profiler.reference import REFERENCE_NAME
from budgetnas.profiler.runners import Prepared, get_runner
from budgetnas.profiler.runners.base import OVERHEAD_NAME
from budgetnas.profiler.runners.ort import OrtCpuRunner
from budgetnas.profiler.targets import Target

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
        # at least half the visits count (the others a busy machine disturbed are dropped), each of at least
        # min_runs / rounds calls; upper-tail outliers may be dropped
        assert s.count >= 0.8 * math.ceil(proto.min_runs / proto.rounds)
        assert s.overhead_ms == oh and s.warmup_runs == proto.warmup_runs
        assert s.median_ms is not None and s.min_ms is not None and s.p99_ms is not None
        assert 0 <= s.min_ms <= s.median_ms <= s.p99_ms
        assert s.samples_ms is not None and len(s.samples_ms) == s.count
    rec = m.record()
    assert rec["overhead"]["median_ms"] == oh and rec["rounds"] == proto.rounds
    # the real reference workload (two convolutions) was timed: slower than the trivial graph
    assert m.reference_ms is not None and m.reference_ms > oh and rec["reference_ms"] == m.reference_ms
    assert all(s.reference_ms is not None and s.reference_ms > 0 for s in m.stats.values())


class ScriptedRunner(OrtCpuRunner):
    """A real runner whose clock is scripted, to check the protocol's bookkeeping exactly."""

    def __init__(self, per_call_ms: dict[str, float], noisy: set[str] | None = None,
                 busy: dict[str, int] | None = None, cold_reference: float = 1.0) -> None:
        super().__init__(threads=1)
        self.cold_reference = cold_reference  # the reference's first call after another entry: x this (caches)
        self.per_call, self.noisy = {REFERENCE_NAME: 0.3, **per_call_ms}, noisy or set()
        # busy[name]: that entry's first so many visits run on a busy machine (everything 2x slower, the
        # reference timed after the visit too; the one before it was still quiet)
        self.busy, self.busy_now, self.seen = busy or {}, False, dict[str, int]()
        self.visits: list[str] = []  # one name per timed batch
        self.calls: dict[str, int] = {}
        self.rng = np.random.default_rng(0)

    def load(self, target: Target) -> Prepared:
        return Prepared(target.name, lambda: None)

    def prepare_overhead(self) -> Prepared:
        return Prepared(OVERHEAD_NAME, lambda: None)

    def prepare_reference(self) -> Prepared:
        return Prepared(REFERENCE_NAME, lambda: None)

    def time(self, prepared: Prepared, n: int) -> np.ndarray:
        name = prepared.name
        if name != REFERENCE_NAME and (not self.visits or self.visits[-1] != name):  # a new visit
            self.seen[name] = self.seen.get(name, 0) + 1
            self.busy_now = self.seen[name] <= self.busy.get(name, 0)
        self.visits.append(name)
        self.calls[name] = self.calls.get(name, 0) + n
        base = self.per_call[name] * (2.0 if self.busy_now and name != OVERHEAD_NAME else 1.0)
        if name == REFERENCE_NAME and len(self.visits) > 1 and self.visits[-2] not in (REFERENCE_NAME, OVERHEAD_NAME):
            self.busy_now = False  # the reference timed after a visit ends its busy spell
        if name in self.noisy:
            return base * self.rng.uniform(0.2, 3.0, n)
        out = np.full(n, base)
        if name == REFERENCE_NAME and n and len(self.visits) > 1 and self.visits[-2] != REFERENCE_NAME:
            out[0] *= self.cold_reference
        return out


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
                                 dict(max_seconds=0.1, min_seconds=1.0), dict(reference_runs=-1),
                                 dict(reference_warmup=-1), dict(disturbed_ratio=1.0)])
def test_protocol_rejects_bad_settings(bad: dict[str, float]) -> None:
    with pytest.raises(InvalidArgumentError):
        Protocol(**bad)  # type: ignore[arg-type]


QUIET = dict(warmup_runs=0, warmup_seconds=0.0, min_runs=20, min_seconds=0.0, max_runs=100, max_seconds=1.0,
             rounds=4, round_warmup=0, cv_threshold=0.5)


def test_reference_is_timed_around_every_visit() -> None:
    runner = ScriptedRunner({OVERHEAD_NAME: 0.0, KEYS[0]: 1.0, KEYS[1]: 2.0})
    m = measure_many(runner, KEYS[:2], Protocol(**QUIET, remeasure=0), progress=False)  # type: ignore[arg-type]
    p = Protocol()
    assert runner.calls[REFERENCE_NAME] == 2 * 4 * (p.reference_runs + 2 * p.reference_warmup)  # 2 entries x 4 rounds
    assert m.reference_ms == pytest.approx(0.3) and m.disturbed_visits == 0 and m.disturbed == []
    for s in m.stats.values():
        assert s.reference_ms == pytest.approx(0.3) and not s.disturbed
    assert m.record()["reference_ms"] == pytest.approx(0.3) and m.record()["disturbed"] == 0
    off = measure_many(ScriptedRunner({OVERHEAD_NAME: 0.0, KEYS[0]: 1.0}), KEYS[:1],
                       Protocol(**QUIET, remeasure=0, reference_runs=0), progress=False)  # type: ignore[arg-type]
    assert off.reference_ms is None and off.stats[KEYS[0]].reference_ms is None
    assert "reference_ms" not in off.record()


def test_reference_is_timed_warm_whatever_ran_before_it() -> None:
    # the reference's first call after an entry runs 3x (the entry evicted it from the caches): timed cold, a
    # session's reference would depend on what it measured (whole models vs blocks), not on the machine
    def session_reference(warmup: int) -> float | None:
        runner = ScriptedRunner({OVERHEAD_NAME: 0.0, KEYS[0]: 1.0, KEYS[1]: 2.0}, cold_reference=3.0)
        proto = Protocol(**QUIET, remeasure=0, reference_runs=2, reference_warmup=warmup)  # type: ignore[arg-type]
        return measure_many(runner, KEYS[:2], proto, progress=False).reference_ms

    # one call per half: the half after the visit is the cold call (0.9), the half before follows the previous
    # visit's reference (0.3); a visit's reference is their median
    assert session_reference(0) == pytest.approx(0.6)
    assert session_reference(1) == pytest.approx(0.3)


def test_a_disturbed_visit_is_dropped_from_the_statistics() -> None:
    runner = ScriptedRunner({OVERHEAD_NAME: 0.0, KEYS[0]: 1.0, KEYS[1]: 1.0, KEYS[2]: 1.0}, busy={KEYS[1]: 1})
    m = measure_many(runner, KEYS, Protocol(**QUIET, remeasure=0), progress=False)  # type: ignore[arg-type]
    assert m.disturbed_visits == 1 and m.disturbed == []
    s = m.stats[KEYS[1]]
    assert s.median_ms == pytest.approx(1.0) and s.p99_ms == pytest.approx(1.0)
    assert s.count == 3 * 5  # 3 quiet visits of ceil(20 / 4) calls; the busy one (2 ms calls) is not counted


def test_an_entry_disturbed_throughout_is_remeasured_then_flagged() -> None:
    # busy in every visit of the first pass only: the re-measurement is quiet and replaces it
    runner = ScriptedRunner({OVERHEAD_NAME: 0.0, KEYS[0]: 1.0, KEYS[1]: 1.0, KEYS[2]: 1.0}, busy={KEYS[1]: 4})
    m = measure_many(runner, KEYS, Protocol(**QUIET, remeasure=1), progress=False)  # type: ignore[arg-type]
    assert m.remeasured == [KEYS[1]] and m.disturbed == []
    assert m.stats[KEYS[1]].median_ms == pytest.approx(1.0) and not m.stats[KEYS[1]].disturbed
    # busy in every visit, re-measurement included: kept, but flagged
    runner = ScriptedRunner({OVERHEAD_NAME: 0.0, KEYS[0]: 1.0, KEYS[1]: 1.0, KEYS[2]: 1.0}, busy={KEYS[1]: 99})
    m = measure_many(runner, KEYS, Protocol(**QUIET, remeasure=1), progress=False)  # type: ignore[arg-type]
    assert m.disturbed == [KEYS[1]] and m.stats[KEYS[1]].disturbed
    assert m.stats[KEYS[1]].median_ms == pytest.approx(2.0) and m.record()["disturbed"] == 1
    assert m.stats[KEYS[1]].to_dict()["disturbed"] is True and "disturbed" not in m.stats[KEYS[0]].to_dict()
