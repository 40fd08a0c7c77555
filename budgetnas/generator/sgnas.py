"""SGNAS-style differentiable generator (a baseline): random prior z ⊕ budget embedding -> an MLP ->
logits per decision; Gumbel-softmax relaxed archs; expected latency from per-decision cost tables
(the LUT's own, or an additive fit of any other oracle); loss = -predicted accuracy + λ(cost - C)²."""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from budgetnas.generator.accuracy import Problem
from budgetnas.generator.features import soft_features, uniform_tokens
from budgetnas.generator.latency import CostModelOracle, LatencyOracle
from budgetnas.generator.nets import EMBED, BudgetEmbedding
from budgetnas.luts.token_cost import CostTerm, TokenCostModel, token_features

PRIOR = 32
PENALTY = 10.0  # λ on the relative squared cost gap


def additive_cost_fit(oracle: LatencyOracle, n: int = 20000, seed: int = 0) -> TokenCostModel:
    """Least-squares per-decision costs (one term per decision, no gates) for a non-LUT oracle."""
    space = oracle.space
    tok = uniform_tokens(space, n, np.random.default_rng(seed))
    lat = oracle(tok)
    ok = ~np.isnan(lat)
    tok, lat = tok[ok], lat[ok]
    sizes = [len(d.choices) for d in space.decisions]
    x = np.zeros((len(tok), sum(sizes)))
    off = np.cumsum([0, *sizes[:-1]])
    for i, o in enumerate(off):
        x[np.arange(len(tok)), o + tok[:, i]] = 1.0
    coef, *_ = np.linalg.lstsq(np.hstack([x, np.ones((len(tok), 1))]), lat, rcond=None)
    terms = [CostTerm((i,), coef[o:o + s].copy()) for i, (o, s) in enumerate(zip(off, sizes, strict=True))]
    return TokenCostModel(float(coef[-1]), terms)


def expected_cost(model: TokenCostModel, probs: list[torch.Tensor]) -> torch.Tensor:
    out = torch.full((probs[0].shape[0],), model.base, dtype=torch.float32)
    for t in model.terms:
        table = torch.as_tensor(t.table, dtype=torch.float32)
        if len(t.positions) == 1:
            v = probs[t.positions[0]] @ table
        else:
            v = torch.einsum(table, [*range(1, table.ndim + 1)], *(x for k, p in enumerate(t.positions) for x in (probs[p], [0, k + 1])), [0])  # noqa: E501
        if t.gate_pos >= 0:
            v = v * probs[t.gate_pos][:, t.gate_min:].sum(1)
        out = out + v
    return model.slope * out + model.intercept


class SGNASNet(nn.Module):
    def __init__(self, sizes: list[int], k: int, lo: float, hi: float) -> None:
        super().__init__()
        self.sizes = sizes
        self.budget = BudgetEmbedding(k, lo, hi)
        self.net = nn.Sequential(nn.Linear(PRIOR + EMBED, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(),
                                 nn.Linear(256, sum(sizes)))

    def forward(self, budgets: torch.Tensor, z: torch.Tensor) -> list[torch.Tensor]:
        return list(self.net(torch.cat([z, self.budget(budgets)], 1)).split(self.sizes, dim=1))


@dataclass
class SGNAS:
    net: SGNASNet
    seconds: float

    def candidates(self, budget: float, n: int, gen: torch.Generator) -> np.ndarray:
        with torch.no_grad():
            logits = self.net(torch.full((n,), float(budget)), torch.randn(n, PRIOR, generator=gen))
        return torch.stack([lg.argmax(1) for lg in logits], 1).numpy()


def train_sgnas(problem: Problem, iterations: int, k: int = 10, batch: int = 64, seed: int = 0,
                lr: float = 1e-3) -> SGNAS:
    t0 = time.perf_counter()
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    space = problem.space
    model = problem.latency.model if isinstance(problem.latency, CostModelOracle) else additive_cost_fit(
        problem.latency, seed=seed)
    lo, hi = problem.lat_range
    lo = max(lo, (hi - lo) * 0.02 + lo)  # the very cheapest archs are degenerate; aim above them
    net = SGNASNet([len(d.choices) for d in space.decisions], k, lo, hi)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    for p in problem.predictor.parameters():
        p.requires_grad_(False)
    for _ in range(iterations):
        budgets = torch.rand(batch, generator=gen) * (hi - lo) + lo
        logits = net(budgets, torch.randn(batch, PRIOR, generator=gen))
        probs = [nn.functional.gumbel_softmax(lg, tau=1.0, hard=False) for lg in logits]
        acc = problem.predictor.torch_forward(soft_features(space, probs)) / 100.0
        problem.calls += batch
        cost = expected_cost(model, probs)
        loss = (-acc + PENALTY * ((cost - budgets) / budgets) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    for p in problem.predictor.parameters():
        p.requires_grad_(True)
    return SGNAS(net, time.perf_counter() - t0)


def check_features(space: Any, tokens: np.ndarray) -> bool:
    """soft_features on exact one-hots equals the hard features (used by the tests)."""
    sizes = [len(d.choices) for d in space.decisions]
    probs = [nn.functional.one_hot(torch.as_tensor(tokens[:, i]), s).float() for i, s in enumerate(sizes)]
    return bool(np.allclose(soft_features(space, probs).numpy(), token_features(space, tokens)))
