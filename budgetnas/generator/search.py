"""Every method behind one registry and one protocol, on the same ``Problem`` (latency oracle,
query-limited accuracy records, accuracy predictor), each answering a list of budgets.

The protocol (:func:`run_method`), the same for every method:

1. the method works on its own fork of the shared problem: the records read in exploration,
   the predictor fitted on them, and the rest of the query budget;
2. it proposes candidates; the answers it would give from them alone, scored by the shared
   accuracy, are its *own-candidate* answers (no records compete);
3. ``rounds`` times: it spends an equal slice of the remaining queries on its best candidates
   (:func:`budgetnas.generator.accuracy.validate`), the predictor is refitted, and it proposes again;
4. the *final* answer for each budget is the best-scored fitting arch among its candidates and
   every record read (a record's value is its measured accuracy): one final-pick rule for all.

Generator methods answer through the numpy bundle (``budgetnas.generator.bundle``, numpy only), the
same code the CLI's ``generate`` and the server use. Validation spends queries at the budgets
asked, as every method does; a generator trained with no budget named (``budgetnas train``)
spends them along the whole latency range, since any budget may be asked later
(``validate_range`` forces that in the benchmark's ablation). ``naive`` is the user without a
method: it reads ``max_queries`` random archs and keeps the best that fits.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch

from budgetnas.core.errors import UnknownNameError
from budgetnas.generator.accuracy import CountingAccuracy, Problem, constrained_sample, incumbent_neighbours, validate
from budgetnas.generator.bundle import GeneratorBundle, pack_bundle
from budgetnas.generator.export import bundle_parts, cheapest_tokens
from budgetnas.generator.features import uniform_tokens
from budgetnas.generator.pnag import TrainConfig, Trained, train
from budgetnas.generator.rewards import get_reward
from budgetnas.generator.sgnas import SGNAS, train_sgnas
from budgetnas.luts.token_cost import canonical_tokens


@dataclass
class Answer:
    tokens: np.ndarray
    latency_ms: float
    accuracy: float  # as the method saw it (record or prediction)
    warning: str | None = None


@dataclass
class SearchOptions:
    train: TrainConfig = field(default_factory=TrainConfig)
    finetune: int | None = None  # generator iterations after each validation round (None: see finetune())
    rounds: int = 10  # validation rounds over the queries left after exploration
    validate_range: bool = False  # generators validate along the whole range even when budgets are asked
    random_samples: int = 1000  # archs scored per budget by random search
    evo_population: int = 100  # Once-for-All's evolution settings ...
    evo_parents: float = 0.25
    evo_mutate_prob: float = 0.1
    evo_mutation_ratio: float = 0.5
    evo_generations: int = 500  # ... OFA runs 500 generations


@dataclass
class MethodResult:
    method: str
    answers: list[Answer]  # the final answers
    train_seconds: float
    answer_seconds: list[float]
    own: list[Answer]  # from the method's first candidates only, scored by the shared accuracy
    calls: int = 0  # predictor calls, training included
    queries: int = 0  # accuracy records read in all
    bundle: GeneratorBundle | None = None
    trained: Trained | None = None  # generator methods: the final generator
    problem: Problem | None = None  # the method's fork: its records and final predictor


def finetune(opts: SearchOptions) -> int:
    """Iterations after each round: the first training's again, spread over the rounds (a third at most)."""
    return opts.finetune if opts.finetune is not None else max(1, opts.train.iterations // max(3, opts.rounds))


def best_feasible(problem: Problem, cand: np.ndarray, budget: float, use_records: bool = True) -> Answer | None:
    """The final-pick rule: the best-scored candidate that fits; with ``use_records`` every arch
    whose accuracy record was read is a candidate too (the same rule as the generator bundle's)."""
    if use_records and problem.known:
        cand = np.concatenate([cand.reshape(-1, len(problem.space.decisions)), problem.accuracy.records()[0]])
    if not len(cand):
        return None
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


class Method:
    """One search method: ``propose`` candidates for the budgets (again after each validation
    round, given its previous state), and say where validation should spend queries."""

    name = "method"

    def propose(self, problem: Problem, budgets: list[float], opts: SearchOptions,
                state: Any) -> tuple[list[np.ndarray], Any]:
        raise NotImplementedError

    def validation_budgets(self, problem: Problem, budgets: list[float], n: int, opts: SearchOptions) -> np.ndarray:
        return np.asarray(budgets, np.float64)

    def validation_pool(self, problem: Problem, cands: list[np.ndarray], state: Any, budgets: np.ndarray,
                        n: int) -> np.ndarray:
        """The candidates validation may spend ``n`` queries on at ``budgets``: all the method found."""
        return np.concatenate(cands) if cands else np.zeros((0, len(problem.space.decisions)), np.int64)

    def finish(self, problem: Problem, budgets: list[float], opts: SearchOptions, state: Any) -> Any:
        """The state to answer from once every query is spent (by default, the last one)."""
        return state

    def answer(self, problem: Problem, budgets: list[float], cands: list[np.ndarray], state: Any,
               use_records: bool, seed: int) -> tuple[list[Answer], list[float]]:
        answers, times = [], []
        for b, c in zip(budgets, cands, strict=True):
            t0 = time.perf_counter()
            answers.append(best_feasible(problem, c, b, use_records) or fallback(problem, b))
            times.append(time.perf_counter() - t0)
        return answers, times


class Generator(Method):
    """PNAG (and its reward variants): one generator for every budget, answered by its bundle."""

    def __init__(self, name: str, reward: str, samples: int = 5000) -> None:
        self.name, self.reward, self.samples = name, reward, samples  # samples: the validation pool's size

    def propose(self, problem: Problem, budgets: list[float], opts: SearchOptions,
                state: Any) -> tuple[list[np.ndarray], Any]:
        cfg = replace(opts.train, reward=self.reward)
        trained = train(problem, cfg) if state is None else train(problem, replace(cfg, iterations=finetune(opts)),
                                                                   init=state[0])
        # the bundle answers and validation reads the archive itself: no per-budget candidate lists
        none = np.zeros((0, len(problem.space.decisions)), np.int64)
        return [none] * len(budgets), (trained, make_bundle(problem, trained, self.name))

    def finish(self, problem: Problem, budgets: list[float], opts: SearchOptions, state: Any) -> Any:
        """A last fine-tuning at the stricter ``polish_target``: no validation draws from this policy.
        Only for Eq. 6's grounded rewards, the ones with an over-budget penalty to raise."""
        cfg, reward = opts.train, get_reward(self.reward)
        if (not cfg.polish_target or not cfg.polish_iterations or cfg.polish_target == cfg.feasible_target
                or reward.evaluator or reward.direct is not None):
            return state
        trained = train(problem, replace(cfg, reward=self.reward, iterations=cfg.polish_iterations,
                                         feasible_target=cfg.polish_target), init=state[0])
        bundle = make_bundle(problem, trained, self.name)
        # the shipped sampler conditioned so that its samples fit (bundle.GeneratorBundle.conditioned)
        return trained, bundle.conditioned(seed=cfg.seed) if cfg.condition_samples else bundle

    def validation_budgets(self, problem: Problem, budgets: list[float], n: int, opts: SearchOptions) -> np.ndarray:
        if budgets and not opts.validate_range:
            return np.asarray(budgets, np.float64)
        lo, hi = problem.lat_range
        return lo + (np.arange(n) + 0.5) / n * (hi - lo)  # no budget named: any may be asked

    def validation_pool(self, problem: Problem, cands: list[np.ndarray], state: Any, budgets: np.ndarray,
                        n: int) -> np.ndarray:
        """What the generator would answer: ``self.samples`` (or ``4 n``) fresh samples of its policy,
        spread over the validation budgets, and the neighbours of the best records for them
        (:func:`~budgetnas.generator.accuracy.incumbent_neighbours`). Not the archive's argmax: with
        few records that is the predictor's most over-rated corner, while the policy's samples spread
        the queries over what it rates well (at 100 queries on nb201 this took PNAG's final regret
        from 0.97 to 0.71 on 8 runs with the same seeds). The neighbours let the records steer too:
        the policy follows the predictor, which in Once-for-All's space rated the best archs ~1 point
        below their truth away from the records. There (Note10, resolution searched, seed 0, 16,000
        queries) PNAG's answers at 40/50/60 ms went from 0.33/0.44/0.46 points below Once-for-All's
        evolution on the truth to 0.15 above / 0.15 above / 0.05 below with the neighbours."""
        trained: Trained = state[0]
        per = max(1, max(self.samples, 4 * n) // max(1, len(budgets)))  # room for n picks when n is large
        seed = trained.config.seed * 7919 + problem.accuracy.used
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            b = torch.as_tensor(np.repeat(np.asarray(budgets, np.float64), per), dtype=torch.float32)
            samples = trained.generator.sample(b, gen)[0].numpy().astype(np.int64)
        return np.concatenate([samples, incumbent_neighbours(problem, budgets, n, np.random.default_rng(seed))])

    def answer(self, problem: Problem, budgets: list[float], cands: list[np.ndarray], state: Any,
               use_records: bool, seed: int) -> tuple[list[Answer], list[float]]:
        bundle: GeneratorBundle = state[1]
        answers, times = [], []
        for b in budgets:
            t0 = time.perf_counter()
            out = bundle.generate(b, seed=seed, use_records=use_records)
            times.append(time.perf_counter() - t0)
            tok = np.asarray(problem.space.to_tokens(problem.space.parse(out["arch"])), np.int64)
            answers.append(Answer(tok, out["latency_ms"], out["accuracy"], out.get("warning")))
        return answers, times


class Independent(Method):
    """Repeated independent search: one PNAG generator per budget, each with the full iterations."""

    name = "independent"

    def propose(self, problem: Problem, budgets: list[float], opts: SearchOptions,
                state: Any) -> tuple[list[np.ndarray], Any]:
        out, new = [], []
        for i, b in enumerate(budgets):
            cfg = replace(opts.train, fixed_budgets=[b])
            t = train(problem, cfg) if state is None else train(problem, replace(cfg, iterations=finetune(opts)),
                                                                 init=state[i])
            new.append(t)
            out.append(t.archive.tokens[t.archive.top(np.asarray([b]), 256)])
        return out, new


class RandomSearch(Method):
    name = "random"

    def propose(self, problem: Problem, budgets: list[float], opts: SearchOptions,
                state: Any) -> tuple[list[np.ndarray], Any]:
        rng = state if state is not None else np.random.default_rng(opts.train.seed)
        return [uniform_tokens(problem.space, opts.random_samples, rng) for _ in budgets], rng


class Evolution(Method):
    """Once-for-All's evolutionary search under a latency constraint, seeded by the constrained
    sampler; fitness is the accuracy as the methods see it; children over budget are redrawn."""

    name = "evolution"

    def propose(self, problem: Problem, budgets: list[float], opts: SearchOptions,
                state: Any) -> tuple[list[np.ndarray], Any]:
        rng = state if state is not None else np.random.default_rng(opts.train.seed)
        return [self.search_budget(problem, b, opts, rng) for b in budgets], rng

    @staticmethod
    def search_budget(problem: Problem, b: float, opts: SearchOptions, rng: np.random.Generator) -> np.ndarray:
        """Every arch the search visited within ``b`` (its final population among them)."""
        sizes = np.asarray([len(d.choices) for d in problem.space.decisions])
        pop_n = opts.evo_population
        n_par = max(2, int(pop_n * opts.evo_parents))
        n_mut = round(pop_n * opts.evo_mutation_ratio)

        def children(make: Callable[[int], np.ndarray], n: int) -> np.ndarray:
            out = np.zeros((0, len(sizes)), np.int64)
            for _ in range(20):  # redraw children over budget, as OFA does
                c = make(n)
                c = c[problem.latency(c) <= b]
                out = np.concatenate([out, c])[:n]
                if len(out) == n:
                    break
            return out

        lo = problem.lat_range[0]
        pop = constrained_sample(problem.space, problem.latency, rng.uniform(lo, b, pop_n), rng, pool=4000)
        pop = pop[problem.latency(pop) <= b]
        if not len(pop):
            return pop
        seen = [pop]
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

            pop = np.concatenate([parents, children(mutate, n_mut), children(cross, pop_n - n_par - n_mut)])
            seen.append(pop)
        return np.unique(canonical_tokens(problem.space, np.concatenate(seen)), axis=0)


class SGNASMethod(Method):
    """The differentiable baseline: trained once on the first predictor, resampled after each round."""

    name = "sgnas"

    def propose(self, problem: Problem, budgets: list[float], opts: SearchOptions,
                state: Any) -> tuple[list[np.ndarray], Any]:
        model: SGNAS = state if state is not None else train_sgnas(problem, opts.train.iterations,
                                                                   k=opts.train.budgets, seed=opts.train.seed)
        gen = torch.Generator().manual_seed(opts.train.seed)
        fallback_pool = uniform_tokens(problem.space, 4096, np.random.default_rng(opts.train.seed))
        return [np.concatenate([model.candidates(b, 256, gen), fallback_pool]) for b in budgets], model


METHODS: dict[str, Method] = {m.name: m for m in (
    Generator("pnag", "pareto"), Generator("pnag-paper", "evaluator"), Generator("pareto-noacc", "pareto-noacc"),
    Generator("mnas", "mnas"), Generator("tunas", "tunas"), Independent(), RandomSearch(), Evolution(),
    SGNASMethod())}
METHOD_NAMES = sorted([*METHODS, "naive"])
GENERATORS = sorted(n for n, m in METHODS.items() if isinstance(m, Generator))


def naive(problem: Problem, budgets: list[float], seed: int) -> MethodResult:
    """A user without a method: read ``max_queries`` random archs (of those the source lists), keep
    the best that fits. No exploration records, no predictor."""
    t0 = time.perf_counter()
    rng = np.random.default_rng(seed + 104729)
    counter = CountingAccuracy(problem.space, problem.accuracy.source, problem.accuracy.max_queries)
    listed = problem.accuracy.source.available()
    pool = listed if listed is not None else uniform_tokens(problem.space, 4 * counter.max_queries, rng)
    pool = np.unique(canonical_tokens(problem.space, pool), axis=0)
    counter.query(pool[rng.permutation(len(pool))[:counter.max_queries]])
    tok, val = counter.records()
    lat = problem.latency(tok)
    answers = []
    for b in budgets:
        ok = lat <= b
        if ok.any():
            j = int(np.flatnonzero(ok)[np.argmax(val[ok])])
            answers.append(Answer(tok[j], float(lat[j]), float(val[j])))
        else:
            answers.append(fallback(problem, b))
    seconds = time.perf_counter() - t0
    return MethodResult("naive", answers, seconds, [0.0] * len(budgets), answers, 0, counter.used)


def run_method(name: str, problem: Problem, budgets: list[float], opts: SearchOptions) -> MethodResult:
    """The protocol of the module docstring; ``problem`` itself is left as it was."""
    if name == "naive":
        return naive(problem, budgets, opts.train.seed)
    try:
        method = METHODS[name]
    except KeyError:
        raise UnknownNameError("search method", name, METHOD_NAMES) from None
    p = problem.fork()
    t0 = time.perf_counter()
    cands, state = method.propose(p, budgets, opts, None)
    seconds = time.perf_counter() - t0
    own, _ = method.answer(p, budgets, cands, state, False, opts.train.seed)
    for r in range(opts.rounds):
        n = p.accuracy.left // (opts.rounds - r)
        if n <= 0:
            break
        t0 = time.perf_counter()
        at = method.validation_budgets(p, budgets, n, opts)
        validate(p, method.validation_pool(p, cands, state, at, n), at, n)
        cands, state = method.propose(p, budgets, opts, state)
        seconds += time.perf_counter() - t0
    t0 = time.perf_counter()
    state = method.finish(p, budgets, opts, state)
    seconds += time.perf_counter() - t0
    answers, times = method.answer(p, budgets, cands, state, True, opts.train.seed)
    trained, bundle = state if isinstance(method, Generator) else (None, None)
    return MethodResult(name, answers, seconds, times, own, p.calls, p.accuracy.used, bundle, trained, p)
