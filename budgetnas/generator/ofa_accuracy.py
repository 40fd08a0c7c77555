"""Once-for-All's published ImageNet accuracy predictor (MobileNetV3 w1.2) as an accuracy source.

Users of Once-for-All have its ``acc_predictor`` as a file; converted to numpy arrays (``.npz``:
``0_weight`` (400, 128) ... ``6_bias`` (1,), 3 hidden ReLU layers) it answers any arch of the
``ofa-mbv3`` w1.2 space in plain numpy. Its input is OFA's 128-feature encoding: per layer slot
(5 units x 4) a kernel one-hot (features 0..59) and an expand one-hot (60..119), all zeros beyond a
unit's depth, then a resolution one-hot at ``120 + (R - 112) // 16``. It predicts top-1 as a
fraction; this source answers in percent, like every other accuracy record here.

Its answers are accuracy *records* to the methods: each distinct arch asked counts against
``--max-queries`` (through :class:`budgetnas.generator.accuracy.CountingAccuracy`), as a table lookup does.
"""

from __future__ import annotations

import zipfile
import zlib
from pathlib import Path
from tokenize import TokenError
from typing import Any

import numpy as np

from budgetnas.core.errors import DataFileError, InvalidArgumentError
from budgetnas.generator.accuracy import AccuracySource
from budgetnas.luts.token_cost import canonical_tokens
from budgetnas.spaces import SearchSpace

N_FEATURES = 128
_LAYERS = ("0", "2", "4", "6")  # the torch Sequential's Linear indices, as OFA saved them
_SLOTS, _CHOICES = 20, 3  # layer slots (5 units x 4), and kernels = expand ratios per slot
_SLOT_FEATURES = 2 * _SLOTS * _CHOICES  # 120: kernel one-hots (0..59), then expand one-hots (60..119)
_RES_BASE, _RES_STEP, _RES_SLOTS = 112, 16, 8


def load_weights(path: str | Path) -> list[tuple[np.ndarray, np.ndarray]]:
    """[(W (out, in), b (out,))] per layer, checked to be OFA's 128-400-400-400-1 net."""
    p = Path(path)
    arrays: dict[str, np.ndarray] | None = None
    try:
        loaded = np.load(p, allow_pickle=False)
        if isinstance(loaded, np.lib.npyio.NpzFile):  # else a bare .npy array: no named layers
            with loaded as z:
                arrays = {k: np.asarray(z[k], np.float64) for k in z.files}
    except FileNotFoundError:
        raise DataFileError(f"no accuracy predictor file at {p}") from None
    # an empty file is EOFError, a truncated or corrupt zip BadZipFile or zlib.error, a garbled array
    # header SyntaxError or tokenize.TokenError (numpy parses it with ast.literal_eval and tokenize)
    except (OSError, ValueError, EOFError, SyntaxError, TokenError, zipfile.BadZipFile, zlib.error) as exc:
        raise DataFileError(f"{p} is not a numpy .npz file: {str(exc) or type(exc).__name__}") from None
    if arrays is None:
        raise DataFileError(f"{p} is not a numpy .npz file: it holds one array, not Once-for-All's named arrays")
    layers, n_in = [], N_FEATURES
    for i, name in enumerate(_LAYERS):
        w, b = arrays.get(f"{name}_weight"), arrays.get(f"{name}_bias")
        if w is None or b is None:
            raise DataFileError(f"{p}: missing {name}_weight/{name}_bias (expected Once-for-All's acc_predictor "
                                f"arrays {', '.join(f'{n}_weight' for n in _LAYERS)} and biases)")
        n_out = 1 if i == len(_LAYERS) - 1 else w.shape[0]
        if w.shape != (n_out, n_in) or b.shape != (n_out,):
            raise DataFileError(f"{p}: {name}_weight has shape {w.shape} and {name}_bias {b.shape}; expected "
                                f"({n_out}, {n_in}) and ({n_out},)")
        if not (np.isfinite(w).all() and np.isfinite(b).all()):
            raise DataFileError(f"{p}: {name} holds NaN or infinite weights")
        layers.append((w, b))
        n_in = n_out
    return layers


def ofa_features(space: SearchSpace[Any], tokens: np.ndarray, resolution: int | np.ndarray) -> np.ndarray:
    """OFA's 128-feature encoding of ``ofa-mbv3`` token rows at ``resolution`` (one or per row).

    The space's own features hold the same one-hots slot by slot (kernel then expand, zeros past a
    unit's depth); OFA lists every slot's kernel first, then every slot's expand."""
    tok = np.asarray(tokens, np.int64).reshape(-1, len(space.decisions))
    n = len(tok)
    out = np.zeros((n, N_FEATURES))
    per_slot = space.token_features(tok)[:, :_SLOT_FEATURES].reshape(n, _SLOTS, 2, _CHOICES)
    out[:, :_SLOT_FEATURES] = per_slot.transpose(0, 2, 1, 3).reshape(n, _SLOT_FEATURES)
    res = np.broadcast_to(np.asarray(resolution, np.int64), (n,))
    slot_r = (res - _RES_BASE) // _RES_STEP
    if ((slot_r < 0) | (slot_r >= _RES_SLOTS)).any():
        raise InvalidArgumentError(f"Once-for-All's accuracy predictor covers resolutions {_RES_BASE}.."
                                   f"{_RES_BASE + _RES_STEP * _RES_SLOTS - 1}, got {sorted(set(res.tolist()))}")
    out[np.arange(n), _SLOT_FEATURES + slot_r] = 1.0
    return out


def forward(layers: list[tuple[np.ndarray, np.ndarray]], x: np.ndarray) -> np.ndarray:
    for i, (w, b) in enumerate(layers):
        x = x @ w.T + b
        if i < len(layers) - 1:
            x = np.maximum(x, 0.0)
    return np.asarray(x[:, 0])


class OFAPredictorAccuracy(AccuracySource):
    """Top-1 (%) of ``ofa-mbv3`` w1.2 archs from Once-for-All's predictor file (any arch answers)."""

    def __init__(self, space: SearchSpace[Any], path: str | Path) -> None:
        if space.name != "ofa-mbv3" or abs(float(space.describe()["width"]) - 1.2) > 1e-9:
            raise InvalidArgumentError(
                f"Once-for-All's accuracy predictor is for the ofa-mbv3 space at width 1.2, got "
                f"{space.name} {space.describe()}")
        self.space, self.path = space, Path(path)
        self.layers = load_weights(path)

    def lookup(self, tokens: np.ndarray) -> np.ndarray:
        tok = canonical_tokens(self.space, tokens)
        # per row: the space's resolution, or each row's searched one (its last token)
        res = self.space.token_resolutions(tok)
        return 100.0 * forward(self.layers, ofa_features(self.space, tok, res))
