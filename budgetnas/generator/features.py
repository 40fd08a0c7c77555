"""Architecture features from token matrices (``token_features`` lives in budgetnas.luts.token_cost, numpy
only, for the torch-free server) and the soft version used by the differentiable (SGNAS) baseline:
the same encoding computed from per-decision probability vectors, so a predictor trained on
one-hots accepts relaxed archs.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from budgetnas.luts.token_cost import token_features
from budgetnas.spaces import SearchSpace

__all__ = ["soft_features", "token_features", "uniform_tokens"]


def soft_features(space: SearchSpace[Any], probs: list[Any]) -> Any:
    """Torch: per-decision probability tensors (batch, choices) -> relaxed features (batch, dim)."""
    import torch

    if space.name == "nb201":
        return torch.cat(probs, dim=1)
    if space.name == "ofa-mbv3":
        from budgetnas.spaces.ofa_mbv3 import DEPTHS, MAX_DEPTH, N_UNITS

        step, parts = 1 + 2 * MAX_DEPTH, []
        for u in range(N_UNITS):
            p_depth = probs[u * step]
            for li in range(MAX_DEPTH):
                active = p_depth[:, [i for i, d in enumerate(DEPTHS) if li < d]].sum(dim=1, keepdim=True)
                parts += [probs[u * step + 1 + 2 * li] * active, probs[u * step + 2 + 2 * li] * active]
        if getattr(space, "resolutions", None) is not None:  # a searched resolution: its one-hot, last
            parts.append(probs[-1])
        return torch.cat(parts, dim=1)
    raise NotImplementedError(f"no relaxed features for space {space.name}")


def uniform_tokens(space: SearchSpace[Any], n: int, rng: np.random.Generator) -> np.ndarray:
    sizes = [len(d.choices) for d in space.decisions]
    return np.stack([rng.integers(s, size=n) for s in sizes], axis=1).astype(np.int64)
