"""Latency lookup tables: the one stats type, the LUT file format, calibration and prediction.

Shared by the profiler (writes LUTs), the LUT server (stores and serves them), the agents and the
generator (reads them), so it lives here, in pure Python + numpy.

LUT file (JSON, ``format: budgetnas-lut``, ``version: 1``)::

    {
      "format": "budgetnas-lut", "version": 1,
      "meta": {
        "space": {"space": "ofa-mbv3", "width": 1.2, "resolution": 224, "num_classes": 1000},
        "device": "my-laptop", "backend": "ort-cpu", "batch": 1, "threads": 1,
        "runtime_version": "onnxruntime 1.32.0", "statistic": "median",
        "environment": {...}, "protocol": {...}, "created": "2026-11-24T05:00:00+00:00"
      },
      "entries": {"<block key>": {"count": 200, "min_ms": ..., "median_ms": ..., "mean_ms": ...,
                                  "p90_ms": ..., "p99_ms": ..., "std_ms": ..., "cv": ...,
                                  "warmup_runs": 10, "seconds": 1.2, "overhead_ms": 0.004,
                                  "noisy": false, "samples_ms": [...]}},
      "calibration": null | {"slope": 0.97, "intercept": 0.12, "n_models": 50, "rel_residual_std": 0.012,
                             "group_scales": {"input:80x80x24": 1.04, ...}}
    }

Calibration: measured ≈ slope · Σ_blocks scale(group of block) · value(block) + intercept. A block's
group is its input shape (``key_group``: the stage it sits in); ``group_scales`` is optional (absent:
every scale is 1, the plain affine fit of the sum). Per-stage scales exist because a block timed
alone and the same block inside a whole model differ by different factors per stage: on ort-cpu at
r160 the last (5x5) stage needed a factor about 1.3 times the other stages'.

``statistic`` names the stat a prediction sums (``median`` for our measurements, ``mean`` for
Once-for-All's YAML, which only has count/mean/std).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from budgetnas.errors import DataFileError, InvalidArgumentError, MissingKeysError
from spaces.base import SearchSpace

LUT_FORMAT = "budgetnas-lut"
LUT_VERSION = 1
STATISTICS = ("median", "mean", "min", "p90")


@dataclass(frozen=True)
class LatencyStats:
    """Summary of repeated timings of one thing, in milliseconds, plus how they were taken."""

    count: int
    mean_ms: float
    std_ms: float
    median_ms: float | None = None
    min_ms: float | None = None
    p90_ms: float | None = None
    p99_ms: float | None = None
    cv: float | None = None
    warmup_runs: int | None = None
    seconds: float | None = None
    overhead_ms: float | None = None
    noisy: bool = False
    samples_ms: tuple[float, ...] | None = field(default=None, compare=False, repr=False)

    @classmethod
    def from_samples(cls, samples_ms: Sequence[float] | np.ndarray, keep_samples: bool = True,
                     **how: Any) -> LatencyStats:
        """Robust statistics of per-call timings (already in ms, overhead already subtracted)."""
        x = np.asarray(samples_ms, dtype=np.float64)
        if x.size == 0 or not np.all(np.isfinite(x)):
            raise InvalidArgumentError("latency samples must be a non-empty list of finite numbers")
        mean = float(x.mean())
        std = float(x.std(ddof=1)) if x.size > 1 else 0.0
        return cls(
            count=int(x.size), mean_ms=mean, std_ms=std, median_ms=float(np.median(x)), min_ms=float(x.min()),
            p90_ms=float(np.percentile(x, 90)), p99_ms=float(np.percentile(x, 99)),
            cv=std / mean if mean > 0 else 0.0,
            samples_ms=tuple(float(v) for v in x) if keep_samples else None, **how,
        )

    def value(self, statistic: str) -> float:
        v = {"median": self.median_ms, "mean": self.mean_ms, "min": self.min_ms, "p90": self.p90_ms}.get(statistic)
        if statistic not in STATISTICS:
            raise InvalidArgumentError(f"statistic {statistic!r} is not one of {list(STATISTICS)}")
        if v is None:
            raise DataFileError(f"entry has no {statistic} (only count/mean/std); use statistic 'mean'")
        return v

    def to_dict(self, samples: bool = True) -> dict[str, Any]:
        d = {k: v for k, v in asdict(self).items() if v is not None}
        if "samples_ms" in d:
            if samples:
                d["samples_ms"] = list(self.samples_ms or ())
            else:
                del d["samples_ms"]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LatencyStats:
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(d) - known
        if unknown:
            raise DataFileError(f"latency stats have unknown fields {sorted(unknown)}")
        try:
            kw = dict(d)
            if kw.get("samples_ms") is not None:
                kw["samples_ms"] = tuple(float(v) for v in kw["samples_ms"])
            stats = cls(**kw)
            if not (stats.count >= 1 and math.isfinite(stats.mean_ms) and stats.mean_ms >= 0 and stats.std_ms >= 0):
                raise ValueError("count >= 1, mean_ms >= 0 and std_ms >= 0 are required")
        except (TypeError, ValueError) as exc:
            raise DataFileError(f"bad latency stats {d!r}: {exc}") from None
        return stats


def key_group(key: str) -> str:
    """The calibration group of a block key: its input shape (``input:HxWxC``), i.e. its stage."""
    for part in key.split("-")[1:]:
        if part.startswith("input:"):
            return part
    return key


GROUP_RIDGE = 0.1  # prior weight pulling each stage's scale to the global slope, relative to the data's


@dataclass(frozen=True)
class Calibration:
    """measured ≈ slope · Σ scale(key_group(k)) · value(k) + intercept, fitted on measured whole models."""

    slope: float
    intercept: float
    n_models: int
    rel_residual_std: float
    group_scales: dict[str, float] = field(default_factory=dict)

    @classmethod
    def fit(cls, raw_ms: Sequence[float] | np.ndarray, measured_ms: Sequence[float] | np.ndarray,
            group_ms: np.ndarray | None = None, groups: Sequence[str] = ()) -> Calibration:
        """The affine fit of the raw sums; with ``group_ms`` (models x groups: each group's share of
        the raw sum, columns named by ``groups``) also one scale per group whose share varies
        between the models (ridge towards the affine slope, so few models cannot run away)."""
        x, y = np.asarray(raw_ms, np.float64), np.asarray(measured_ms, np.float64)
        if x.size < 2 or x.size != y.size:
            raise InvalidArgumentError("calibration needs at least 2 (predicted, measured) pairs of equal length")
        if np.ptp(x) == 0:
            slope, intercept = float(np.mean(y / x)), 0.0
        else:
            slope, intercept = (float(v) for v in np.polyfit(x, y, 1))
        scales: dict[str, float] = {}
        scaled = x
        if group_ms is not None:
            g = np.asarray(group_ms, np.float64)
            if g.shape != (x.size, len(groups)):
                raise InvalidArgumentError(f"group_ms must be {x.size} x {len(groups)}, got {g.shape}")
            scales, intercept = _fit_group_scales(g, list(groups), y, slope, intercept)
            scaled = g @ np.array([scales.get(n, 1.0) for n in groups])
        resid = (y - (slope * scaled + intercept)) / y
        return cls(slope, intercept, int(x.size), float(np.sqrt(np.mean(resid**2))), scales)

    def scale(self, group: str) -> float:
        return self.group_scales.get(group, 1.0)

    def key_scales(self, keys: Sequence[str]) -> np.ndarray:
        """Each block key's factor inside the sum (1 for every key without group scales)."""
        return np.array([self.scale(key_group(k)) for k in keys], np.float64)

    def apply(self, scaled_sum_ms: np.ndarray) -> np.ndarray:
        """``scaled_sum_ms``: the sum of ``key_scales(keys) * values``, i.e. the raw sum when there
        are no group scales."""
        return self.slope * scaled_sum_ms + self.intercept

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if not self.group_scales:
            d.pop("group_scales")  # the plain affine calibration keeps its original shape
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Calibration:
        try:
            scales = {str(k): float(v) for k, v in (d.get("group_scales") or {}).items()}
            if any(not (math.isfinite(v) and v > 0) for v in scales.values()):
                raise ValueError("group scales must be positive numbers")
            return cls(float(d["slope"]), float(d["intercept"]), int(d["n_models"]), float(d["rel_residual_std"]),
                       scales)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise DataFileError(f"bad calibration {d!r}: {exc}") from None


def _fit_group_scales(g: np.ndarray, groups: list[str], y: np.ndarray, slope: float,
                      intercept: float) -> tuple[dict[str, float], float]:
    """Per-group scales (relative to ``slope``) and a new intercept, by ridge least squares.

    Groups whose share is the same in every model (the stem, the head) cannot be told apart from
    the intercept: they keep scale 1. The others fit ``y - slope·fixed ≈ Σ b_g·share_g + c`` with
    a penalty ``GROUP_RIDGE · n·var(share_g) · (b_g - slope)²``; scale_g = b_g / slope.
    """
    n = len(y)
    var = g.var(axis=0)
    free = [i for i in range(len(groups)) if var[i] > 1e-12 * max(float(np.abs(g).max()), 1e-12) ** 2]
    if not free or slope <= 0:
        return {}, intercept
    fixed = [i for i in range(len(groups)) if i not in free]
    target = y - slope * g[:, fixed].sum(axis=1)
    a = np.column_stack([g[:, free], np.ones(n)])
    w = np.sqrt(GROUP_RIDGE * n * var[free])
    prior = np.zeros((len(free), len(free) + 1))
    prior[np.arange(len(free)), np.arange(len(free))] = w
    coef, *_ = np.linalg.lstsq(np.vstack([a, prior]), np.concatenate([target, w * slope]), rcond=None)
    scales = {groups[i]: float(np.clip(coef[j] / slope, 0.25, 4.0)) for j, i in enumerate(free)}
    return scales, float(coef[-1])


@dataclass(frozen=True)
class LUTMeta:
    space: dict[str, Any]
    device: str
    backend: str
    batch: int = 1
    threads: int = 1
    runtime_version: str = "unknown"
    statistic: str = "median"
    environment: dict[str, Any] = field(default_factory=dict)
    protocol: dict[str, Any] = field(default_factory=dict)
    created: str = field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))

    def __post_init__(self) -> None:
        if self.statistic not in STATISTICS:
            raise InvalidArgumentError(f"statistic {self.statistic!r} is not one of {list(STATISTICS)}")
        if "space" not in self.space:
            raise DataFileError("LUT meta 'space' must hold the space description, e.g. {'space': 'ofa-mbv3', ...}")


@dataclass
class LUT:
    """A latency lookup table: metadata, {block key -> stats}, optional calibration."""

    meta: LUTMeta
    entries: dict[str, LatencyStats]
    calibration: Calibration | None = None

    # ---- JSON ------------------------------------------------------------------------------
    def to_json_dict(self, samples: bool = True) -> dict[str, Any]:
        return {
            "format": LUT_FORMAT, "version": LUT_VERSION, "meta": asdict(self.meta),
            "entries": {k: self.entries[k].to_dict(samples) for k in sorted(self.entries)},
            "calibration": self.calibration.to_dict() if self.calibration else None,
        }

    @classmethod
    def from_json_dict(cls, d: Any, source: str = "LUT") -> LUT:
        if not isinstance(d, dict) or d.get("format") != LUT_FORMAT:
            raise DataFileError(f"{source}: not a budgetnas LUT (expected \"format\": \"{LUT_FORMAT}\")")
        if d.get("version") != LUT_VERSION:
            raise DataFileError(f"{source}: LUT version {d.get('version')!r} is not supported (expected {LUT_VERSION})")
        try:
            meta = LUTMeta(**d["meta"])
        except (KeyError, TypeError) as exc:
            raise DataFileError(f"{source}: bad meta: {exc}") from None
        if not isinstance(d.get("entries"), dict):
            raise DataFileError(f"{source}: 'entries' must be an object of block key -> stats")
        entries = {}
        for k, v in d["entries"].items():
            if not isinstance(v, dict):
                raise DataFileError(f"{source}: entry {k!r} must be an object")
            entries[k] = LatencyStats.from_dict(v)
        cal = Calibration.from_dict(d["calibration"]) if d.get("calibration") else None
        return cls(meta, entries, cal)

    def save(self, path: str | Path, samples: bool = True) -> None:
        write_atomic(path, json.dumps(self.to_json_dict(samples), indent=1))

    @classmethod
    def load(cls, path: str | Path) -> LUT:
        p = Path(path)
        try:
            text = p.read_text()
        except OSError as exc:
            raise DataFileError(f"cannot read LUT {p}: {exc.strerror}") from None
        if p.suffix in (".yaml", ".yml"):
            raise DataFileError(f"{p} looks like Once-for-All YAML; import it with LUT.from_ofa_yaml / `lut import`")
        try:
            return cls.from_json_dict(json.loads(text), str(p))
        except json.JSONDecodeError as exc:
            raise DataFileError(f"{p}: not JSON: {exc}") from None

    # ---- Once-for-All YAML ---------------------------------------------------------------------
    def to_ofa_yaml(self) -> str:
        """OFA's format: key -> {count, mean, std} in ms (our statistic is written as 'mean')."""
        out = {k: {"count": int(s.count), "mean": float(s.value(self.meta.statistic)), "std": float(s.std_ms)}
               for k, s in sorted(self.entries.items())}
        return yaml.safe_dump(out, sort_keys=True)

    @classmethod
    def from_ofa_yaml(cls, text: str, meta: LUTMeta, source: str = "YAML") -> LUT:
        try:
            raw = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise DataFileError(f"{source}: not YAML: {exc}") from None
        if not isinstance(raw, dict) or not raw:
            raise DataFileError(f"{source}: expected a mapping of block key -> {{count, mean, std}}")
        entries = {}
        for k, v in raw.items():
            if not isinstance(v, dict) or not {"count", "mean", "std"} <= set(v):
                raise DataFileError(f"{source}: entry {k!r} must have count, mean and std")
            try:
                mean, std = float(v["mean"]), float(v["std"])
                entries[str(k)] = LatencyStats(count=int(v["count"]), mean_ms=mean, std_ms=std,
                                               cv=std / mean if mean > 0 else 0.0)
            except (TypeError, ValueError):
                raise DataFileError(f"{source}: entry {k!r} has non-numeric count/mean/std") from None
        return cls(replace(meta, statistic="mean"), entries)

    # ---- coverage ------------------------------------------------------------------------------
    def missing_keys(self, keys: Iterable[str]) -> list[str]:
        return sorted(set(keys) - set(self.entries))


def write_atomic(path: str | Path, text: str) -> None:
    """Write to a temp file beside ``path`` then rename, so a failure leaves nothing partial."""
    p = Path(path)
    if p.is_dir():
        raise DataFileError(f"cannot write {p}: it is a directory")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", dir=p.parent if str(p.parent) else ".")
    except OSError as exc:
        raise DataFileError(f"cannot write {p}: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@dataclass(frozen=True)
class Prediction:
    arch: str
    latency_ms: float
    low_ms: float
    high_ms: float
    raw_ms: float


class LUTPredictor:
    """Vectorised prediction over an in-memory LUT: sum of block entries, then calibration.

    Error band: with calibration, ±2 relative residual std of the calibration fit; without, ±2
    standard deviations of the sum of independent block timings.
    """

    def __init__(self, lut: LUT, space: SearchSpace[Any]) -> None:
        self.lut, self.space = lut, space
        keys = sorted(lut.entries)
        self._index = {k: i for i, k in enumerate(keys)}
        self._keys = keys
        stat = lut.meta.statistic
        self._value = np.array([lut.entries[k].value(stat) for k in keys], np.float64)
        self._var = np.array([lut.entries[k].std_ms ** 2 for k in keys], np.float64)

    def key_indices(self, archs: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
        """Concatenated LUT row indices of every arch's blocks and the start offset of each arch."""
        idx: list[int] = []
        starts = np.empty(len(archs), np.int64)
        missing: list[str] = []
        index = self._index
        for n, arch in enumerate(archs):
            starts[n] = len(idx)
            for k in self.space.block_keys(arch):
                i = index.get(k)
                if i is None:
                    missing.append(k)
                else:
                    idx.append(i)
        if missing:
            raise MissingKeysError(missing)
        return np.asarray(idx, np.int64), starts

    def raw(self, archs: Sequence[Any]) -> np.ndarray:
        if not archs:
            return np.zeros(0)
        idx, starts = self.key_indices(archs)
        return np.add.reduceat(self._value[idx], starts)

    def group_sums(self, archs: Sequence[Any]) -> tuple[np.ndarray, list[str]]:
        """Each arch's raw sum split by calibration group (``key_group``): (archs x groups, names)."""
        groups = sorted({key_group(k) for k in self._keys})
        col = np.array([groups.index(key_group(k)) for k in self._keys], np.int64)
        out = np.zeros((len(archs), len(groups)))
        if archs:
            idx, starts = self.key_indices(archs)
            rows = np.repeat(np.arange(len(archs)), np.diff(np.append(starts, len(idx))))
            np.add.at(out, (rows, col[idx]), self._value[idx])
        return out, groups

    def predict(self, archs: Sequence[Any]) -> list[Prediction]:
        if not archs:
            return []
        idx, starts = self.key_indices(archs)
        raw = np.add.reduceat(self._value[idx], starts)
        cal = self.lut.calibration
        if cal is not None:
            scaled = np.add.reduceat((self._value * cal.key_scales(self._keys))[idx], starts) \
                if cal.group_scales else raw
            lat = cal.apply(scaled)
            half = 2.0 * cal.rel_residual_std * lat
        else:
            lat = raw
            half = 2.0 * np.sqrt(np.add.reduceat(self._var[idx], starts))
        fmt = self.space.format
        return [Prediction(fmt(a), float(lat[i]), float(lat[i] - half[i]), float(lat[i] + half[i]), float(raw[i]))
                for i, a in enumerate(archs)]

    def breakdown(self, arch: Any) -> list[tuple[str, float]]:
        stat = self.lut.meta.statistic
        missing = self.lut.missing_keys(self.space.block_keys(arch))
        if missing:
            raise MissingKeysError(missing)
        return [(k, self.lut.entries[k].value(stat)) for k in self.space.block_keys(arch)]
