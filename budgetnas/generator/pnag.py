"""PNAG training: the LSTM generator conditioned on interpolated budget embeddings, REINFORCE
with an entropy bonus, rewarded by Eq. 6's Pareto-dominance order.

Each step draws ``rows`` budgets stratified over the whole latency range (a continuous budget per
row, so budgets between the K anchors are trained, not only interpolated), samples ``batch``
archs for each and scores them (``budgetnas.generator.rewards``). What we changed from the paper, each
measured in ``bench/results/nb201_frontier*.md``:

- the default reward (``pareto``) orders samples by Eq. 6 directly with the exact latency oracle
  and the accuracy the methods share (records, else the predictor), instead of a second learned
  model of that order; the paper's Algorithm 1 (an evaluator pre-trained on the M records, then
  frozen) stays as ``reward="evaluator"``;
- the advantage is the sample's value less its row's mean, divided by a scale fixed per budget
  for the run (``reference_scale``), so the entropy weight is a temperature in units of each
  budget's spread of values (a running std over all budgets shrank as the policy sharpened until
  the entropy term no longer counted: the policy collapsed onto one arch);
- the entropy weight is adapted per budget stratum, as SAC adapts its temperature: it rises
  while that stratum's samples have less than ``target_entropy`` nats, so no budget's samples
  collapse onto a few archs, even where few archs are near its optimum;
- the shipped policy gets a last fine-tuning (``polish_iterations``, after every query is spent)
  in which the over-budget penalty is a Lagrange multiplier per budget stratum, raised by dual
  ascent while fewer than ``polish_target`` of that stratum's samples fit and lowered while more
  do: the best arch for a budget sits just under it, and a fixed penalty left up to ~10% of the
  samples just over the lowest budgets (its neighbours one token away, which fit a slightly larger
  one). Not while queries are left (``feasible_target`` 0): validation draws its queries from the
  policy's samples, and a multiplier throughout made them so cautious that PNAG's final regret
  rose from 0.66 to 0.92 at 100 queries (45 runs; edgegpu up to 4.3);
- every distinct sample goes into an :class:`~budgetnas.generator.archive.Archive` (the predictor runs once
  per distinct arch); a self-imitation term raises the probability of the archive's best fitting
  arch for each row's budget, ``scouts`` samples per row drawn at a higher temperature keep
  finding archs the sharpening policy no longer samples, and the archive's per-budget bests ship
  in the bundle as candidates.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from budgetnas.core.errors import InvalidArgumentError
from budgetnas.generator.accuracy import Problem
from budgetnas.generator.archive import Archive
from budgetnas.generator.features import token_features, uniform_tokens
from budgetnas.generator.nets import Evaluator, LSTMGenerator
from budgetnas.generator.rewards import Reward, get_reward, pareto_labels, pareto_value
from budgetnas.luts.token_cost import canonical_tokens


@dataclass
class TrainConfig:
    iterations: int = 600
    budgets: int = 10  # K anchors of the budget embedding
    rows: int = 20  # budgets per step, stratified over the range
    batch: int = 16  # archs per budget per step
    lr: float = 3e-3
    entropy: float = 0.2  # the entropy bonus's starting weight: a temperature in units of each budget's value scale
    target_entropy: float = 4.2  # nats (~ln 64) each budget's samples keep at least: its weight rises until they do
    feasible_target: float = 0.0  # share of each budget's samples that fit: its penalty rises until it does (0: off)
    polish_target: float = 0.999  # the same for the last fine-tuning, after every query is spent (see generator.search)
    polish_iterations: int = 200  # that fine-tuning's length
    condition_samples: bool = True  # then calibrate the shipped sampler's conditioning budget (generator.bundle)
    imitation: float = 0.1  # weight of self-imitation of the archive's best fitting arch
    scouts: int = 8  # archs per budget per step drawn at ``scout_temperature``, for the archive only
    scout_temperature: float = 2.0
    reward: str = "pareto"
    seed: int = 0
    fixed_budgets: list[float] | None = None  # train for these budgets only (repeated independent search)
    threads: int = 0  # torch threads; 0 leaves torch's default
    evaluator_steps: int = 400  # reward "evaluator": pre-training steps on the records (Algorithm 1)
    evaluator_lr: float = 1e-3
    margin: float = 0.1  # hinge margin of the evaluator's pairwise loss


@dataclass
class Trained:
    generator: LSTMGenerator
    evaluator: Evaluator | None
    config: TrainConfig
    budgets: list[float]  # the K anchors
    lat_range: tuple[float, float]
    seconds: float
    archive: Archive
    calls: int = 0  # archs scored by the shared accuracy (predictor calls)
    steps: int = 0  # iterations trained in all
    log_beta: np.ndarray = field(default_factory=lambda: np.zeros(0))  # entropy weight per budget stratum
    log_lambda: np.ndarray = field(default_factory=lambda: np.zeros(0))  # over-budget penalty multiplier per stratum
    history: list[dict[str, float]] = field(default_factory=list)

    def meta(self) -> dict[str, Any]:
        return {"config": asdict(self.config), "budgets": self.budgets, "lat_range": list(self.lat_range),
                "train_seconds": self.seconds, "predictor_calls": self.calls, "archive": len(self.archive),
                "iterations": self.steps}


REFERENCE = 2048  # uniform archs that set each budget's reward scale
LOG_LAMBDA_MAX = float(np.log(100.0))  # the penalty multiplier stays in [1, 100]: unlucky rows cannot blow it up


def reference_scale(problem: Problem, reward: Reward, evaluator: Evaluator | None, anchors: np.ndarray,
                    rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Per anchor budget: (floor, scale) = (min, std) of the reward's value over uniform archs that
    fit it (at least the 8 cheapest, counted as fitting). Advantages are divided by the scale of their budget, fixed
    for a run: a scale taken from the current samples shrinks as the policy sharpens, which
    re-amplifies small differences until the entropy bonus no longer counts and the policy
    collapses. With a fixed scale, the entropy weight is a temperature in units of each budget's
    spread of values."""
    space = problem.space
    ref = np.concatenate([uniform_tokens(space, REFERENCE, rng), problem.accuracy.records()[0]])
    lat = problem.latency(ref)
    lat = np.where(np.isnan(lat), np.inf, lat)
    acc = problem.score(ref)
    order = np.argsort(lat, kind="stable")
    floor, scale = np.zeros(len(anchors)), np.ones(len(anchors))
    for i, b in enumerate(anchors):
        pick = order[:max(8, int(np.sum(lat <= b)))]
        bb = np.full(len(pick), max(float(b), float(lat[pick].max())))  # all of them count as fitting
        v = _values(reward, problem, evaluator, ref[pick], lat[pick], acc[pick], bb, acc[pick], np.ones(len(pick)))
        floor[i], scale[i] = float(np.min(v)), float(np.std(v)) or 1.0
    return floor, scale


def pretrain_evaluator(problem: Problem, cfg: TrainConfig, k: int, lo: float, hi: float,
                       rng: np.random.Generator) -> Evaluator:
    """Algorithm 1's first stage: the evaluator learns Eq. 6's order on the records read (their
    true accuracy), for budgets drawn over the range; then it is frozen."""
    tok, val = problem.accuracy.records()
    lat = problem.latency(tok)
    lat = np.where(np.isnan(lat), np.inf, lat)
    feats = torch.as_tensor(token_features(problem.space, tok))
    ev = Evaluator(problem.space.feature_dim, k, lo, hi)
    opt = torch.optim.Adam(ev.parameters(), lr=cfg.evaluator_lr)
    m = min(len(tok), 128)
    for _ in range(cfg.evaluator_steps):
        idx = rng.choice(len(tok), size=m, replace=False)
        losses = []
        for b in rng.uniform(lo, hi, 4):
            lab = torch.as_tensor(pareto_labels(val[idx], lat[idx], float(b)), dtype=torch.float32)
            score = ev(feats[idx], torch.full((m,), float(b)))
            mask = lab > 0
            if mask.any():
                losses.append(torch.relu(cfg.margin - (score[:, None] - score[None, :])[mask]).mean())
        if losses:
            loss = torch.stack(losses).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
    ev.eval()
    for p in ev.parameters():
        p.requires_grad_(False)
    return ev


def _values(reward: Reward, problem: Problem, evaluator: Evaluator | None, tok: np.ndarray, lat: np.ndarray,
            acc: np.ndarray, budget: np.ndarray, floor: np.ndarray, scale: np.ndarray,
            multiplier: np.ndarray | float = 1.0) -> np.ndarray:
    if reward.evaluator:
        assert evaluator is not None
        with torch.no_grad():
            return evaluator(torch.as_tensor(token_features(problem.space, tok)),
                             torch.as_tensor(budget, dtype=torch.float32)).numpy().astype(np.float64)
    if reward.direct is not None:
        return reward.direct(acc, np.where(np.isinf(lat), 10 * budget, lat), budget)
    return pareto_value(acc, lat, budget, floor, scale, reward.accuracy_condition, multiplier=multiplier)


def train(problem: Problem, cfg: TrainConfig, init: Trained | None = None) -> Trained:
    """Train a generator (or, with ``init``, go on training it: after new records were read, its
    archive is rescored and the generator fine-tuned for ``cfg.iterations`` more steps)."""
    if cfg.iterations < 1 or cfg.budgets < 1 or cfg.rows < 1 or cfg.batch < 2:
        raise InvalidArgumentError("iterations, budgets and rows must be >= 1 and batch >= 2")
    reward = get_reward(cfg.reward)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    t0 = time.perf_counter()
    calls0 = problem.calls
    rng = np.random.default_rng(cfg.seed + (0 if init is None else 7919 * (len(init.history) + 1)))
    torch.manual_seed(cfg.seed)
    gen_t = torch.Generator().manual_seed(int(rng.integers(2**31)))
    space, latency = problem.space, problem.latency
    sizes = [len(d.choices) for d in space.decisions]

    lo, hi = problem.lat_range
    if cfg.fixed_budgets:
        fixed = np.sort(np.asarray(cfg.fixed_budgets, np.float64))
        k = len(fixed)
        anchors = fixed
        e_lo, e_hi = (float(fixed.min()), float(fixed.max())) if k > 1 else (lo, hi)
    else:
        k = cfg.budgets
        anchors = np.linspace(lo, hi, k) if k > 1 else np.asarray([(lo + hi) / 2])
        e_lo, e_hi = lo, hi

    if init is None:
        generator = LSTMGenerator(sizes, k, e_lo, e_hi)
        archive = Archive(len(sizes))
        evaluator = pretrain_evaluator(problem, cfg, k, e_lo, e_hi, rng) if reward.evaluator else None
        history: list[dict[str, float]] = []
    else:
        generator, archive, evaluator, history = init.generator, init.archive, init.evaluator, list(init.history)
        archive.rescore(problem.score)
    opt = torch.optim.Adam(generator.parameters(), lr=cfg.lr)
    ref_floor, ref_scale = reference_scale(problem, reward, evaluator, anchors, rng)

    rows = len(anchors) if cfg.fixed_budgets else cfg.rows
    batch = cfg.batch * cfg.rows // rows  # the same samples per step either way
    done = init.steps if init else 0
    log_beta = np.full(rows, np.log(cfg.entropy)) if init is None else init.log_beta.copy()
    log_lam = np.zeros(rows) if init is None or len(init.log_lambda) != rows else init.log_lambda.copy()
    for it in range(cfg.iterations):
        # one budget per stratum of the range, uniform within it
        step_b = anchors if cfg.fixed_budgets else lo + (np.arange(rows) + rng.random(rows)) / rows * (hi - lo)
        budget_np = np.repeat(step_b, batch)
        b_all = torch.as_tensor(budget_np, dtype=torch.float32)
        tok, logp, ent = generator.sample(b_all, gen_t)
        tok_np = canonical_tokens(space, tok.numpy())
        lat = latency(tok_np)
        lat = np.where(np.isnan(lat), np.inf, lat)  # unknown latency never counts as fitting
        acc = archive.scored(tok_np, lat, problem.score)
        if cfg.scouts:  # wider draws: they find archs the sharpening policy no longer samples
            with torch.no_grad():
                drawn = generator.sample(torch.as_tensor(np.repeat(step_b, cfg.scouts), dtype=torch.float32), gen_t,
                                         cfg.scout_temperature)[0]
            s_tok = canonical_tokens(space, drawn.numpy())
            s_lat = latency(s_tok)
            archive.scored(s_tok, np.where(np.isnan(s_lat), np.inf, s_lat), problem.score)
        scale = np.repeat(np.interp(step_b, anchors, ref_scale), batch)
        fit_acc = np.where(lat <= budget_np, acc, np.inf).reshape(rows, batch).min(1)
        floor = np.repeat(np.minimum(np.interp(step_b, anchors, ref_floor), fit_acc), batch)
        fits = (lat <= budget_np).reshape(rows, batch)
        if cfg.feasible_target and not cfg.fixed_budgets:  # dual ascent: row i is stratum i
            log_lam = np.clip(log_lam + (cfg.feasible_target - fits.mean(1)), 0.0, LOG_LAMBDA_MAX)
        multiplier = np.repeat(np.exp(log_lam), batch)
        values = _values(reward, problem, evaluator, tok_np, lat, acc, budget_np, floor, scale,
                         multiplier).reshape(rows, -1)
        adv = ((values - values.mean(1, keepdims=True)).ravel() / scale)
        if cfg.target_entropy and not cfg.fixed_budgets:  # row i is stratum i: below target, raise its weight
            row_ent = ent.detach().numpy().reshape(rows, batch).mean(1)
            log_beta = np.clip(log_beta + 0.05 * (cfg.target_entropy - row_ent) / cfg.target_entropy,
                               np.log(cfg.entropy), np.log(cfg.entropy) + 3.0)
        beta = torch.as_tensor(np.repeat(np.exp(log_beta), batch), dtype=torch.float32)
        loss = -(torch.as_tensor(adv, dtype=torch.float32) * logp).mean() - (beta * ent).mean()
        if cfg.imitation and reward.direct is None and not reward.evaluator:
            best = archive.best(step_b)
            ok = best >= 0
            if ok.any():
                elite = torch.as_tensor(archive.tokens[best[ok]])
                elite_logp = generator.log_prob(torch.as_tensor(step_b[ok], dtype=torch.float32), elite)
                loss = loss - cfg.imitation * elite_logp.mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if it % 10 == 0 or it == cfg.iterations - 1:
            history.append({"iteration": done + it, "feasible": float(np.mean(lat <= budget_np)),
                            "accuracy": float(np.mean(acc[lat <= budget_np])) if (lat <= budget_np).any() else
                            float("nan"), "entropy": float(ent.detach().mean())})
    seconds = time.perf_counter() - t0 + (init.seconds if init else 0.0)
    calls = problem.calls - calls0 + (init.calls if init else 0)
    return Trained(generator, evaluator, cfg, [float(b) for b in anchors], (lo, hi), seconds, archive, calls,
                   done + cfg.iterations, log_beta, log_lam, history)


def candidates(trained: Trained, grid: int = 64, per_budget: int = 4) -> np.ndarray:
    """Archive indices shipped as candidates: the ``per_budget`` best at ``grid`` budgets evenly
    over the range, and the archive's Pareto front."""
    lo, hi = trained.lat_range
    arc = trained.archive
    idx = np.concatenate([arc.top(np.linspace(lo, hi, grid), per_budget), arc.front()])
    _, first = np.unique(idx, return_index=True)
    return idx[np.sort(first)]
