"""Small torch MLP regressors on architecture features (accuracy and latency predictors).

Targets are standardised for training; ``export`` gives plain numpy weights for torch-free use.
The accuracy predictor is an :class:`Ensemble` of such MLPs scored pessimistically (mean less
their spread): with few records a single MLP's best-rated archs are mostly its errors, and every
method that maximises it walks into them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import torch
from torch import nn

from budgetnas.core.errors import InvalidArgumentError
from budgetnas.luts.calibration import kendall_tau

# These nets are tiny: one thread beats several contending for shared cores (measured 6x here).
torch.set_num_threads(1)


def make_mlp(n_in: int, hidden: int, layers: int, n_out: int = 1) -> nn.Sequential:
    mods: list[nn.Module] = []
    width = n_in
    for _ in range(layers):
        mods += [nn.Linear(width, hidden), nn.ReLU()]
        width = hidden
    mods.append(nn.Linear(width, n_out))
    return nn.Sequential(*mods)


@dataclass
class FitReport:
    n_train: int
    n_test: int
    kendall_tau: float
    rmse: float


def evaluate(pred: np.ndarray, y: np.ndarray, n_train: int) -> FitReport:
    """Held-out ranking and error of predictions ``pred`` against the records ``y``."""
    tau = kendall_tau(pred, y) if len(y) > 1 else float("nan")
    return FitReport(n_train, len(y), tau, float(np.sqrt(np.mean((pred - y) ** 2))))


class MLPRegressor:
    """features -> value; OFA's accuracy predictor shape (3 hidden layers of 400, ReLU)."""

    def __init__(self, n_in: int, hidden: int = 400, layers: int = 3, seed: int = 0) -> None:
        torch.manual_seed(seed)
        self.net = make_mlp(n_in, hidden, layers)
        self.mean, self.std = 0.0, 1.0
        self.seed = seed

    def fit(self, x: np.ndarray, y: np.ndarray, epochs: int = 200, lr: float = 1e-3, batch: int = 128,
            max_steps: int = 3000) -> None:
        """``epochs`` passes, but at most about ``max_steps`` gradient steps: with many records a few
        passes fit as well, and a fixed count of epochs would make the fit grow with the data."""
        self.mean, self.std = float(y.mean()), float(y.std() or 1.0)
        epochs = max(1, min(epochs, max_steps // max(1, -(-len(y) // batch))))
        xt = torch.as_tensor(x, dtype=torch.float32)
        yt = torch.as_tensor((y - self.mean) / self.std, dtype=torch.float32)
        opt = torch.optim.Adam(self.net.parameters(), lr=lr, weight_decay=1e-5)
        gen = torch.Generator().manual_seed(self.seed)
        self.net.train()
        for _ in range(epochs):
            for idx in torch.randperm(len(xt), generator=gen).split(batch):
                loss = nn.functional.mse_loss(self.net(xt[idx]).squeeze(1), yt[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
        self.net.eval()

    def torch_forward(self, x: torch.Tensor) -> torch.Tensor:
        """Differentiable prediction in target units (for relaxed inputs)."""
        return self.net(x).squeeze(1) * self.std + self.mean

    def predict(self, x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return self.torch_forward(torch.as_tensor(x, dtype=torch.float32)).numpy().astype(np.float64)

    def evaluate(self, x: np.ndarray, y: np.ndarray, n_train: int) -> FitReport:
        return evaluate(self.predict(x), y, n_train)

    def export(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """[(W, b)] per linear layer, W as (out, in); ReLU between; output * std + mean."""
        return [(m.weight.detach().numpy().astype(np.float64), m.bias.detach().numpy().astype(np.float64))
                for m in self.net if isinstance(m, nn.Linear)]


class Ensemble:
    """``members`` MLPs that differ only in their seed (initialisation and batch order), predicting
    their mean less ``penalty`` times their standard deviation: a lower confidence bound, so an
    arch is rated high only where the members agree. On nb201 with 300 records (9 settings, 2 seeds)
    the exhaustive best of this score (five 400-wide MLPs) was 1.02 accuracy points from the
    optimum, of one MLP 1.55."""

    def __init__(self, n_in: int, members: int = 5, penalty: float = 1.0, hidden: int = 400, layers: int = 3,
                 seed: int = 0) -> None:
        if members < 1:
            raise InvalidArgumentError(f"an ensemble needs at least one member, got {members}")
        self.penalty, self.seed = float(penalty), seed
        self.members = [MLPRegressor(n_in, hidden, layers, seed=seed * 1009 + k) for k in range(members)]

    def fit(self, x: np.ndarray, y: np.ndarray, epochs: int = 200) -> None:
        for m in self.members:
            m.fit(x, y, epochs=epochs)

    def parameters(self) -> Iterator[nn.Parameter]:
        for m in self.members:
            yield from m.net.parameters()

    def torch_forward(self, x: torch.Tensor) -> torch.Tensor:
        """Differentiable score in target units (for relaxed inputs)."""
        out = torch.stack([m.torch_forward(x) for m in self.members])
        if len(self.members) == 1:
            return out[0]
        return out.mean(0) - self.penalty * out.std(0, unbiased=False)

    def predict(self, x: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return self.torch_forward(torch.as_tensor(x, dtype=torch.float32)).numpy().astype(np.float64)

    def evaluate(self, x: np.ndarray, y: np.ndarray, n_train: int) -> FitReport:
        return evaluate(self.predict(x), y, n_train)

    def state_dict(self) -> dict[str, object]:
        return {"penalty": self.penalty, "members": [m.net.state_dict() for m in self.members],
                "targets": [(m.mean, m.std) for m in self.members]}

    def export(self) -> tuple[list[tuple[np.ndarray, np.ndarray]], list[float], list[float]]:
        """Per layer the members' weights stacked, W as (members, out, in) and b as (members, out);
        and the members' target means and stds."""
        per = [m.export() for m in self.members]
        layers = [(np.stack([p[i][0] for p in per]), np.stack([p[i][1] for p in per])) for i in range(len(per[0]))]
        return layers, [m.mean for m in self.members], [m.std for m in self.members]


R = TypeVar("R", MLPRegressor, Ensemble)


def fit_with_holdout(x: np.ndarray, y: np.ndarray, seed: int, build: Callable[[int, int], R], holdout: float = 0.2,
                     epochs: int = 200) -> tuple[R, FitReport]:
    """Report Kendall tau / RMSE on a held-out split, then refit on every record for use;
    ``build(n_in, seed)`` makes the model."""
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(y))
    n_test = round(len(y) * holdout) if len(y) >= 10 else 0
    report = FitReport(len(y), 0, float("nan"), float("nan"))
    if n_test:
        test, train = perm[:n_test], perm[n_test:]
        probe = build(x.shape[1], seed)
        probe.fit(x[train], y[train], epochs=epochs)
        report = probe.evaluate(x[test], y[test], len(train))
    model = build(x.shape[1], seed)
    model.fit(x, y, epochs=epochs)
    return model, report
