"""Reward functions for the budget-conditioned generator (the paper's Table 2), a registry.

- ``pareto``: the learned evaluator R(β|B;w), trained with Eq. 6's Pareto-dominance labels;
- ``pareto-noacc``: the same evaluator, labels without the accuracy condition (pairs that both
  fit the budget are left out, so only "lower latency wins" is learned);
- ``mnas``: MnasNet's soft multi-objective reward ACC·(LAT/B)^w, w = -0.07;
- ``tunas``: TuNAS's absolute reward ACC + β·|LAT/B - 1|, β = -0.07 (accuracy as a fraction).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from budgetnas.errors import UnknownNameError

MNAS_W = -0.07
TUNAS_BETA = -0.07

Direct = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]  # (acc %, lat ms, budget ms) -> reward


@dataclass(frozen=True)
class Reward:
    name: str
    evaluator: bool  # reward = the learned evaluator's score
    accuracy_condition: bool = True  # Eq. 6's "both within budget: higher accuracy wins"
    direct: Direct | None = None


def _mnas(acc: np.ndarray, lat: np.ndarray, budget: np.ndarray) -> np.ndarray:
    return acc / 100.0 * np.power(lat / budget, MNAS_W)


def _tunas(acc: np.ndarray, lat: np.ndarray, budget: np.ndarray) -> np.ndarray:
    return acc / 100.0 + TUNAS_BETA * np.abs(lat / budget - 1.0)


REWARDS: dict[str, Reward] = {
    "pareto": Reward("pareto", evaluator=True),
    "pareto-noacc": Reward("pareto-noacc", evaluator=True, accuracy_condition=False),
    "mnas": Reward("mnas", evaluator=False, direct=_mnas),
    "tunas": Reward("tunas", evaluator=False, direct=_tunas),
}


def get_reward(name: str) -> Reward:
    try:
        return REWARDS[name]
    except KeyError:
        raise UnknownNameError("reward", name, sorted(REWARDS)) from None


def pareto_labels(acc: np.ndarray, lat: np.ndarray, budget: float, accuracy_condition: bool = True) -> np.ndarray:
    """Eq. 6 for all pairs: +1 where i beats j, -1 where j beats i, 0 where omitted.

    Both within budget: higher accuracy wins (omitted without the accuracy condition);
    otherwise lower latency wins. Identical pairs (equal accuracy and latency) are omitted.
    """
    fits = lat <= budget
    both = fits[:, None] & fits[None, :]
    by_acc = np.sign(acc[:, None] - acc[None, :])
    with np.errstate(invalid="ignore"):  # inf - inf: two archs of unknown latency -> NaN -> omitted
        by_lat = np.nan_to_num(np.sign(lat[None, :] - lat[:, None]), nan=0.0)
    lab = np.where(both, by_acc if accuracy_condition else 0.0, by_lat)
    same = (acc[:, None] == acc[None, :]) & (lat[:, None] == lat[None, :])
    return np.where(same, 0.0, lab)
