"""The query-limited accuracy source, Eq. 6 labels and query selection."""

from __future__ import annotations

import numpy as np
import pytest

from budgetnas.generator.accuracy import (
    AccuracySource,
    CountingAccuracy,
    QueryBudgetExceeded,
    constrained_sample,
    incumbent_neighbours,
    neighbours,
    prepare,
)
from budgetnas.generator.features import uniform_tokens
from budgetnas.generator.latency import CostModelOracle
from budgetnas.generator.rewards import REWARDS, get_reward, pareto_labels
from budgetnas.luts.token_cost import CostTerm, TokenCostModel
from budgetnas.spaces import get_space

SP = get_space("nb201")
COST = np.array([0.0, 0.2, 1.0, 3.0, 0.4])
GAIN = np.array([-5.0, 1.0, 2.0, 3.0, 0.5])


class Synthetic(AccuracySource):
    """Accuracy = 80 + Σ gain per op; records every lookup so tests can see what was read."""

    def __init__(self) -> None:
        self.looked_up = 0

    def lookup(self, tokens: np.ndarray) -> np.ndarray:
        self.looked_up += len(tokens)
        return 80.0 + GAIN[tokens].sum(1)


def oracle() -> CostModelOracle:
    return CostModelOracle(SP, TokenCostModel(1.0, [CostTerm((e,), COST.copy()) for e in range(6)]))


def test_counting_source_refuses_past_the_limit() -> None:
    src = Synthetic()
    acc = CountingAccuracy(SP, src, max_queries=5)
    tok = uniform_tokens(SP, 200, np.random.default_rng(0))
    tok = np.unique(tok, axis=0)
    acc.query(tok[:3])
    acc.query(tok[:3])  # re-reading is free
    assert acc.used == 3 and src.looked_up == 3
    with pytest.raises(QueryBudgetExceeded, match="exceed --max-queries 5"):
        acc.query(tok[:6])
    assert acc.used == 3 and src.looked_up == 3  # nothing read by the refused call
    np.testing.assert_allclose(acc.query(tok[3:5]), 80 + GAIN[tok[3:5]].sum(1))
    assert acc.left == 0


def test_prepare_reads_at_most_max_queries_and_fits_a_ranker() -> None:
    src = Synthetic()
    problem = prepare(SP, oracle(), src, max_queries=120, seed=0, epochs=40, explore_share=0.5)
    assert problem.accuracy.used == 60 and src.looked_up == 60  # half explores; the rest is the method's
    assert problem.accuracy.left == 60
    assert problem.report.n_test == 12 and problem.report.kendall_tau > 0.5
    lat = problem.latency(problem.accuracy.records()[0])
    lo, hi = problem.lat_range
    assert lat.min() < lo + 0.2 * (hi - lo) and lat.max() > lo + 0.8 * (hi - lo)  # spread over the range
    tok, val = problem.accuracy.records()
    np.testing.assert_allclose(problem.score(tok), val)  # records read are answered exactly


def test_constrained_sampler_lands_near_targets() -> None:
    o = oracle()
    targets = np.linspace(3, 15, 20)
    got = o(constrained_sample(SP, o, targets, np.random.default_rng(0), pool=5000))
    assert np.all(np.abs(got - targets) <= 0.02 * targets + 1e-9)


def test_constrained_sampler_reaches_targets_a_uniform_pool_misses() -> None:
    """The largest archs are rare in a uniform pool: 50 draws reach no target near the top of the
    range, so without ``reach`` those targets all get the pool's largest arch; walked, they land."""
    o = oracle()
    lo, hi = o.bounds()
    every = np.unique(o(np.stack(np.meshgrid(*[np.arange(5)] * 6, indexing="ij"), -1).reshape(-1, 6)))
    targets = every[every >= hi - 0.15 * (hi - lo)]  # latencies some arch has, near the top
    rng = np.random.default_rng(0)
    pool_lat = o(uniform_tokens(SP, 50, np.random.default_rng(0)))
    assert pool_lat.max() < targets[0] * 0.98  # the precondition: the pool falls short of every target
    plain = constrained_sample(SP, o, targets, np.random.default_rng(0), pool=50)
    assert len(np.unique(plain, axis=0)) == 1
    walked = constrained_sample(SP, o, targets, rng, pool=50, reach=True)
    got = o(walked)
    assert np.all(np.abs(got - targets) <= 0.02 * targets + 1e-9)
    assert len(np.unique(walked, axis=0)) > 1
    listed = uniform_tokens(SP, 50, np.random.default_rng(0))  # a listed source: only its archs may be answered
    from_list = constrained_sample(SP, o, targets, rng, candidates=listed, reach=True)
    assert {r.tobytes() for r in from_list} <= {r.tobytes() for r in listed}


def test_pareto_labels_follow_eq6() -> None:
    acc = np.array([90.0, 80.0, 95.0, 70.0, 90.0])
    lat = np.array([5.0, 4.0, 12.0, 11.0, 5.0])
    lab = pareto_labels(acc, lat, budget=10.0)
    assert lab[0, 1] == 1 and lab[1, 0] == -1  # both fit: higher accuracy wins
    assert lab[1, 2] == 1 and lab[2, 1] == -1  # one over budget: lower latency wins
    assert lab[3, 2] == 1  # both over: lower latency wins despite lower accuracy
    assert lab[0, 4] == 0 and lab[0, 0] == 0  # identical pairs omitted
    noacc = pareto_labels(acc, lat, budget=10.0, accuracy_condition=False)
    assert noacc[0, 1] == 0 and noacc[1, 2] == 1
    assert set(REWARDS) >= {"pareto", "pareto-noacc", "mnas", "tunas"}
    mnas = get_reward("mnas").direct
    assert mnas is not None
    r = mnas(np.array([90.0, 90.0]), np.array([5.0, 10.0]), np.array([10.0, 10.0]))
    assert r[0] > r[1]  # at equal accuracy MnasNet's reward prefers the faster arch


@pytest.mark.parametrize("space", [SP, get_space("ofa-mbv3", width=1.2, resolutions=(160, 192, 224))])
def test_neighbours_are_the_archs_one_or_two_decisions_away(space) -> None:  # type: ignore[no-untyped-def]
    rng = np.random.default_rng(0)
    rows = space.canonical_tokens(uniform_tokens(space, 3, rng))
    near = neighbours(space, rows, 200, rng)
    assert np.array_equal(near, np.unique(space.canonical_tokens(near), axis=0))  # canonical, unique

    def changed(t: np.ndarray) -> np.ndarray:  # every single-decision change of each row
        out = []
        for i, s in enumerate(len(d.choices) for d in space.decisions):
            for v in range(s):
                u = t.copy()
                u[:, i] = v
                out.append(u)
        return np.concatenate(out)

    one = {r.tobytes() for r in space.canonical_tokens(changed(rows))}
    two = one | {r.tobytes() for r in space.canonical_tokens(changed(changed(rows)))}
    held = {r.tobytes() for r in near}
    own = {r.tobytes() for r in rows}
    assert held <= two - own  # never a row itself, never more than two decisions from one
    assert one - own <= held  # every single-decision change is there


def test_incumbent_neighbours_surround_the_best_fitting_records() -> None:
    problem = prepare(SP, oracle(), Synthetic(), max_queries=60, seed=0, epochs=20)
    tok, val = problem.accuracy.records()
    lat = problem.latency(tok)
    b = float(np.median(lat))
    best = tok[lat <= b][np.argmax(val[lat <= b])]
    near = incumbent_neighbours(problem, np.array([b]), 10, np.random.default_rng(0), best=1)
    assert len(near) and ((near != best).sum(1) <= 2).all()
    assert ((near != best).sum(1) == 1).sum() >= 20  # nb201: 6 edges x 4 other ops, some equal when canonical
