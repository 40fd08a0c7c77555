"""Every method behind one registry: PNAG and the baselines, on the same ``Problem`` (latency
oracle, query-limited accuracy records, accuracy predictor), each answering a list of budgets.

Generator methods answer through the numpy bundle (``spaces.generation``, numpy only), the
same code the CLI's ``generate`` and the server use.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from budgetnas.errors import UnknownNameError
from generator.accuracy import Problem, constrained_sample
from generator.export import bundle_parts, cheapest_tokens
from generator.features import uniform_tokens
from generator.pnag import TrainConfig, Trained, train
from generator.sgnas import train_sgnas
from spaces.generation import GeneratorBundle, pack_bundle


@dataclass
class Answer:
    tokens: np.ndarray
    latency_ms: float
    accuracy: float  # as the method saw it (record or prediction)
    warning: str | None = None


@dataclass
class SearchOptions:
    train: TrainConfig = field(default_factory=TrainConfig)
    random_samples: int = 1000  # archs scored per budget by random search
    evo_population: int = 100  # Once-for-All's evolution settings ...
    evo_parents: float = 0.25
    evo_mutate_prob: float = 0.1
    evo_mutation_ratio: float = 0.5
    evo_generations: int = 500  # ... OFA runs 500 generations
    use_records: bool = True  # the archs whose record was read compete in every final choice


@dataclass
class MethodResult:
    method: str
    answers: list[Answer]
    train_seconds: float
    answer_seconds: list[float]
    bundle: GeneratorBundle | None = None
    bare: list[Answer] | None = None  # answers with only the method's own candidates (no records)


def best_feasible(problem: Problem, cand: np.ndarray, budget: float, use_records: bool = True) -> Answer | None:
    """The best-scored candidate that fits; with ``use_records`` the archs whose accuracy record was
    read are candidates too (the same final choice as the generator bundle's)."""
    if use_records and problem.known:
        cand = np.concatenate([cand, problem.accuracy.records()[0]])
    lat = problem.latency(cand)
    ok = lat <= budget
    if not ok.any():
        return None
    acc = problem.score(cand[ok])
    j = int(np.argmax(acc))
    return Answer(cand[ok][j], float(lat[ok][j]), float(acc[j]))


def fallback(problem: Problem, budget: float) -> Answer:
    t = cheapest_tokens(problem.latency)
    return Answer(t, float(problem.latency(t[None])[0]), float(problem.score(t[None])[0]),
                  "no fitting architecture found; answered with the cheapest")


def make_bundle(problem: Problem, trained: Trained, method: str) -> GeneratorBundle:
    return GeneratorBundle.from_bytes(pack_bundle(*bundle_parts(problem, trained, method)))


def _bundle_answers(name: str, problem: Problem, budgets: list[float], trained: Trained, seed: int,
                    use_records: bool = True) -> MethodResult:
    bundle = make_bundle(problem, trained, name)
    answers, times = [], []
    for b in budgets:
        t0 = time.perf_counter()
        out = bundle.generate(b, seed=seed, use_records=use_records)
        times.append(time.perf_counter() - t0)
        tok = np.asarray(problem.space.to_tokens(problem.space.parse(out["arch"])), np.int64)
        answers.append(Answer(tok, out["latency_ms"], out["accuracy"], out.get("warning")))
    return MethodResult(name, answers, trained.seconds, times, bundle)


def _generator_method(reward: str) -> Callable[[Problem, list[float], SearchOptions], MethodResult]:
    def run(problem: Problem, budgets: list[float], opts: SearchOptions) -> MethodResult:
        trained = train(problem, replace(opts.train, reward=reward))
        return _bundle_answers(reward if reward != "pareto" else "pnag", problem, budgets, trained, opts.train.seed,
                               opts.use_records)
    return run


def independent(problem: Problem, budgets: list[float], opts: SearchOptions) -> MethodResult:
    """Repeated independent search: one PNAG generator per budget, each with the full iterations."""
    answers, bare, times, total = [], [], [], 0.0
    for b in budgets:
        trained = train(problem, replace(opts.train, fixed_budgets=[b]))
        res = _bundle_answers("independent", problem, [b], trained, opts.train.seed, opts.use_records)
        answers += res.answers
        bare += _bundle_answers("independent", problem, [b], trained, opts.train.seed, False).answers
        times += res.answer_seconds
        total += trained.seconds
    return MethodResult("independent", answers, total, times, bare=bare)


def random_search(problem: Problem, budgets: list[float], opts: SearchOptions) -> MethodResult:
    rng = np.random.default_rng(opts.train.seed)
    answers, times = [], []
    for b in budgets:
        t0 = time.perf_counter()
        ans = best_feasible(problem, uniform_tokens(problem.space, opts.random_samples, rng), b, opts.use_records)
        answers.append(ans or fallback(problem, b))
        times.append(time.perf_counter() - t0)
    return MethodResult("random", answers, 0.0, times)


def evolution(problem: Problem, budgets: list[float], opts: SearchOptions) -> MethodResult:
    """Once-for-All's evolutionary search under a latency constraint, seeded by the constrained
    sampler; fitness is the accuracy as the methods see it; children over budget are redrawn."""
    rng = np.random.default_rng(opts.train.seed)
    sizes = np.asarray([len(d.choices) for d in problem.space.decisions])
    pop_n = opts.evo_population
    n_par = max(2, int(pop_n * opts.evo_parents))
    n_mut = round(pop_n * opts.evo_mutation_ratio)
    answers, times = [], []

    def children(make: Callable[[int], np.ndarray], n: int, b: float) -> np.ndarray:
        out = np.zeros((0, len(sizes)), np.int64)
        for _ in range(20):  # redraw children over budget, as OFA does
            c = make(n)
            c = c[problem.latency(c) <= b]
            out = np.concatenate([out, c])[:n]
            if len(out) == n:
                break
        return out

    for b in budgets:
        t0 = time.perf_counter()
        lo = problem.lat_range[0]
        pop = constrained_sample(problem.space, problem.latency, rng.uniform(lo, b, pop_n), rng, pool=4000)
        pop = pop[problem.latency(pop) <= b]
        if not len(pop):
            answers.append(fallback(problem, b))
            times.append(time.perf_counter() - t0)
            continue
        for _ in range(opts.evo_generations):
            fit = problem.score(pop)
            parents = pop[np.argsort(-fit)[:n_par]]

            def mutate(n: int, parents: np.ndarray = parents) -> np.ndarray:
                p = parents[rng.integers(len(parents), size=n)]
                flip = rng.random(p.shape) < opts.evo_mutate_prob
                return np.where(flip, rng.integers(0, sizes, size=p.shape), p)

            def cross(n: int, parents: np.ndarray = parents) -> np.ndarray:
                a = parents[rng.integers(len(parents), size=n)]
                c = parents[rng.integers(len(parents), size=n)]
                return np.where(rng.random(a.shape) < 0.5, a, c)

            pop = np.concatenate([parents, children(mutate, n_mut, b), children(cross, pop_n - n_par - n_mut, b)])
        ans = best_feasible(problem, pop, b, opts.use_records)
        answers.append(ans or fallback(problem, b))
        times.append(time.perf_counter() - t0)
    return MethodResult("evolution", answers, 0.0, times)


def sgnas(problem: Problem, budgets: list[float], opts: SearchOptions) -> MethodResult:
    model = train_sgnas(problem, opts.train.iterations, k=opts.train.budgets, seed=opts.train.seed)
    gen = torch.Generator().manual_seed(opts.train.seed)
    answers, times = [], []
    for b in budgets:
        t0 = time.perf_counter()
        ans = best_feasible(problem, model.candidates(b, 256, gen), b, opts.use_records)
        if ans is None:
            ans = best_feasible(problem, uniform_tokens(problem.space, 4096, np.random.default_rng(0)), b,
                                opts.use_records)
        answers.append(ans or fallback(problem, b))
        times.append(time.perf_counter() - t0)
    return MethodResult("sgnas", answers, model.seconds, times)


METHODS: dict[str, Callable[[Problem, list[float], SearchOptions], MethodResult]] = {
    "pnag": _generator_method("pareto"),
    "pareto-noacc": _generator_method("pareto-noacc"),
    "mnas": _generator_method("mnas"),
    "tunas": _generator_method("tunas"),
    "independent": independent,
    "random": random_search,
    "evolution": evolution,
    "sgnas": sgnas,
}


def run_method(name: str, problem: Problem, budgets: list[float], opts: SearchOptions) -> MethodResult:
    try:
        fn = METHODS[name]
    except KeyError:
        raise UnknownNameError("search method", name, sorted(METHODS)) from None
    return fn(problem, budgets, opts)
