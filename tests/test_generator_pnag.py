"""PNAG: Eq. 6's grounded value, the archive, and what training must achieve on a small problem."""

from __future__ import annotations

from itertools import pairwise

import numpy as np
import pytest
import torch

from budgetnas.generator.accuracy import EXPLORE_SHARE, prepare
from budgetnas.generator.archive import Archive
from budgetnas.generator.pnag import LOG_LAMBDA_MAX, TrainConfig, candidates, train
from budgetnas.generator.rewards import pareto_value
from budgetnas.generator.search import SearchOptions, run_method
from budgetnas.spaces import get_space
from tests.test_generator_accuracy import COST, GAIN, Synthetic, oracle

SP = get_space("nb201")


def test_pareto_value_orders_like_eq6() -> None:
    acc = np.array([90.0, 50.0, 99.0, 99.0, 70.0])
    lat = np.array([5.0, 9.0, 11.0, 30.0, np.inf])
    b = np.full(5, 10.0)
    v = pareto_value(acc, lat, b, floor=np.full(5, 40.0), scale=np.full(5, 2.0))
    assert v[0] > v[1]  # both fit: higher accuracy wins
    assert min(v[:2]) > max(v[2:])  # every over-budget arch below every fitting one, whatever its accuracy
    assert v[2] > v[3] > v[4]  # among those, lower latency wins; unknown latency last
    tied = pareto_value(acc, lat, b, np.full(5, 40.0), np.full(5, 2.0), accuracy_condition=False)
    assert tied[0] == tied[1] and tied[2] < tied[1]
    # the trainer's Lagrange multiplier scales only the over-budget penalty, per sample
    m = np.array([1.0, 1.0, 2.0, 3.0, 1.0])
    scaled = pareto_value(acc, lat, b, np.full(5, 40.0), np.full(5, 2.0), multiplier=m)
    np.testing.assert_allclose(scaled[:2], v[:2])
    np.testing.assert_allclose(40.0 - scaled[2:], m[2:] * (40.0 - v[2:]))


def test_archive_scores_each_arch_once_and_answers_budgets() -> None:
    arc = Archive(2)
    calls: list[int] = []

    def score(t: np.ndarray) -> np.ndarray:
        calls.append(len(t))
        return t.sum(1).astype(float)

    tok = np.array([[0, 1], [2, 2], [0, 1], [3, 0]])
    lat = np.array([1.0, 4.0, 1.0, 2.0])
    np.testing.assert_allclose(arc.scored(tok, lat, score), [1, 4, 1, 3])
    np.testing.assert_allclose(arc.scored(tok[:2], lat[:2], score), [1, 4])
    assert calls == [3] and len(arc) == 3  # the duplicate and the second call cost nothing
    assert list(arc.best(np.array([0.5, 1.0, 3.0, 10.0]))) == [-1, 0, 2, 1]
    assert [tuple(arc.tokens[i]) for i in arc.front()] == [(0, 1), (3, 0), (2, 2)]
    assert [tuple(arc.tokens[i]) for i in arc.top(np.array([3.0]), 2)] == [(3, 0), (0, 1)]
    arc.rescore(lambda t: -t.sum(1).astype(float))
    assert [tuple(arc.tokens[i]) for i in arc.front()] == [(0, 1)]


@pytest.fixture(scope="module")
def problem():  # type: ignore[no-untyped-def]
    return prepare(SP, oracle(), Synthetic(), max_queries=60, seed=0, epochs=40)


def test_generator_reaches_the_exhaustive_best_of_the_shared_score_with_diverse_samples(problem) -> None:  # type: ignore[no-untyped-def]
    trained = train(problem, TrainConfig(iterations=300, seed=0))
    every = np.stack(np.meshgrid(*[np.arange(5)] * 6, indexing="ij"), -1).reshape(-1, 6)
    score, lat = problem.score(every), problem.latency(every)
    arc = trained.archive
    lo, hi = problem.lat_range
    for b in np.linspace(lo + 0.2 * (hi - lo), hi, 5):
        i = arc.best(np.array([b]))[0]
        assert arc.latency[i] <= b and arc.score[i] == pytest.approx(score[lat <= b].max(), abs=1e-6)
        with torch.no_grad():
            tok = trained.generator.sample(torch.full((256,), float(b)))[0].numpy()
        fits = problem.latency(tok) <= b
        assert fits.mean() >= 0.9
        assert len(np.unique(tok[fits], axis=0)) >= 20  # no collapse onto a few archs
    # the shipped candidates hold the archive's front
    assert set(candidates(trained)) >= set(arc.front())
    assert trained.calls <= len(arc) + 2048 + problem.accuracy.used  # one predictor call per distinct arch


def test_the_over_budget_penalty_rises_until_the_low_budgets_samples_fit(problem) -> None:  # type: ignore[no-untyped-def]
    """Dual ascent per budget stratum: where a fixed penalty leaves samples just over the budget,
    the multiplier rises (within its bound), and at least as many samples fit as with it fixed."""
    lo, hi = problem.lat_range
    budgets = lo + np.array([0.05, 0.1, 0.2]) * (hi - lo)
    share = {}
    for target in (0.0, 0.995):
        t = train(problem, TrainConfig(iterations=200, seed=1, feasible_target=target))
        assert t.log_lambda.shape == (t.config.rows,) and ((t.log_lambda >= 0) & (t.log_lambda <= LOG_LAMBDA_MAX)).all()
        with torch.no_grad():
            tok = t.generator.sample(torch.as_tensor(np.repeat(budgets, 512), dtype=torch.float32),
                                     torch.Generator().manual_seed(0))[0].numpy()
        share[target] = float(np.mean(problem.latency(tok) <= np.repeat(budgets, 512)))
        if not target:
            assert (t.log_lambda == 0).all()  # fixed
    assert share[0.995] >= 0.98 and share[0.995] >= share[0.0] - 0.005


def test_answers_rise_with_the_budget_and_fit(problem) -> None:  # type: ignore[no-untyped-def]
    res = run_method("pnag", problem, [], SearchOptions(train=TrainConfig(iterations=60), finetune=20))
    assert res.bundle is not None and res.problem is not None and res.trained is not None
    # the shipped policy had a last fine-tuning at the stricter target, after the ten rounds
    assert res.trained.config.feasible_target == TrainConfig().polish_target
    assert res.trained.steps >= 60 + TrainConfig().polish_iterations
    explored = round(60 * EXPLORE_SHARE)
    assert explored < res.queries <= 60 and problem.accuracy.used == explored  # the fork spent its own; the shared one is intact
    budgets = np.linspace(res.bundle.cheapest + 0.5, res.bundle.dearest, 8)
    outs = [res.bundle.generate(float(b), seed=0) for b in budgets]
    assert all(o["latency_ms"] <= b for o, b in zip(outs, budgets, strict=True))
    acc = [o["accuracy"] for o in outs]
    assert all(y >= x for x, y in pairwise(acc))


def test_only_the_grounded_rewards_get_the_last_fine_tuning(problem) -> None:  # type: ignore[no-untyped-def]
    """MnasNet's reward has no over-budget penalty to raise: its generator ships as trained."""
    res = run_method("mnas", problem, [], SearchOptions(train=TrainConfig(iterations=20), finetune=5, rounds=2))
    assert res.trained is not None
    assert res.trained.config.feasible_target == 0.0 and res.trained.steps <= 20 + 2 * 5


def test_validation_reads_the_best_candidates_and_learns_the_predictors_optimism(problem) -> None:  # type: ignore[no-untyped-def]
    from budgetnas.generator.accuracy import validate

    p = problem.fork()
    every = np.stack(np.meshgrid(*[np.arange(5)] * 6, indexing="ij"), -1).reshape(-1, 6)
    used = p.accuracy.used
    n = validate(p, every, np.array([4.0, 8.0, 19.0]), 6)
    assert 0 < n <= 6 and p.accuracy.used == used + n and len(p.residuals) == n
    tok, val = p.accuracy.records()
    np.testing.assert_allclose(val, 80.0 + GAIN[tok].sum(1))
    assert p.bias >= 0.0
    lat = 1.0 + COST[tok].sum(1)
    assert (lat <= 19.0).all()


def test_archive_best_is_the_best_within_budget_as_archs_arrive_and_are_rescored() -> None:
    """The staircase kept as archs arrive answers what a scan of the whole archive would: the
    best-scored entry within the budget, ties to the dearer (then the later) entry."""
    rng = np.random.default_rng(3)
    for _ in range(30):
        arc = Archive(3)
        weights = rng.integers(-2, 3, size=3).astype(float)
        for step in range(6):
            tok = rng.integers(0, 4, size=(int(rng.integers(1, 40)), 3))
            lat = (tok.sum(1) + rng.integers(0, 2, len(tok))) / 2.0
            arc.scored(tok, lat, lambda t, w=weights: (t * w).sum(1) % 4)  # many ties
            if step == 3:
                weights = rng.integers(-2, 3, size=3).astype(float)
                arc.rescore(lambda t, w=weights: (t * w).sum(1) % 4)
            budgets = rng.uniform(-1.0, 8.0, 25)
            n = len(arc)
            for b, got in zip(budgets, arc.best(budgets), strict=True):
                fits = np.flatnonzero(arc.latency <= b)
                if not len(fits):
                    assert got == -1
                    continue
                want = max(fits, key=lambda i: (arc.score[i], arc.latency[i], i))
                assert got == want and got < n
