"""Architecture features from token matrices (``token_features``: the space's own encoding, numpy
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
    """Torch: per-decision probability tensors (batch, choices) -> relaxed features (batch, dim):
    each featured decision's probabilities times the probability that its gate is on."""
    import torch

    parts: list[Any] = []
    p_on: list[Any] = []  # per decision: the probability that it is active (None: always)
    for i, d in enumerate(space.decisions):
        on = None
        if d.gate is not None:
            on = probs[d.gate.pos][:, d.gate.min:].sum(dim=1, keepdim=True)
            if p_on[d.gate.pos] is not None:
                on = on * p_on[d.gate.pos]
        p_on.append(on)
        if d.in_features:
            parts.append(probs[i] if on is None else probs[i] * on)
    return torch.cat(parts, dim=1)


def uniform_tokens(space: SearchSpace[Any], n: int, rng: np.random.Generator) -> np.ndarray:
    sizes = [len(d.choices) for d in space.decisions]
    return np.stack([rng.integers(s, size=n) for s in sizes], axis=1).astype(np.int64)
