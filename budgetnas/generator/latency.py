"""Latency oracles behind one interface: token matrix (n, decisions) -> latency (n,) in ms.

- ``lut``: a LUT folded into per-decision cost tables (:mod:`budgetnas.luts.token_cost`), calibrated;
- ``table``: a per-architecture measured table (CSV ``PATH:COLUMN``); absent archs give NaN,
  which every caller treats as "not known to fit";
- ``mlp``: an MLP trained on whole-model measurements (a table), for archs never measured.

Each exports plain arrays for the numpy-only generation bundle (``budgetnas.generator.bundle``).
"""

from __future__ import annotations

import abc
from typing import Any

import numpy as np

from budgetnas.core.errors import InvalidArgumentError
from budgetnas.generator.features import token_features, uniform_tokens
from budgetnas.generator.mlp import FitReport, MLPRegressor, fit_with_holdout
from budgetnas.generator.tables import ArchTable
from budgetnas.luts.token_cost import TokenCostModel, canonical_tokens
from budgetnas.spaces import SearchSpace


class LatencyOracle(abc.ABC):
    kind: str

    def __init__(self, space: SearchSpace[Any]) -> None:
        self.space = space

    @abc.abstractmethod
    def __call__(self, tokens: np.ndarray) -> np.ndarray: ...

    @abc.abstractmethod
    def bounds(self) -> tuple[float, float]:
        """Cheapest and dearest latency of the space (as far as this oracle knows it)."""

    @abc.abstractmethod
    def export(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        """(meta, arrays) for the generation bundle; meta has ``kind``."""


class CostModelOracle(LatencyOracle):
    kind = "lut"

    def __init__(self, space: SearchSpace[Any], model: TokenCostModel) -> None:
        super().__init__(space)
        self.model = model

    def __call__(self, tokens: np.ndarray) -> np.ndarray:
        return self.model(tokens)

    def bounds(self) -> tuple[float, float]:
        return self.model.bounds()

    def export(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        meta, arrays = self.model.to_arrays("lat_term")
        return {"kind": self.kind, **meta}, arrays


def radix_index(tokens: np.ndarray, sizes: list[int]) -> np.ndarray:
    strides = np.cumprod([1, *sizes[::-1]])[:-1][::-1]
    return np.asarray(tokens, np.int64) @ strides.astype(np.int64)


MAX_DENSE = 5_000_000  # a dense array over the whole space up to this many archs (nb201: 15,625)


class TableOracle(LatencyOracle):
    """Measured whole-model latencies; NaN for archs the table lacks."""

    kind = "table"

    def __init__(self, space: SearchSpace[Any], table: ArchTable) -> None:
        super().__init__(space)
        self.table = table.present()
        self.sizes = [len(d.choices) for d in space.decisions]
        n = int(np.prod(np.asarray(self.sizes, dtype=np.float64)))
        if n > MAX_DENSE:
            raise InvalidArgumentError(
                f"a measured table covers few of the {n:.3g} archs of {space.name}; use a LUT or --latency-mlp")
        self.dense = np.full(n, np.nan)
        self.dense[radix_index(self.table.tokens, self.sizes)] = self.table.values

    def __call__(self, tokens: np.ndarray) -> np.ndarray:
        return self.dense[radix_index(canonical_tokens(self.space, tokens), self.sizes)]

    def bounds(self) -> tuple[float, float]:
        return float(np.nanmin(self.dense)), float(np.nanmax(self.dense))

    def export(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        return {"kind": self.kind, "sizes": self.sizes}, {"lat_dense": self.dense}


class MLPOracle(LatencyOracle):
    """An MLP on the space's features, trained on whole-model measurements."""

    kind = "mlp"

    def __init__(self, space: SearchSpace[Any], table: ArchTable, seed: int = 0, epochs: int = 100) -> None:
        super().__init__(space)
        t = table.present()
        self.model, self.report = fit_with_holdout(token_features(space, t.tokens), t.values, seed,
                                                   lambda n_in, s: MLPRegressor(n_in, hidden=128, seed=s),
                                                   epochs=epochs)
        probe = uniform_tokens(space, 20000, np.random.default_rng(seed))
        lat = self(probe)
        self._bounds = (float(min(lat.min(), t.values.min())), float(max(lat.max(), t.values.max())))

    @property
    def fit_report(self) -> FitReport:
        return self.report

    def __call__(self, tokens: np.ndarray) -> np.ndarray:
        return self.model.predict(token_features(self.space, tokens))

    def bounds(self) -> tuple[float, float]:
        return self._bounds

    def export(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        layers = self.model.export()
        arrays = {}
        for i, (w, b) in enumerate(layers):
            arrays[f"lat_w{i}"], arrays[f"lat_b{i}"] = w, b
        return {"kind": self.kind, "layers": len(layers), "mean": self.model.mean, "std": self.model.std}, arrays
