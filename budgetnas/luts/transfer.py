"""Few-shot latency transfer: a new device's latency for every architecture, from the fleet's other
devices' per-arch latencies plus a handful of whole models measured on the new one.

The fleet is a matrix of source latencies (archs x devices). Everything happens in log-milliseconds,
where devices differ mostly by an offset (overall speed) and a few shared directions (GPUs at batch 1
pay per operation, CPUs and phones per multiply-accumulate, ...). The method, ``fleet-bma``:

- each *anchor* (the fleet's mean profile, or one source device) gives a Bayesian linear model
  ``log y = anchor + c + b * anchor + D w + noise``, with ``D`` the sources' deviations from the
  fleet's mean profile (scaled so ``w ~ N(0, s I)`` is "a device like the fleet's"), ``c`` and ``b``
  nearly free; ``s`` and the noise come from a small fixed grid;
- every (anchor, s, noise) is scored by its marginal likelihood on the N measured archs and the
  predictions are averaged with those weights (Bayesian model averaging), so a near-twin in the fleet
  takes over when the points say so, and the fleet's covariance fills in otherwise;
- the band is the mixture's predictive spread (+-``Z_BAND`` sd in log space), measurement noise
  included, so it widens for archs unlike the measured ones.

Baselines beside it (one registry, ``METHODS``): ``nearest`` (the source with the best rank
correlation on the N archs, with a fitted scale), ``ridge`` (ridge over the sources' standardised log
latencies), ``nnls`` (non-negative least squares over the sources' latencies in milliseconds), and
``fleet-ensemble``, the equal mixture of ``fleet-bma``, ``ridge`` and ``nnls`` (mean in log space, band
from the mixture's spread).

Which archs to measure (``SELECTIONS``): ``dopt`` picks greedily the arch whose prediction is most
uncertain under the fleet prior (the D-optimal increment), among the central 80% of the fleet's
latency space (extremes such as near-empty cells inform the bulk less); ``iopt`` the arch that removes the
most variance summed over every arch (I-optimal; measured level with ``dopt``); ``random`` draws uniformly.

Numpy only: the torch-free LUT server can use it. No constant here was tuned on one device; the bench
(``bench/fewshot.py``) judges everything leave-one-device-out.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from budgetnas.core.errors import DataFileError, InvalidArgumentError, UnknownNameError

Z_BAND = 2.0  # band half-width in log-sd, as LUT predictions' +-2 residual sd (about 95%)
LOG_FLOOR = 0.2  # latencies below 0.2x the device's median read as 0.2x: cells the runtime folds to
#                 ~0 ms (a few % of nb201 archs on TFLite) would otherwise dominate the log covariance
MIN_MEASURED = 2
_INTERCEPT_VAR = 100.0  # the target's overall speed: nearly free (sd of 10 in log ms)
_SLOPE_VAR = 0.25  # how much more or less spread than its anchor the target has (sd 0.5)
_S_GRID = (0.0, 0.05, 0.2, 1.0)  # weight variance of the fleet's deviation directions
_NOISE_GRID = tuple(0.01 * 2 ** (k / 2) for k in range(11))  # log-sd the fleet cannot explain: 0.01..0.32
_MAX_MODELS = 16  # models kept in the average (by marginal likelihood; the rest weigh < 1e-3)
_RIDGE_LAMBDA = 1.0  # on standardised sources, fixed a priori
_DOPT_CENTRAL = 0.8
_DOPT_POOL = 3000
_DOPT_NOISE_VAR = 0.04**2


@dataclass(frozen=True)
class Fleet:
    """Source devices' latencies over one set of archs (rows), completed and floored, in log ms."""

    names: tuple[str, ...]
    log_ms: np.ndarray  # (n_archs, n_sources)
    imputed: tuple[str, ...] = ()  # sources whose missing archs were filled in from the others

    @property
    def n_archs(self) -> int:
        return int(self.log_ms.shape[0])

    @classmethod
    def from_ms(cls, names: Sequence[str], ms: np.ndarray) -> Fleet:
        """``ms``: (n_archs, n_sources) latencies, NaN where a source lacks an arch.

        A source that lacks some archs is filled in there by least squares on the sources that have
        every arch; if none has every arch, the fleet keeps only the archs all sources share. Sources
        with no arch in common are an error.
        """
        x = np.asarray(ms, np.float64)
        names = tuple(names)
        if x.ndim != 2 or x.shape[1] != len(names) or x.shape[1] == 0:
            raise InvalidArgumentError(f"source latencies must be (archs, {len(names)} sources), got {x.shape}")
        if len(set(names)) != len(names):
            raise InvalidArgumentError(f"source devices repeat: {', '.join(names)}")
        bad = [n for n, col in zip(names, x.T, strict=True) if np.any(col[~np.isnan(col)] <= 0)]
        if bad or np.isinf(x).any():
            raise DataFileError(f"source latencies must be finite and > 0 ms: {', '.join(bad) or 'inf'}")
        have = ~np.isnan(x)
        for n, h in zip(names, have.T, strict=True):
            if h.sum() < MIN_MEASURED:
                raise DataFileError(f"source {n} has fewer than {MIN_MEASURED} latencies")
        full = have.all(axis=0)
        imputed: tuple[str, ...] = ()
        if not full.any():
            shared = have.all(axis=1)
            if not shared.any():
                raise DataFileError(f"source devices {', '.join(names)} have no architecture in common")
            raise DataFileError(
                f"no source covers every architecture ({int(shared.sum())} are common to all); "
                "give at least one source with every architecture")
        logs = np.log(x)
        med = np.nanmedian(logs, axis=0)
        logs = np.maximum(logs, med + np.log(LOG_FLOOR))
        if not full.all():
            basis = np.column_stack([np.ones(len(x)), logs[:, full]])
            for j in np.flatnonzero(~full):
                rows = have[:, j]
                if rows.sum() < basis.shape[1] + 2:
                    raise DataFileError(f"source {names[j]} shares only {int(rows.sum())} architectures with "
                                        f"the complete sources; need {basis.shape[1] + 2}")
                w = np.linalg.lstsq(basis[rows], logs[rows, j], rcond=None)[0]
                logs[~rows, j] = basis[~rows] @ w
            imputed = tuple(names[j] for j in np.flatnonzero(~full))
        return cls(names, logs, imputed)

    def deviations(self) -> tuple[np.ndarray, np.ndarray]:
        """(mean profile (n,), deviations (n, m) / sqrt(m - 1)) of the device-centred log latencies."""
        xc = self.log_ms - self.log_ms.mean(axis=0)
        mu = xc.mean(axis=1)
        m = xc.shape[1]
        dev = (xc - mu[:, None]) / np.sqrt(max(m - 1, 1)) if m > 1 else np.zeros((len(mu), 0))
        return mu, dev


@dataclass(frozen=True)
class TransferPrediction:
    """Predicted latency of every fleet arch on the target, with its band."""

    method: str
    latency_ms: np.ndarray
    low_ms: np.ndarray
    high_ms: np.ndarray
    log_sd: np.ndarray
    weights: dict[str, float] = field(default_factory=dict)  # anchor -> share of the average (fleet-bma)
    noise_sd: float = 0.0  # log-sd the method attributes to the target's own noise

    @classmethod
    def from_log(cls, method: str, mean: np.ndarray, sd: np.ndarray, weights: dict[str, float] | None = None,
                 noise_sd: float = 0.0) -> TransferPrediction:
        sd = np.maximum(sd, 0.0)
        return cls(method, np.exp(mean), np.exp(mean - Z_BAND * sd), np.exp(mean + Z_BAND * sd), sd,
                   dict(weights or {}), float(noise_sd))


def _check_measured(fleet: Fleet, idx: np.ndarray, ms: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    idx = np.asarray(idx, np.int64).ravel()
    ms = np.asarray(ms, np.float64).ravel()
    if len(idx) != len(ms):
        raise InvalidArgumentError(f"{len(idx)} measured archs but {len(ms)} latencies")
    if len(idx) < MIN_MEASURED:
        raise InvalidArgumentError(f"need at least {MIN_MEASURED} measured archs on the new device, got {len(idx)}")
    if len(np.unique(idx)) != len(idx):
        raise InvalidArgumentError("an arch is measured twice; give each arch once")
    if idx.min() < 0 or idx.max() >= fleet.n_archs:
        raise InvalidArgumentError(f"measured arch index outside the fleet's {fleet.n_archs} archs")
    if not np.all(np.isfinite(ms)) or np.any(ms <= 0):
        raise InvalidArgumentError("measured latencies must be finite and > 0 ms")
    y = np.log(ms)
    return idx, np.maximum(y, np.median(y) + np.log(LOG_FLOOR))  # the same floor, on what is known


def _log_evidence(zo: np.ndarray, prior: np.ndarray, r: np.ndarray, noise_var: float) -> float:
    k = (zo * prior) @ zo.T + noise_var * np.eye(len(r))
    c = np.linalg.cholesky(k)
    a = np.linalg.solve(c, r)
    return float(-0.5 * a @ a - np.log(np.diag(c)).sum())


def fit_fleet_bma(fleet: Fleet, idx: np.ndarray, ms: np.ndarray) -> TransferPrediction:
    idx, y = _check_measured(fleet, idx, ms)
    mu, dev = fleet.deviations()
    xc = fleet.log_ms - fleet.log_ms.mean(axis=0)
    anchors = [("fleet mean", mu)] + [(n, xc[:, j]) for j, n in enumerate(fleet.names)]
    scored: list[tuple[float, int, float, float]] = []
    for a, (_, an) in enumerate(anchors):
        zo = np.column_stack([np.ones(len(idx)), an[idx], dev[idx]])
        r = y - an[idx]
        for s in _S_GRID:
            prior = np.r_[_INTERCEPT_VAR, _SLOPE_VAR, np.full(dev.shape[1], s)]
            for noise in _NOISE_GRID:
                scored.append((_log_evidence(zo, prior, r, noise**2), a, s, noise))
    scored.sort(key=lambda t: -t[0])
    top = [t for t in scored[:_MAX_MODELS] if t[0] - scored[0][0] > np.log(1e-3)]
    w = np.exp(np.array([t[0] for t in top]) - top[0][0])
    w /= w.sum()
    means, variances = [], []
    weights: dict[str, float] = {}
    noise_sd = 0.0
    for wk, (_, a, s, noise) in zip(w, top, strict=True):
        name, an = anchors[a]
        prior = np.r_[_INTERCEPT_VAR, _SLOPE_VAR, np.full(dev.shape[1], s)]
        keep = prior > 0
        z = np.column_stack([np.ones(len(an)), an, dev])[:, keep]
        zo = z[idx]
        post = np.linalg.inv(zo.T @ zo / noise**2 + np.diag(1.0 / prior[keep]))
        coef = post @ zo.T @ (y - an[idx]) / noise**2
        means.append(an + z @ coef)
        variances.append(np.einsum("ij,jk,ik->i", z, post, z) + noise**2)
        weights[name] = weights.get(name, 0.0) + float(wk)
        noise_sd += float(wk) * noise
    p, v = np.asarray(means), np.asarray(variances)
    mean = w @ p
    var = w @ (v + p**2) - mean**2
    return TransferPrediction.from_log("fleet-bma", mean, np.sqrt(np.maximum(var, 0.0)), weights, noise_sd)


def _rank(x: np.ndarray) -> np.ndarray:
    order = np.argsort(x, kind="stable")
    r = np.empty(len(x))
    r[order] = np.arange(len(x))
    # ties share their mean rank, as Spearman's definition asks
    _, inv, counts = np.unique(x, return_inverse=True, return_counts=True)
    sums = np.bincount(inv, weights=r)
    return (sums / counts)[inv]


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    ra, rb = _rank(np.asarray(a, np.float64)), _rank(np.asarray(b, np.float64))
    if ra.std() == 0 or rb.std() == 0:
        return 0.0
    return float(np.corrcoef(ra, rb)[0, 1])


def _residual_sd(res: np.ndarray, dof: int) -> float:
    return float(np.sqrt(np.sum(res**2) / max(len(res) - dof, 1)))


def fit_nearest(fleet: Fleet, idx: np.ndarray, ms: np.ndarray) -> TransferPrediction:
    idx, y = _check_measured(fleet, idx, ms)
    corr = [spearman(fleet.log_ms[idx, j], y) for j in range(len(fleet.names))]
    j = int(np.argmax(corr))
    x = fleet.log_ms[:, j]
    offset = float(np.median(y - x[idx]))
    sd = _residual_sd(y - x[idx] - offset, 1)
    mean = x + offset
    return TransferPrediction.from_log("nearest", mean, np.full(len(mean), sd), {fleet.names[j]: 1.0}, sd)


def fit_ridge(fleet: Fleet, idx: np.ndarray, ms: np.ndarray) -> TransferPrediction:
    idx, y = _check_measured(fleet, idx, ms)
    x = fleet.log_ms
    sd_x = x.std(axis=0)
    z = (x - x.mean(axis=0)) / np.where(sd_x > 0, sd_x, 1.0)
    zo = z[idx]
    zc = zo - zo.mean(axis=0)
    g = np.linalg.inv(zc.T @ zc + _RIDGE_LAMBDA * np.eye(z.shape[1]))
    w = g @ zc.T @ (y - y.mean())
    b = y.mean() - zo.mean(axis=0) @ w
    hat = np.einsum("ij,jk,ik->i", zc, g, zc) + 1.0 / len(idx)
    loo = (y - zo @ w - b) / np.maximum(1.0 - hat, 1e-6)  # leave-one-out residuals: an honest band
    sd = float(np.sqrt(np.mean(loo**2)))
    mean = z @ w + b
    return TransferPrediction.from_log("ridge", mean, np.full(len(mean), sd), noise_sd=sd)


def nnls(a: np.ndarray, b: np.ndarray, max_iter: int = 500) -> np.ndarray:
    """argmin ||a x - b|| subject to x >= 0 (Lawson-Hanson active set)."""
    n = a.shape[1]
    x = np.zeros(n)
    passive = np.zeros(n, bool)
    for _ in range(max_iter):
        grad = a.T @ (b - a @ x)
        cand = ~passive & (grad > 1e-12 * max(1.0, float(np.abs(grad).max())))
        if not cand.any():
            break
        passive[np.argmax(np.where(cand, grad, -np.inf))] = True
        while True:
            s = np.zeros(n)
            s[passive] = np.linalg.lstsq(a[:, passive], b, rcond=None)[0]
            if np.all(s[passive] > 0):
                x = s
                break
            neg = passive & (s <= 0)
            alpha = np.min(x[neg] / (x[neg] - s[neg]))
            x = x + alpha * (s - x)
            passive &= x > 1e-15
            x[~passive] = 0.0
    return x


def fit_nnls(fleet: Fleet, idx: np.ndarray, ms: np.ndarray) -> TransferPrediction:
    idx, _ = _check_measured(fleet, idx, ms)
    y = np.asarray(ms, np.float64).ravel()
    x = np.exp(fleet.log_ms)
    w = nnls(x[idx], y)
    pred = x @ w
    ok = pred[idx] > 0
    sd = _residual_sd(np.log(y[ok] / pred[idx][ok]), int((w > 0).sum())) if ok.any() else 1.0
    mean = np.log(np.maximum(pred, np.exp(fleet.log_ms.min())))
    weights = {n: float(v) for n, v in zip(fleet.names, w, strict=True) if v > 0}
    return TransferPrediction.from_log("nnls", mean, np.full(len(mean), sd), weights, sd)


def fit_fleet_ensemble(fleet: Fleet, idx: np.ndarray, ms: np.ndarray) -> TransferPrediction:
    """The equal mixture of ``fleet-bma``, ``ridge`` and ``nnls``: their mean in log space, and the
    mixture's spread as the band (each part's variance plus the parts' disagreement). The three err
    differently (a Bayesian average over anchors; every source at once, shrunk; a positive sum in
    milliseconds), so their average ranks better than each: measured leave-one-device-out on the
    NAS-Bench-201 fleet (bench/fewshot.py), with equal weights fixed a priori, not fitted."""
    parts = [fit_fleet_bma(fleet, idx, ms), fit_ridge(fleet, idx, ms), fit_nnls(fleet, idx, ms)]
    means = np.array([np.log(p.latency_ms) for p in parts])
    var = np.array([p.log_sd**2 for p in parts])
    mean = means.mean(axis=0)
    spread = (var + means**2).mean(axis=0) - mean**2
    weights: dict[str, float] = {}
    for p in (parts[0], parts[2]):  # the anchors' and the positive sum's shares, a third of the mixture each
        total = sum(p.weights.values()) or 1.0
        for k, v in p.weights.items():
            weights[k] = weights.get(k, 0.0) + v / total / len(parts)
    return TransferPrediction.from_log("fleet-ensemble", mean, np.sqrt(np.maximum(spread, 0.0)), weights,
                                       float(np.mean([p.noise_sd for p in parts])))


Method = Callable[[Fleet, np.ndarray, np.ndarray], TransferPrediction]
METHODS: dict[str, Method] = {"fleet-bma": fit_fleet_bma, "fleet-ensemble": fit_fleet_ensemble,
                              "nearest": fit_nearest, "ridge": fit_ridge, "nnls": fit_nnls}
DEFAULT_METHOD = "fleet-ensemble"  # better than fleet-bma alone at N = 10 on the bench (bench/results/fewshot.md)


def fit(fleet: Fleet, idx: np.ndarray, ms: np.ndarray, method: str = DEFAULT_METHOD) -> TransferPrediction:
    try:
        fn = METHODS[method]
    except KeyError:
        raise UnknownNameError("transfer method", method, sorted(METHODS)) from None
    return fn(fleet, idx, ms)


# ---- which archs to measure ------------------------------------------------------------------------
def _check_n(fleet: Fleet, n: int, allowed: np.ndarray) -> None:
    if n < MIN_MEASURED:
        raise InvalidArgumentError(f"measure at least {MIN_MEASURED} archs, got {n}")
    if n > int(allowed.sum()):
        raise InvalidArgumentError(f"cannot choose {n} archs among {int(allowed.sum())}")


def select_random(fleet: Fleet, n: int, rng: np.random.Generator, allowed: np.ndarray) -> np.ndarray:
    _check_n(fleet, n, allowed)
    return rng.choice(np.flatnonzero(allowed), n, replace=False)


def select_dopt(fleet: Fleet, n: int, rng: np.random.Generator, allowed: np.ndarray) -> np.ndarray:
    _check_n(fleet, n, allowed)
    x = fleet.log_ms
    sd = x.std(axis=0)
    z = (x - x.mean(axis=0)) / np.where(sd > 0, sd, 1.0)
    radius = np.sqrt((z**2).sum(axis=1))
    central = allowed & (radius <= np.quantile(radius[allowed], _DOPT_CENTRAL))
    pool = np.flatnonzero(central if central.sum() >= n else allowed)
    pool = rng.choice(pool, min(_DOPT_POOL, len(pool)), replace=False)
    mu, dev = fleet.deviations()
    zp = np.column_stack([np.ones(len(mu)), mu, dev])[pool]
    cov = np.eye(zp.shape[1])
    chosen: list[int] = []
    for _ in range(n):
        var = np.einsum("ij,jk,ik->i", zp, cov, zp)
        var[chosen] = -np.inf
        j = int(np.argmax(var))
        chosen.append(j)
        cz = cov @ zp[j]
        cov = cov - np.outer(cz, cz) / (_DOPT_NOISE_VAR + zp[j] @ cz)
    return pool[np.asarray(chosen, np.int64)]


def select_iopt(fleet: Fleet, n: int, rng: np.random.Generator, allowed: np.ndarray) -> np.ndarray:
    """Greedy I-optimal: each pick removes the most predictive variance summed over every allowed arch (the
    error all archs are judged by), where D-optimal removes the most at the pick itself (high-leverage extremes)."""
    _check_n(fleet, n, allowed)
    mu, dev = fleet.deviations()
    z_all = np.column_stack([np.ones(len(mu)), mu, dev])[allowed]
    moment = z_all.T @ z_all / len(z_all)  # the allowed archs' second moment: sum of variances = tr(P M)
    idx = np.flatnonzero(allowed)
    pool = rng.choice(len(idx), min(_DOPT_POOL, len(idx)), replace=False)
    zp = z_all[pool]
    cov = np.eye(zp.shape[1])
    chosen: list[int] = []
    for _ in range(n):
        pz = zp @ cov  # (pool, k): rows P z_j
        gain = np.einsum("ij,jk,ik->i", pz, moment, pz) / (_DOPT_NOISE_VAR + np.einsum("ij,ij->i", pz, zp))
        gain[chosen] = -np.inf
        j = int(np.argmax(gain))
        chosen.append(j)
        cz = cov @ zp[j]
        cov = cov - np.outer(cz, cz) / (_DOPT_NOISE_VAR + zp[j] @ cz)
    return idx[pool[np.asarray(chosen, np.int64)]]


Selection = Callable[[Fleet, int, np.random.Generator, np.ndarray], np.ndarray]
SELECTIONS: dict[str, Selection] = {"dopt": select_dopt, "iopt": select_iopt, "random": select_random}
DEFAULT_SELECTION = "dopt"


def choose_archs(fleet: Fleet, n: int, rng: np.random.Generator, selection: str = DEFAULT_SELECTION,
                 allowed: np.ndarray | None = None) -> np.ndarray:
    """Row indices of the ``n`` archs to measure on the new device (``allowed``: a mask of candidates)."""
    try:
        fn = SELECTIONS[selection]
    except KeyError:
        raise UnknownNameError("arch selection", selection, sorted(SELECTIONS)) from None
    mask = np.ones(fleet.n_archs, bool) if allowed is None else np.asarray(allowed, bool)
    return fn(fleet, n, rng, mask)
