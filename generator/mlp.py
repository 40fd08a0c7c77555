"""A small torch MLP regressor on architecture features (accuracy and latency predictors).

Targets are standardised for training; ``export`` gives plain numpy weights for torch-free use.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy.stats import kendalltau
from torch import nn

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
        p = self.predict(x)
        tau = float(kendalltau(p, y).statistic) if len(y) > 1 else float("nan")
        return FitReport(n_train, len(y), tau, float(np.sqrt(np.mean((p - y) ** 2))))

    def export(self) -> list[tuple[np.ndarray, np.ndarray]]:
        """[(W, b)] per linear layer, W as (out, in); ReLU between; output * std + mean."""
        return [(m.weight.detach().numpy().astype(np.float64), m.bias.detach().numpy().astype(np.float64))
                for m in self.net if isinstance(m, nn.Linear)]


def fit_with_holdout(x: np.ndarray, y: np.ndarray, seed: int, holdout: float = 0.2, epochs: int = 200,
                     hidden: int = 400) -> tuple[MLPRegressor, FitReport]:
    """Report Kendall tau / RMSE on a held-out split, then refit on every record for use."""
    rng = np.random.default_rng(seed)
    perm = rng.permutation(len(y))
    n_test = round(len(y) * holdout) if len(y) >= 10 else 0
    report = FitReport(len(y), 0, float("nan"), float("nan"))
    if n_test:
        test, train = perm[:n_test], perm[n_test:]
        probe = MLPRegressor(x.shape[1], hidden=hidden, seed=seed)
        probe.fit(x[train], y[train], epochs=epochs)
        report = probe.evaluate(x[test], y[test], len(train))
    model = MLPRegressor(x.shape[1], hidden=hidden, seed=seed)
    model.fit(x, y, epochs=epochs)
    return model, report
