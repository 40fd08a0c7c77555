"""Torch-free generation: the PNAG generator bundle and its numpy inference.

A bundle is an ``.npz`` (no pickles) holding a JSON ``meta`` plus arrays: the LSTM generator
(budget anchors, token embeddings, one LSTM cell, per-decision heads), the accuracy predictor
(MLP weights), the accuracy records read in training, the best archs the generator found in
training per budget (its archive's candidates), and the latency oracle (LUT cost tables, a
dense measured table, or an MLP). ``budgetnas train`` writes it; the CLI's ``generate`` and the
server's ``POST /v1/generate`` both answer through :meth:`GeneratorBundle.generate`. It is the
generator's one module the torch-free server may import (docs/layout.md), so it stays numpy only
and imports only ``spaces``, ``luts`` and ``core``.

Sampler calibration: the shipped policy's samples for a budget ``b`` are drawn conditioned on
``c(b) <= b`` (:meth:`GeneratorBundle.conditioned`, arrays ``cond_budget``/``cond_value``; absent:
``c(b) = b``): on a grid of budgets ``g``, the largest conditioning budget at which at least
``target`` of the samples fit ``g`` on the bundle's own latency; a budget takes the value of the
grid budget at or below it (a step, not an interpolation: samples that fit ``g`` fit any larger
budget, while between grid budgets an arch just over the budget may sit). So "samples within
budget" holds where the budget embedding alone cannot make the step sharp. The policy, its logits
and the final-pick rule are unchanged.

Budget rule (CLI and server alike): a budget below the cheapest architecture's latency, or one
that is not a positive finite number, raises :class:`InvalidArgumentError` naming the valid
range; a budget above the dearest architecture is answered normally, with a ``warning``.
"""

from __future__ import annotations

import io
import json
import math
import zipfile
from typing import Any

import numpy as np

from budgetnas.core.errors import DataFileError, InvalidArgumentError
from budgetnas.luts.token_cost import TokenCostModel, canonical_tokens, token_features
from budgetnas.spaces import space_from_description

BUNDLE_FORMAT = "budgetnas-generator"
# the sampler's calibration (GeneratorBundle.conditioned): fit share aimed at, budgets calibrated, samples each.
# The promise is >= 99% of a *fresh* draw within budget. Bisection keeps the largest value whose draw passed,
# so it favours values that passed by luck: at 99.5% of 1,000 the margin sat inside that noise (fresh draws
# fell to 98.6%); 99.8% of 2,000 (at most 4 over) leaves values passing by luck well above 99%.
COND_TARGET, COND_GRID, COND_SAMPLES, COND_STEPS = 0.998, 48, 2000, 8
BUNDLE_VERSION = 3  # 2: archive candidates (cand_tokens); 3: the accuracy predictor is an ensemble
READABLE_VERSIONS = (2, 3)  # a v2 bundle's predictor is one MLP: read as an ensemble of one
CANDIDATES = 256  # archs sampled per round for one budget


def pack_bundle(meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> bytes:
    meta = {"format": BUNDLE_FORMAT, "version": BUNDLE_VERSION, **meta}
    buf = io.BytesIO()
    blob = np.frombuffer(json.dumps(meta).encode(), np.uint8)
    np.savez_compressed(buf, meta=blob, **arrays)  # type: ignore[arg-type]
    return buf.getvalue()


def mlp_forward(x: np.ndarray, layers: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    x = np.asarray(x, layers[0][0].dtype)
    for i, (w, b) in enumerate(layers):
        x = x @ w.T + b
        if i < len(layers) - 1:
            x = np.maximum(x, 0.0)
    return x[:, 0]


def ensemble_forward(x: np.ndarray, layers: list[tuple[np.ndarray, np.ndarray]]) -> np.ndarray:
    """Members' MLPs at once: W stacked as (members, out, in), b as (members, out) -> (members, n)."""
    h = np.broadcast_to(np.asarray(x, layers[0][0].dtype), (layers[0][0].shape[0], *np.shape(x)))
    for i, (w, b) in enumerate(layers):
        h = np.matmul(h, np.swapaxes(w, 1, 2)) + b[:, None, :]
        if i < len(layers) - 1:
            h = np.maximum(h, 0.0)
    return h[:, :, 0]


class GeneratorBundle:
    def __init__(self, meta: dict[str, Any], arrays: dict[str, np.ndarray]) -> None:
        self.meta, self.a = meta, arrays
        self._bytes: bytes | None = None
        self.space = space_from_description(meta["space"])
        self.sizes = [len(d.choices) for d in self.space.decisions]
        lat = meta["latency"]
        self._lat_kind = lat["kind"]
        if self._lat_kind == "lut":
            self._cost = TokenCostModel.from_arrays(lat, arrays, "lat_term")
        acc = meta["accuracy"]
        self._acc_layers = [(arrays[f"acc_w{i}"], arrays[f"acc_b{i}"]) for i in range(acc["layers"])]
        if "members" not in acc:  # v2: one MLP
            self._acc_layers = [(w[None], b[None]) for w, b in self._acc_layers]
            acc = {**acc, "members": 1, "means": [acc["mean"]], "stds": [acc["std"]], "penalty": 0.0}
        self._acc_means = np.asarray(acc["means"], np.float64)[:, None]
        self._acc_stds = np.asarray(acc["stds"], np.float64)[:, None]
        self._acc_penalty = float(acc["penalty"])
        k = self._acc_layers[0][0].shape[0]
        if not (k == acc["members"] == len(self._acc_means) == len(self._acc_stds)):
            raise ValueError(f"the accuracy predictor has {k} members' weights but {acc['members']} members, "
                             f"{len(self._acc_means)} means, {len(self._acc_stds)} stds")
        known = arrays["known_tokens"]
        self._known = {r.tobytes(): float(v) for r, v in zip(known.astype(np.int64), arrays["known_acc"], strict=True)}
        self.cheapest, self.dearest = (float(v) for v in meta["budget_range"])
        self._known_tok = known.astype(np.int64)
        self._known_acc = np.asarray(arrays["known_acc"], np.float64)
        self._known_lat = self.latency(self._known_tok) if len(known) else np.zeros(0)
        if ("cond_budget" in arrays) != ("cond_value" in arrays):
            raise ValueError("the sampler's calibration needs both cond_budget and cond_value")
        if "cond_budget" in arrays:  # an uploaded bundle's calibration must not break generate later
            g, v = np.asarray(arrays["cond_budget"]), np.asarray(arrays["cond_value"])
            if (g.ndim != 1 or g.shape != v.shape or not len(g) or not np.all(np.isfinite(g))
                    or not np.all(np.isfinite(v)) or np.any(np.diff(g) < 0)):
                raise ValueError("cond_budget and cond_value must be equal-length, finite, with cond_budget sorted")
        self._cand_tok = arrays["cand_tokens"].astype(np.int64).reshape(-1, len(self.sizes))
        self._cand_lat = self.latency(self._cand_tok) if len(self._cand_tok) else np.zeros(0)
        self._cand_acc: np.ndarray | None = None  # their scores, once asked: the bundle never changes
        self._tables: tuple[np.ndarray, np.ndarray, np.ndarray, list[np.ndarray]] | None = None

    # ---- loading ---------------------------------------------------------------------------------
    @classmethod
    def from_bytes(cls, data: bytes) -> GeneratorBundle:
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
            raise DataFileError(f"not a generator bundle: {exc}") from None
        if "meta" not in arrays:
            raise DataFileError("not a generator bundle: no meta")
        try:
            meta = json.loads(arrays.pop("meta").tobytes().decode())
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise DataFileError(f"generator bundle has a bad meta: {exc}") from None
        if meta.get("format") != BUNDLE_FORMAT or meta.get("version") not in READABLE_VERSIONS:
            raise DataFileError(f"not a {BUNDLE_FORMAT} {'/'.join(f'v{v}' for v in READABLE_VERSIONS)} bundle "
                                f"(format {meta.get('format')!r}, version {meta.get('version')!r})")
        try:
            bundle = cls(meta, arrays)
        except KeyError as exc:
            raise DataFileError(f"generator bundle lacks {exc}") from None
        except (TypeError, ValueError, IndexError) as exc:  # arrays or meta of the wrong shape or type
            raise DataFileError(f"generator bundle is malformed: {exc}") from None
        bundle._bytes = data
        return bundle

    def to_bytes(self) -> bytes:
        """The file this bundle was read from (or packed anew)."""
        if self._bytes is None:
            self._bytes = pack_bundle({k: v for k, v in self.meta.items() if k not in ("format", "version")}, self.a)
        return self._bytes

    # ---- oracles -----------------------------------------------------------------------------------
    def latency(self, tokens: np.ndarray) -> np.ndarray:
        tok = np.asarray(tokens, np.int64)
        if self._lat_kind == "lut":
            return self._cost(tok)
        if self._lat_kind == "table":
            strides = np.cumprod([1, *self.sizes[::-1]])[:-1][::-1].astype(np.int64)
            return self.a["lat_dense"][canonical_tokens(self.space, tok) @ strides]
        lat = self.meta["latency"]
        layers = [(self.a[f"lat_w{i}"], self.a[f"lat_b{i}"]) for i in range(lat["layers"])]
        return mlp_forward(token_features(self.space, tok), layers).astype(np.float64) * lat["std"] + lat["mean"]

    def accuracy(self, tokens: np.ndarray) -> np.ndarray:
        """The record read in training where there is one, else the predictor's estimate less its
        optimism measured on the archs validated in training."""
        tok = canonical_tokens(self.space, tokens)
        acc = self.meta["accuracy"]
        known = [self._known.get(r.tobytes()) for r in tok]
        out = np.asarray([np.nan if v is None else v for v in known], np.float64)
        guess = np.isnan(out)
        if guess.any():  # the predictor runs only where no record was read
            x = token_features(self.space, tok[guess])
            pred = ensemble_forward(x, self._acc_layers).astype(np.float64) * self._acc_stds + self._acc_means
            score = pred.mean(0) - self._acc_penalty * pred.std(0) if len(pred) > 1 else pred[0]
            out[guess] = score - acc.get("bias", 0.0)
        return out

    # ---- the generator -----------------------------------------------------------------------------
    def budget_embedding(self, budgets: np.ndarray) -> np.ndarray:
        anchors = self.a["gen_anchors"]
        k = anchors.shape[0]
        if k == 1:
            return np.repeat(anchors[:1], len(budgets), axis=0)
        lo, hi = self.meta["embedding_range"]
        pos = np.clip((budgets - lo) / max(hi - lo, 1e-12) * (k - 1), 0, k - 1)
        i = np.minimum(np.floor(pos).astype(np.int64), k - 2)
        frac = (pos - i)[:, None]
        return anchors[i] * (1 - frac) + anchors[i + 1] * frac

    def _lstm_tables(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[np.ndarray]]:
        """The LSTM's weights arranged for :meth:`_run`, built once. The input is [embedding of the
        previous token, budget embedding]: the budget's share of the gates is the same at every step,
        and the token's is a row of a small table per step, so a step multiplies only the hidden
        state (a third of the work; ofa-mbv3 has 46 steps). The input, forget and output gates' rows
        are halved, so that one ``tanh`` over all four gates gives each sigmoid as 0.5 + 0.5 tanh(x/2)."""
        if self._tables is None:
            a = self.a
            hidden = a["gen_whh"].shape[1]
            half = np.full(4 * hidden, 0.5, a["gen_whh"].dtype)
            half[2 * hidden:3 * hidden] = 1.0  # the cell candidate g keeps its tanh
            w_prev, w_budget = np.split(a["gen_wih"], [a["gen_start"].shape[0]], axis=1)
            whh_t = (a["gen_whh"] * half[:, None]).T.copy()
            w_budget_t = (w_budget * half[:, None]).T.copy()
            start = (a["gen_start"] @ w_prev.T) * half
            steps = [(a[f"gen_emb{t}"] @ w_prev.T) * half for t in range(len(self.sizes) - 1)]
            self._tables = whh_t, w_budget_t, np.concatenate([start, a["gen_b"] * half]), steps
        return self._tables

    def _run(self, budgets: np.ndarray, tokens: np.ndarray | None,
             rng: np.random.Generator | None) -> tuple[np.ndarray, list[np.ndarray]]:
        a = self.a
        n = len(budgets)
        whh_t, w_budget_t, start_bias, steps = self._lstm_tables()
        hidden = whh_t.shape[0]
        b = self.budget_embedding(np.asarray(budgets, np.float64)).astype(whh_t.dtype)
        start, bias = np.split(start_bias, 2)
        fixed = b @ w_budget_t + bias
        from_prev = start[None, :]
        h, c = np.zeros((n, hidden), whh_t.dtype), np.zeros((n, hidden), whh_t.dtype)
        out = np.zeros((n, len(self.sizes)), np.int64)
        logits_all = []
        for t in range(len(self.sizes)):
            z = np.tanh(from_prev + fixed + h @ whh_t)
            i, f, g, o = z[:, :hidden], z[:, hidden:2 * hidden], z[:, 2 * hidden:3 * hidden], z[:, 3 * hidden:]
            c = 0.5 * ((1.0 + f) * c + (1.0 + i) * g)
            h = 0.5 * (1.0 + o) * np.tanh(c)
            logits = h @ a[f"gen_head_w{t}"].T + a[f"gen_head_b{t}"]
            logits_all.append(logits)
            if tokens is None:
                assert rng is not None
                cdf = np.cumsum(np.exp(logits - logits.max(axis=1, keepdims=True)), axis=1)
                tok = np.minimum((cdf < rng.random((n, 1)) * cdf[:, -1:]).sum(axis=1), self.sizes[t] - 1)
            else:
                tok = np.asarray(tokens[:, t], np.int64)
            out[:, t] = tok
            if t + 1 < len(self.sizes):
                from_prev = steps[t][tok]
        return out, logits_all

    def logits(self, budgets: np.ndarray, tokens: np.ndarray) -> list[np.ndarray]:
        """Per-step logits with ``tokens`` fed back (to check against the torch generator)."""
        return self._run(budgets, tokens, None)[1]

    def condition(self, budget: float) -> float:
        """The budget the sampler is conditioned on for ``budget`` (the calibration's, else itself)."""
        if "cond_budget" not in self.a:
            return float(budget)
        grid = self.a["cond_budget"]
        j = int(np.clip(np.searchsorted(grid, budget, side="right") - 1, 0, len(grid) - 1))
        return float(min(self.a["cond_value"][j], budget))

    def sample(self, budget: float, n: int, rng: np.random.Generator) -> np.ndarray:
        return self._run(np.full(n, self.condition(budget)), None, rng)[0]

    def conditioned(self, target: float = COND_TARGET, grid: int = COND_GRID, n: int = COND_SAMPLES,
                    steps: int = COND_STEPS, seed: int = 0) -> GeneratorBundle:
        """This bundle with its sampler calibrated (module docstring): on a grid over the budget range,
        the largest conditioning budget in [the first anchor's, b] whose ``n`` samples fit ``b`` at
        least ``target`` of the time, by bisection (fit share falls as the conditioning budget rises);
        then made non-decreasing in ``b`` from the top down, which only lowers it (more samples fit)."""
        rng = np.random.default_rng(seed)
        lo_c = float(self.meta["embedding_range"][0])
        budgets = np.linspace(self.cheapest, self.dearest, grid)

        def share(cond: float, b: float) -> float:
            return float(np.mean(self.latency(self._run(np.full(n, cond), None, rng)[0]) <= b))

        values = np.empty(grid)
        for j, b in enumerate(budgets):
            lo, hi = min(lo_c, b), float(b)
            if share(hi, b) >= target:
                values[j] = hi
                continue
            for _ in range(steps):
                mid = 0.5 * (lo + hi)
                lo, hi = (mid, hi) if share(mid, b) >= target else (lo, mid)
            values[j] = lo
        values = np.minimum.accumulate(values[::-1])[::-1]
        arrays = {**self.a, "cond_budget": budgets, "cond_value": values}
        meta = {k: v for k, v in self.meta.items() if k not in ("format", "version")}
        meta["conditioning"] = {"target": target, "grid": grid, "samples": n}
        return GeneratorBundle.from_bytes(pack_bundle(meta, arrays))

    # ---- the answer --------------------------------------------------------------------------------
    def check_budget(self, budget: float) -> str | None:
        if not isinstance(budget, int | float) or not math.isfinite(budget) or budget <= 0:
            raise InvalidArgumentError(f"budget must be a positive number of ms, got {budget!r}")
        if budget < self.cheapest:
            raise InvalidArgumentError(
                f"budget {budget:g} ms is below the cheapest architecture ({self.cheapest:.4g} ms); "
                f"valid budgets are {self.cheapest:.4g}..{self.dearest:.4g} ms (larger ones are accepted)")
        if budget > self.dearest:
            return (f"budget {budget:g} ms is above the dearest architecture ({self.dearest:.4g} ms): "
                    "every architecture fits")
        return None

    def _pick(self, cand: np.ndarray, lat: np.ndarray, budget_ms: float,
              use_records: bool) -> tuple[np.ndarray, float, float] | None:
        """The final-pick rule: the best-scored fitting arch among ``cand``, the generator's
        archive candidates and (``use_records``) the archs whose record was read."""
        if self._cand_acc is None:  # the archive's candidates (thousands in a large space) scored once
            self._cand_acc = self.accuracy(self._cand_tok) if len(self._cand_tok) else np.zeros(0)
        fit, cand_fit = lat <= budget_ms, self._cand_lat <= budget_ms  # NaN (unknown) never fits
        tok = np.concatenate([cand[fit], self._cand_tok[cand_fit]])
        lats = np.concatenate([lat[fit], self._cand_lat[cand_fit]])
        best = None
        if len(tok):
            acc = np.concatenate([self.accuracy(cand[fit]), self._cand_acc[cand_fit]])
            j = int(np.argmax(acc))
            best = tok[j], float(lats[j]), float(acc[j])
        if use_records and len(self._known_lat):
            # the records' scores are their values: read them as an array, not one lookup per record
            # (16,000 at the paper's query budget); ties go to the candidates, as when every part was
            # one list
            fits = self._known_lat <= budget_ms
            if fits.any():
                r = int(np.argmax(np.where(fits, self._known_acc, -np.inf)))
                if best is None or self._known_acc[r] > best[2]:
                    best = self._known_tok[r], float(self._known_lat[r]), float(self._known_acc[r])
        return best

    def generate(self, budget_ms: float, samples: int = 0, seed: int | None = None,
                 use_records: bool = True) -> dict[str, Any]:
        """Sample candidates for the budget; answer the fitting one ranked best by accuracy.

        The candidates are the generated archs that fit, the generator's archive candidates that
        fit and (``use_records``) the archs whose accuracy record was read and that fit: a
        measured record beats a guess of lower accuracy. Where none of these fits, uniform draws
        are tried, then the cheapest arch is answered, with a warning.
        """
        warning = self.check_budget(budget_ms)
        if samples < 0:
            raise InvalidArgumentError(f"samples must be >= 0, got {samples}")
        rng = np.random.default_rng(seed)
        cand = self.sample(budget_ms, CANDIDATES, rng)
        best = self._pick(cand, self.latency(cand), budget_ms, use_records)
        if best is None:  # the generator misses this budget: uniform draws, then the cheapest arch
            cand = np.stack([rng.integers(s, size=4096) for s in self.sizes], axis=1)
            best = self._pick(cand, self.latency(cand), budget_ms, use_records)
            if best is None:
                t = self.a["cheapest_tokens"].astype(np.int64)
                best = (t, float(self.latency(t[None])[0]), float(self.accuracy(t[None])[0]))
            warning = (warning + "; " if warning else "") + "the generator found no fitting architecture; " \
                "answered from uniform samples"
        tok, lat_ms, acc_v = best
        out: dict[str, Any] = {"arch": self.space.format(self.space.from_tokens(tok.tolist())),
                               "latency_ms": lat_ms, "accuracy": acc_v}
        if warning:
            out["warning"] = warning
        if samples:
            s_tok = self.sample(budget_ms, samples, rng)
            s_lat = self.latency(s_tok)
            fmt = self.space.format
            out["samples"] = [{"arch": fmt(self.space.from_tokens(t.tolist())),
                               "latency_ms": None if math.isnan(v) else float(v)}
                              for t, v in zip(s_tok, s_lat, strict=True)]
        return out
