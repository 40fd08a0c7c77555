"""Reward functions for the budget-conditioned generator (the paper's Table 2), a registry.

Each reward gives every sampled arch a value for its budget; the generator's advantage is the
value's rank within the budget's row (so only the order matters, see ``budgetnas.generator.pnag``).

- ``pareto``: Eq. 6's Pareto-dominance order, grounded: an arch within budget is valued by its
  accuracy (record or predictor), every over-budget arch ranks below every fitting one, and
  among those lower latency wins (the latency oracle is exact);
- ``pareto-noacc``: the same order without the accuracy condition (fitting archs tie);
- ``evaluator``: the paper's Algorithm 1: a learned evaluator R(β|B;w) pre-trained with Eq. 6's
  labels on the M archs whose accuracy was read, then frozen;
- ``mnas``: MnasNet's soft multi-objective reward ACC·(LAT/B)^w, w = -0.07;
- ``tunas``: TuNAS's absolute reward ACC + β·|LAT/B - 1|, β = -0.07 (accuracy as a fraction).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from budgetnas.core.errors import UnknownNameError

MNAS_W = -0.07
TUNAS_BETA = -0.07

Direct = Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]  # (acc %, lat ms, budget ms) -> reward


@dataclass(frozen=True)
class Reward:
    name: str
    evaluator: bool = False  # value = the frozen learned evaluator's score
    accuracy_condition: bool = True  # Eq. 6's "both within budget: higher accuracy wins"
    direct: Direct | None = None  # value = direct(acc, lat, budget); None with evaluator False: Eq. 6 order


def _mnas(acc: np.ndarray, lat: np.ndarray, budget: np.ndarray) -> np.ndarray:
    return acc / 100.0 * np.power(lat / budget, MNAS_W)


def _tunas(acc: np.ndarray, lat: np.ndarray, budget: np.ndarray) -> np.ndarray:
    return acc / 100.0 + TUNAS_BETA * np.abs(lat / budget - 1.0)


def pareto_value(acc: np.ndarray, lat: np.ndarray, budget: np.ndarray, floor: np.ndarray, scale: np.ndarray,
                 accuracy_condition: bool = True, penalty: float = 3.0,
                 multiplier: np.ndarray | float = 1.0) -> np.ndarray:
    """A value whose order is Eq. 6's for each sample's budget: a fitting arch is worth its
    accuracy (all tie at ``floor`` without the accuracy condition); an over-budget one is worth
    less than ``floor`` (at most the worst fitting accuracy), by ``penalty`` scales plus one per
    tenth of the budget it overshoots (capped at 100), so lower latency still wins among them;
    ``multiplier`` (>= 1, per sample) scales that penalty: the trainer's per-budget Lagrange multiplier."""
    fits = lat <= budget
    with np.errstate(invalid="ignore", divide="ignore"):
        overshoot = np.minimum(np.nan_to_num(10.0 * (lat / budget - 1.0), nan=100.0, posinf=100.0), 100.0)
    return np.where(fits, acc if accuracy_condition else floor, floor - scale * multiplier * (penalty + overshoot))


REWARDS: dict[str, Reward] = {
    "pareto": Reward("pareto"),
    "pareto-noacc": Reward("pareto-noacc", accuracy_condition=False),
    "evaluator": Reward("evaluator", evaluator=True),
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
