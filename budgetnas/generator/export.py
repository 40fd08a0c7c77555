"""Torch generator + problem -> the plain (meta, arrays) of a numpy generation bundle."""

from __future__ import annotations

from typing import Any

import numpy as np

from budgetnas.generator.accuracy import Problem
from budgetnas.generator.features import uniform_tokens
from budgetnas.generator.latency import CostModelOracle, LatencyOracle, TableOracle
from budgetnas.generator.nets import LSTMGenerator
from budgetnas.generator.pnag import Trained, candidates


def cheapest_tokens(oracle: LatencyOracle, seed: int = 0) -> np.ndarray:
    """The cheapest arch: exact for a LUT (per-term argmin, gates off) and a measured table,
    the cheapest of a large uniform sample for an MLP."""
    space = oracle.space
    if isinstance(oracle, TableOracle):
        return oracle.table.tokens[int(np.argmin(oracle.table.values))].copy()
    if isinstance(oracle, CostModelOracle):
        return oracle.model.cheapest_tokens(len(space.decisions))
    pool = uniform_tokens(space, 50000, np.random.default_rng(seed))
    return pool[int(np.nanargmin(oracle(pool)))]


def generator_arrays(gen: LSTMGenerator) -> dict[str, np.ndarray]:
    def arr(t: Any) -> np.ndarray:
        return np.asarray(t.detach().numpy(), np.float32)  # float32: what torch computed, and fast

    out = {"gen_anchors": arr(gen.budget.anchors), "gen_start": arr(gen.start),
           "gen_wih": arr(gen.cell.weight_ih), "gen_whh": arr(gen.cell.weight_hh),
           "gen_b": arr(gen.cell.bias_ih) + arr(gen.cell.bias_hh)}
    for t, (emb, head) in enumerate(zip(gen.embeds, gen.heads, strict=True)):
        out[f"gen_emb{t}"] = arr(emb.weight)
        out[f"gen_head_w{t}"], out[f"gen_head_b{t}"] = arr(head.weight), arr(head.bias)
    return out


def bundle_parts(problem: Problem, trained: Trained,
                 method: str = "pnag") -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    lat_meta, arrays = problem.latency.export()
    arrays.update(generator_arrays(trained.generator))
    layers, means, stds = problem.predictor.export()
    for i, (w, b) in enumerate(layers):
        arrays[f"acc_w{i}"], arrays[f"acc_b{i}"] = w.astype(np.float32), b.astype(np.float32)
    tok, val = problem.accuracy.records()
    arrays["known_tokens"], arrays["known_acc"] = tok.astype(np.int64), val.astype(np.float64)
    arrays["cand_tokens"] = trained.archive.tokens[candidates(trained)].astype(np.int64)
    cheap = cheapest_tokens(problem.latency)
    arrays["cheapest_tokens"] = cheap
    cheapest = float(problem.latency(cheap[None])[0])
    gen = trained.generator
    rep = problem.report
    meta = {
        "method": method,
        "space": problem.space.describe(),
        "latency": lat_meta,
        "accuracy": {"layers": len(layers), "members": len(means), "means": means, "stds": stds,
                     "penalty": problem.predictor.penalty,
                     "queries": problem.accuracy.used, "max_queries": problem.accuracy.max_queries,
                     "kendall_tau": rep.kendall_tau, "rmse": rep.rmse, "n_test": rep.n_test,
                     "bias": problem.bias},
        "budget_range": [cheapest, float(problem.lat_range[1])],
        "embedding_range": [gen.budget.lo, gen.budget.hi],
        "train": trained.meta(),
    }
    return meta, arrays
