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
                             "group_scales": {"expanded_conv@input:80x80x24": 1.04, ...}}
    }

Calibration: measured ≈ slope · Σ_blocks scale(group of block) · value(block) + intercept. A block's
group is its op at its input shape (``key_group``: what it is, in the stage it sits in);
``group_scales`` is optional (absent: every scale is 1, the plain affine fit of the sum). Group
scales exist because a block timed alone and the same block inside a whole model differ by
different factors per stage and per op: on ort-cpu at r160 the last (5x5) stage needed a factor
about 1.3 times the other stages'; nb201's pools and 1x1 convs about half its 3x3 convs'.

``statistic`` names the stat a prediction sums (``median`` for our measurements, ``mean`` for
Once-for-All's YAML, which only has count/mean/std).
"""

from __future__ import annotations

import itertools
import json
import math
import numbers
import os
import re
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from budgetnas.core.errors import BudgetNASError, DataFileError, InvalidArgumentError, MissingKeysError
from budgetnas.core.jsonlimits import too_deep
from budgetnas.core.text import is_printable
from budgetnas.spaces.base import SearchSpace, whole

LUT_FORMAT = "budgetnas-lut"
LUT_VERSION = 1
STATISTICS = ("median", "mean", "min", "p90")
MAX_KEPT_SAMPLES = 20_000  # samples kept beside a measurement's statistics, at most (~400 KB of JSON each)
# What a LUT sums when nobody says. The min reproduces better between sessions on small models (whole
# models at r128: 0.7% RMS vs 2.9%), but a model's fastest run is not the sum of its blocks' fastest runs:
# at ofa-mbv3 r160/r224 (5-11 ms models) the min's held-out fidelity is 65-77% within ±5% against the
# median's 86-94% (bench/results/lut_fidelity). The median is the default; the min is a choice.
DEFAULT_STATISTIC = "median"


# ---- reading files a user gives us -------------------------------------------------------------
# One strict reader per format, shared by LUT files, the importers and the server: duplicate keys,
# NaN/Infinity, numbers out of range, nesting deeper than MAX_NESTING and non-UTF-8 text are
# DataFileErrors naming the source, never another exception (a LUT file is 4 levels deep; the rest
# is room for free-form meta such as the environment).
MAX_NESTING = 64


def brief(v: Any) -> str:
    """repr(v), cut to 80 characters for error messages."""
    r = repr(v)
    return r if len(r) <= 80 else r[:77] + "..."


def read_text_file(path: str | Path, what: str = "file") -> str:
    p = Path(path)
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise DataFileError(f"cannot read {what} {p}: {exc.strerror}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DataFileError(f"{p}: not UTF-8 text (byte {exc.start})") from None


def _check_nesting(value: Any, source: str) -> None:
    if too_deep(value, MAX_NESTING):
        raise DataFileError(f"{source}: nested deeper than {MAX_NESTING} levels")


def parse_json(text: str, source: str = "JSON") -> Any:
    """Strict JSON: no duplicate keys, no NaN/Infinity, no number beyond a float, bounded nesting."""
    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, v in items:
            if k in out:
                raise DataFileError(f"{source}: duplicate key {brief(k)}")
            out[k] = v
        return out

    def constant(name: str) -> Any:
        raise DataFileError(f"{source}: {name} is not a JSON number")

    def real(s: str) -> float:
        x = float(s)
        if not math.isfinite(x):
            raise DataFileError(f"{source}: number {brief(s)} is out of range")
        return x

    try:
        value = json.loads(text, object_pairs_hook=pairs, parse_constant=constant, parse_float=real)
    except DataFileError:
        raise
    except RecursionError:
        raise DataFileError(f"{source}: nested deeper than {MAX_NESTING} levels") from None
    except ValueError as exc:  # JSONDecodeError, or an integer of more than 4300 digits
        raise DataFileError(f"{source}: not JSON: {exc}") from None
    _check_nesting(value, source)
    return value


class _DuplicateKey(Exception):
    pass


class _StrictYAMLLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys and reads 1e-3 as a number (YAML 1.2; 1.1 says text)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key, line = self.construct_object(key_node, deep=True), key_node.start_mark.line + 1
            try:
                if key in seen:
                    raise _DuplicateKey(f"duplicate key {brief(key)} (lines {seen[key]} and {line})")
                seen[key] = line
            except TypeError:  # an unhashable key: the base class raises its own error
                continue
        return super().construct_mapping(node, deep)


_StrictYAMLLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float", re.compile(r"^[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)[eE][-+]?[0-9]+$"),
    list("-+0123456789."))


def parse_yaml(text: str, source: str = "YAML") -> Any:
    """Strict YAML (see ``_StrictYAMLLoader``) with bounded nesting; every failure a DataFileError."""
    try:
        value = yaml.load(text, Loader=_StrictYAMLLoader)  # a SafeLoader subclass
    except _DuplicateKey as exc:
        raise DataFileError(f"{source}: {exc}") from None
    except RecursionError:
        raise DataFileError(f"{source}: nested deeper than {MAX_NESTING} levels") from None
    except (yaml.YAMLError, ValueError, OverflowError) as exc:  # bad syntax, an impossible date
        raise DataFileError(f"{source}: not YAML: {brief(str(exc))}") from None
    _check_nesting(value, source)
    return value



# ---- the one latency-stats type ----------------------------------------------------------------
# Bounds every path in shares (results, imports, LUT files), so both databases store the same
# values and every sum over an architecture stays finite: 1e9 ms is 11.6 days per call.
MAX_MS = 1e9
MAX_COUNT = 10**9
_MS_FIELDS = ("mean_ms", "std_ms", "median_ms", "min_ms", "p90_ms", "p99_ms", "overhead_ms", "reference_ms")
_ORDER = ("min_ms", "median_ms", "p90_ms", "p99_ms")  # each present one <= the next present one
_REL_TOL = 1e-9  # percentiles and means computed in floating point may cross by a rounding error


def _bad(name: str, v: Any, why: str) -> DataFileError:
    return DataFileError(f"{name}: {v!r} {why}" if len(repr(v)) <= 40 else f"{name}: {why}")


def _real(name: str, v: Any, limit: float = MAX_MS) -> float:
    """A finite number in [0, limit] (ints and floats, never bools or strings)."""
    if isinstance(v, bool | np.bool_) or not isinstance(v, numbers.Real):
        raise _bad(name, v, "is not a number")
    if isinstance(v, numbers.Integral) and not 0 <= int(v) <= limit:  # before float(): 10**400 overflows
        raise _bad(name, v, f"is outside [0, {limit:g}]")
    x = float(v)
    if not math.isfinite(x):
        raise _bad(name, v, "is not a finite number")
    if not 0.0 <= x <= limit:
        raise _bad(name, v, f"is outside [0, {limit:g}]")
    return x


def _finite(name: str, v: Any) -> float:
    """A finite number of either sign, within +-MAX_MS."""
    if isinstance(v, bool | np.bool_) or not isinstance(v, numbers.Real):
        raise _bad(name, v, "is not a number")
    if isinstance(v, numbers.Integral) and abs(int(v)) > MAX_MS:
        raise _bad(name, v, f"is outside [-{MAX_MS:g}, {MAX_MS:g}]")
    x = float(v)
    if not (math.isfinite(x) and abs(x) <= MAX_MS):
        raise _bad(name, v, f"is not a finite number within [-{MAX_MS:g}, {MAX_MS:g}]")
    return x


def _whole(name: str, v: Any, minimum: int) -> int:
    """An integer in [minimum, MAX_COUNT] (``budgetnas.spaces.base.whole``: 3.0 is accepted, 1.5 and inf are not)."""
    n = whole(v)
    if n is None:
        raise _bad(name, v, "is not an integer")
    if not minimum <= n <= MAX_COUNT:
        raise _bad(name, v, f"is outside [{minimum}, {MAX_COUNT}]")
    return n


def _samples(v: Any, count: int) -> tuple[float, ...]:
    if not isinstance(v, list | tuple | np.ndarray):
        raise _bad("samples_ms", v, "is not a list of numbers")
    if len(v) != count:
        raise DataFileError(f"samples_ms: {len(v)} sample(s) but count is {count}")
    if isinstance(v, np.ndarray):
        if v.dtype.kind not in "fiu":
            raise DataFileError("samples_ms: must be numbers")
        x = v.astype(np.float64)
    else:
        if any(isinstance(e, bool) or not isinstance(e, int | float) for e in v):
            raise DataFileError("samples_ms: every sample must be a number")
        try:
            x = np.asarray(v, dtype=np.float64)
        except OverflowError:
            raise DataFileError(f"samples_ms: every sample must be within [0, {MAX_MS:g}]") from None
    if not np.all(np.isfinite(x)):
        raise DataFileError("samples_ms: every sample must be a finite number")
    if x.size and not (x.min() >= 0.0 and x.max() <= MAX_MS):
        raise DataFileError(f"samples_ms: every sample must be within [0, {MAX_MS:g}]")
    return tuple(x.tolist())


@dataclass(frozen=True)
class LatencyStats:
    """Summary of repeated timings of one thing, in milliseconds, plus how they were taken.

    The one validator of latency numbers: every construction (``from_samples``, ``from_dict``,
    importers, results posted to the server, LUT files) checks that times, ``cv`` and ``seconds``
    are finite numbers in [0, ``MAX_MS``], ``count`` is an integer >= 1 (and the number of
    samples when they are kept), ``warmup_runs`` an integer >= 0, ``noisy`` and ``disturbed`` bools, and that
    min <= median <= p90 <= p99 and min <= mean where present. Errors are ``DataFileError``s
    that name the field.
    """

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
    # the fixed reference workload's median beside this entry's visits (budgetnas.profiler.reference): the
    # same number from two sessions says how comparable they were; ``disturbed``: it ran slower
    # than its session's usual by more than the protocol allows, even after re-measuring
    reference_ms: float | None = None
    disturbed: bool = False
    samples_ms: tuple[float, ...] | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        put = object.__setattr__  # frozen: normalise once here (3.0 -> 3, lists -> tuples)
        put(self, "count", _whole("count", self.count, 1))
        for name in (*_MS_FIELDS, "cv", "seconds"):
            v = getattr(self, name)
            if v is not None or name in ("mean_ms", "std_ms"):
                put(self, name, _real(name, v))
        if self.warmup_runs is not None:
            put(self, "warmup_runs", _whole("warmup_runs", self.warmup_runs, 0))
        for flag in ("noisy", "disturbed"):
            if not isinstance(getattr(self, flag), bool | np.bool_):
                raise _bad(flag, getattr(self, flag), "is not true or false")
            put(self, flag, bool(getattr(self, flag)))
        if self.samples_ms is not None:
            put(self, "samples_ms", _samples(self.samples_ms, self.count))
        present = [(n, getattr(self, n)) for n in _ORDER if getattr(self, n) is not None]
        pairs = list(itertools.pairwise(present))
        if self.min_ms is not None:
            pairs.append((("min_ms", self.min_ms), ("mean_ms", self.mean_ms)))
        for (lo_name, lo), (hi_name, hi) in pairs:
            if lo > hi + _REL_TOL * max(abs(lo), abs(hi)) + 1e-12:
                raise DataFileError(f"{lo_name} {lo!r} is greater than {hi_name} {hi!r}")

    @classmethod
    def from_samples(cls, samples_ms: Sequence[float] | np.ndarray, keep_samples: bool = True,
                     **how: Any) -> LatencyStats:
        """Robust statistics of per-call timings (already in ms, overhead already subtracted). The samples
        are kept (``keep_samples``) only up to ``MAX_KEPT_SAMPLES`` of them: a sub-microsecond block timed
        for seconds makes millions, whose list no result body may carry (the server's limit is 16 MiB)."""
        x = np.asarray(samples_ms, dtype=np.float64)
        if x.size == 0 or not (np.all(np.isfinite(x)) and x.min() >= 0.0 and x.max() <= MAX_MS):
            raise InvalidArgumentError(f"latency samples must be a non-empty list of numbers in [0, {MAX_MS:g}]")
        mean = float(x.mean())
        std = float(x.std(ddof=1)) if x.size > 1 else 0.0
        return cls(
            count=int(x.size), mean_ms=mean, std_ms=std, median_ms=float(np.median(x)), min_ms=float(x.min()),
            p90_ms=float(np.percentile(x, 90)), p99_ms=float(np.percentile(x, 99)),
            cv=std / mean if mean > 0 else 0.0,
            samples_ms=tuple(float(v) for v in x) if keep_samples and x.size <= MAX_KEPT_SAMPLES else None, **how,
        )

    def value(self, statistic: str) -> float:
        v = {"median": self.median_ms, "mean": self.mean_ms, "min": self.min_ms, "p90": self.p90_ms}.get(statistic)
        if statistic not in STATISTICS:
            raise InvalidArgumentError(f"statistic {statistic!r} is not one of {list(STATISTICS)}")
        if v is None:
            raise DataFileError(f"latency stats have no {statistic}_ms, which the statistic {statistic!r} needs "
                                "(only 'mean' works with count/mean/std alone)")
        return v

    def to_dict(self, samples: bool = True) -> dict[str, Any]:
        d = {k: v for k, v in asdict(self).items() if v is not None}
        if not self.disturbed:  # absent means false: stats taken before the flag existed read alike
            del d["disturbed"]
        if "samples_ms" in d:
            if samples:
                d["samples_ms"] = list(self.samples_ms or ())
            else:
                del d["samples_ms"]
        return d

    @classmethod
    def from_dict(cls, d: Any) -> LatencyStats:
        """Stats from their JSON object (``to_dict``); every field is checked (see the class)."""
        return cls(**_fields_of(cls, d, "latency stats", ("count", "mean_ms", "std_ms")))


def _fields_of(cls: type, d: Any, what: str, required: tuple[str, ...]) -> dict[str, Any]:
    """``d`` as the JSON object of the dataclass ``cls``, refused by name when it is not an object,
    has a field ``cls`` lacks, or lacks a ``required`` one."""
    if not isinstance(d, dict):
        raise DataFileError(f"{what} must be an object of {', '.join(required)}, ...")
    unknown = set(d) - set(cls.__dataclass_fields__)  # type: ignore[attr-defined]
    if unknown:
        raise DataFileError(f"{what}: unknown fields {sorted(map(str, unknown))[:10]}")
    missing = [f for f in required if f not in d]
    if missing:
        raise DataFileError(f"{what} lacks {', '.join(missing)}")
    return d


def key_group(key: str) -> str:
    """The calibration group of a block key: its operation at its input shape (``op@input:HxWxC``).

    A block timed alone and inside a whole model differ by a factor that depends on where it sits
    (ofa-mbv3's one block op: x0.9-1.2 across stages) and on what it is (nb201's tiny ops alone pay
    per-graph costs the whole model pays once: a 1x1 conv or a pool there runs at ~0.4-0.7x its
    LUT value, a 3x3 conv at ~1x). Calibrations stored before groups named their op (``input:...``)
    still apply: :meth:`Calibration.scale` falls back to the shape alone."""
    op, *rest = key.split("-")
    for part in rest:
        if part.startswith("input:"):
            return f"{op}@{part}"
    return key


@dataclass(frozen=True)
class Calibration:
    """measured ≈ slope · Σ scale(key_group(k)) · value(k) + intercept, fitted on measured whole models.

    Every construction is checked (``DataFileError`` naming the field): slope and intercept finite
    within ±``MAX_MS``, ``n_models`` a whole number, ``rel_residual_std`` in [0, ``MAX_MS``], group
    scales positive and finite, so no stored calibration can hold NaN or Infinity (which SQLite
    would keep and PostgreSQL refuse) and break a LUT's predict and export for good.
    """

    slope: float
    intercept: float
    n_models: int
    rel_residual_std: float
    group_scales: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        put = object.__setattr__  # frozen: normalise once here (numpy floats -> float, 3.0 -> 3)
        put(self, "slope", _finite("calibration.slope", self.slope))
        put(self, "intercept", _finite("calibration.intercept", self.intercept))
        put(self, "n_models", _whole("calibration.n_models", self.n_models, 0))
        put(self, "rel_residual_std", _real("calibration.rel_residual_std", self.rel_residual_std))
        if not isinstance(self.group_scales, dict):
            raise DataFileError("calibration.group_scales must be an object of group -> positive number")
        scales = {str(k): _finite(f"calibration.group_scales.{k}", v) for k, v in self.group_scales.items()}
        if any(v <= 0 for v in scales.values()):  # the fit's ridge keeps them in [0.25, 4]
            raise DataFileError("calibration.group_scales: group scales must be positive numbers")
        put(self, "group_scales", scales)

    @classmethod
    def fit(cls, raw_ms: Sequence[float] | np.ndarray, measured_ms: Sequence[float] | np.ndarray,
            group_ms: np.ndarray | None = None, groups: Sequence[str] = (),
            names: Sequence[str] = (), ridge: float | None = None) -> Calibration:
        """The affine fit of the raw sums; with ``group_ms`` (models x groups: each group's share of
        the raw sum, columns named by ``groups``) also one scale per group whose share varies
        between the models (ridge towards the affine slope, so few models cannot run away; its strength
        ``ridge`` in models, by default chosen by the data: :func:`_fit_group_scales`).

        Refuses (``InvalidArgumentError``, naming the model by ``names`` when given) measurements
        that are not finite numbers > 0 ms (the residuals are relative to them) and fits with no
        usable slope: every raw sum 0, or measured latencies that do not grow with the raw sums.
        """
        x, y = np.asarray(raw_ms, np.float64), np.asarray(measured_ms, np.float64)
        if ridge is not None and not (math.isfinite(ridge) and ridge >= 0):
            raise InvalidArgumentError(f"calibration: ridge must be a finite number >= 0 (models), got {ridge!r}")
        if x.ndim != 1 or x.size < 2 or x.shape != y.shape:
            raise InvalidArgumentError("calibration needs at least 2 (predicted, measured) pairs of equal length")

        def model(i: int) -> str:
            return f"model {names[i]!r}" if len(names) == x.size else f"model #{i}"

        # measured > 0 (the residuals are relative to it); a raw sum may be 0 (all its entries 0 ms)
        for what, v, ok, bound in (("measured latency", y, y > 0, "in (0"), ("raw LUT sum", x, x >= 0, "in [0")):
            bad = np.flatnonzero(~(np.isfinite(v) & ok & (v <= MAX_MS)))
            if bad.size:
                i = int(bad[0])
                raise InvalidArgumentError(f"calibration: {model(i)}'s {what} is {float(v[i])!r} ms; calibration "
                                           f"needs every {what} {bound}, {MAX_MS:g}] ms")
        rel = 1.0 / y  # every fit here is relative least squares: residuals as a share of the measured latency
        if np.ptp(x) == 0:
            if x[0] <= 0:
                raise InvalidArgumentError("calibration: every model's raw LUT sum is 0 ms, so there is no slope "
                                           "to fit (the LUT's entries are all 0 ms)")
            slope, intercept = float(np.mean(y / x)), 0.0
        else:
            # relative least squares (residuals / measured): an error matters as a share of the latency,
            # as every figure judges it; absolute ones would let the largest models set the fit
            slope, intercept = (float(v) for v in np.polyfit(x, y, 1, w=rel))
        if not (math.isfinite(slope) and slope > 0):
            raise InvalidArgumentError(f"calibration: the fitted slope is {slope!r}: the measured latencies do not "
                                       "grow with the LUT's raw sums, so no calibration can be fitted")
        scales: dict[str, float] = {}
        scaled = x
        if group_ms is not None:
            g = np.asarray(group_ms, np.float64)
            if g.shape != (x.size, len(groups)):
                raise InvalidArgumentError(f"group_ms must be {x.size} x {len(groups)}, got {g.shape}")
            if not np.all(np.isfinite(g)):
                raise InvalidArgumentError("calibration: group_ms must be finite numbers")
            scales, intercept = _fit_group_scales(g, list(groups), y, rel, slope, intercept, ridge)
            scaled = g @ np.array([scales.get(n, 1.0) for n in groups])
        resid = (y - (slope * scaled + intercept)) / y
        try:
            return cls(slope, intercept, int(x.size), float(np.sqrt(np.mean(resid**2))), scales)
        except DataFileError as exc:  # e.g. an intercept beyond MAX_MS: a fit no LUT could use
            raise InvalidArgumentError(f"calibration: the fit is degenerate ({exc})") from None

    def scale(self, group: str) -> float:
        if group in self.group_scales:
            return self.group_scales[group]
        return self.group_scales.get(group.partition("@")[2], 1.0)  # a calibration stored with shape-only groups

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
    def from_dict(cls, d: Any) -> Calibration:
        d = _fields_of(cls, d, "calibration", ("slope", "intercept", "n_models", "rel_residual_std"))
        raw_scales = d.get("group_scales") or {}
        if not isinstance(raw_scales, dict):
            raise DataFileError("calibration.group_scales must be an object of group -> positive number")
        return cls(d["slope"], d["intercept"], d["n_models"], d["rel_residual_std"], raw_scales)


def _fit_group_scales(g: np.ndarray, groups: list[str], y: np.ndarray, rel: np.ndarray, slope: float,
                      intercept: float, ridge: float | None = None) -> tuple[dict[str, float], float]:
    """Per-group scales (relative to ``slope``) and a new intercept, by ridge least squares whose strength
    the data choose.

    Groups whose share is the same in every model (the stem, the head) cannot be told apart from
    the intercept: they keep scale 1. The others fit ``y - slope·fixed ≈ Σ b_g·share_g + c``
    relative to ``y`` (each row times ``rel = 1/y``, as the affine fit) with a penalty
    ``λ · var(share_g / y) · (b_g - slope)²``; scale_g = b_g / slope. ``λ`` counts in models: at
    ``λ = n`` the prior weighs as much as the data. Unless ``ridge`` gives it, it is the λ of
    :data:`RIDGE_GRID` that maximises the restricted marginal likelihood (empirical Bayes: each
    ``b_g - slope`` a priori normal, the intercept free). So a few models whose stages share one
    factor stay near the affine fit, while many models, or stages that really differ (nb201's ops),
    get their own scales; no fixed λ does both (``bench/calibration_ridge.py`` on stored runs).
    """
    var = g.var(axis=0)
    free = [i for i in range(len(groups)) if var[i] > 1e-12 * max(float(np.abs(g).max()), 1e-12) ** 2]
    if not free or slope <= 0:
        return {}, intercept
    fixed = [i for i in range(len(groups)) if i not in free]
    x = g[:, free] * rel[:, None]  # relative shares
    # the deviations d_g = b_g - slope: what the prior pulls to 0
    target = (y - slope * g[:, fixed].sum(axis=1)) * rel - slope * x.sum(axis=1)
    sd2 = np.maximum(x.var(axis=0), 1e-300)
    lam = _evidence_ridge(x, rel, target, sd2) if ridge is None else ridge
    a = np.column_stack([x, rel])
    penalty = np.diag(np.append(lam * sd2, 0.0))  # the intercept is not pulled
    coef = np.linalg.lstsq(a.T @ a + penalty, a.T @ target, rcond=None)[0]
    scales = {groups[i]: float(np.clip(1.0 + coef[j] / slope, 0.25, 4.0)) for j, i in enumerate(free)}
    return scales, float(coef[-1])


RIDGE_GRID = np.logspace(-2, 4, 31)  # λ in models, from none to far more than any fit has


def _evidence_ridge(x: np.ndarray, one: np.ndarray, t: np.ndarray, sd2: np.ndarray) -> float:
    """The λ of :data:`RIDGE_GRID` with the highest restricted likelihood of ``t = x·d + c·one + e``,
    ``d_j ~ N(0, σ²/(λ sd2_j))``, ``e ~ N(0, σ²)``, σ² profiled out and ``c`` projected out (REML).

    Worked in the groups' dimension (p x p, by the matrix determinant lemma and Woodbury's identity),
    never the models' (n x n), so a fit on thousands of models costs what one on a dozen does."""
    def project(v: np.ndarray) -> np.ndarray:  # off the intercept's column
        return v - np.multiply.outer(one, one @ v) / float(one @ one)

    xk, tk = project(x), project(t)
    gram, xt, tt = xk.T @ xk, xk.T @ tk, float(tk @ tk)
    m = t.size - 1  # the contrasts left once the intercept is projected out
    best, best_lam = -np.inf, float(RIDGE_GRID[-1])
    for lam in RIDGE_GRID:
        prior = np.diag(lam * sd2)  # the inverse prior covariance of d, in units of σ²
        inner = prior + gram
        _, logdet = np.linalg.slogdet(inner)  # log det(I + xk prior⁻¹ xk') = log det(inner) - log det(prior)
        logdet -= float(np.sum(np.log(lam * sd2)))
        quad = tt - float(xt @ np.linalg.solve(inner, xt))
        if quad <= 0:  # an exact fit: every λ explains it; keep the strongest prior
            break
        ll = -0.5 * (logdet + m * np.log(quad / m))
        if ll > best:
            best, best_lam = ll, float(lam)
    return best_lam


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
        # the same bounds as the REST schema (LutIn), so a file imports on SQLite and PostgreSQL alike
        if self.statistic not in STATISTICS:
            raise InvalidArgumentError(f"statistic {self.statistic!r} is not one of {list(STATISTICS)}")
        if not isinstance(self.space, dict) or not isinstance(self.space.get("space"), str):
            raise DataFileError("LUT meta 'space' must hold the space description, e.g. {'space': 'ofa-mbv3', ...}")
        for name, most in (("device", 200), ("backend", 100), ("runtime_version", 200), ("created", 200)):
            v = getattr(self, name)  # the lengths of budgetnas.db.models' columns (NAME_LEN, BACKEND_LEN)
            if not isinstance(v, str) or not 1 <= len(v) <= most or not is_printable(v):
                raise _bad(f"meta.{name}", v, f"must be text of 1 to {most} printable characters")
        for name, lo, hi in (("batch", 1, 4096), ("threads", 0, 1024)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
                raise _bad(f"meta.{name}", v, f"must be an integer in [{lo}, {hi}]")
        for name in ("environment", "protocol"):
            if not isinstance(getattr(self, name), dict):
                raise DataFileError(f"meta.{name}: must be an object")


@dataclass
class LUT:
    """A latency lookup table: metadata, {block key -> stats}, optional calibration."""

    meta: LUTMeta
    entries: dict[str, LatencyStats]
    calibration: Calibration | None = None

    def __post_init__(self) -> None:
        # a LUT whose entries lack its statistic could never predict: refuse it at the door
        stat = self.meta.statistic
        lacking = [k for k, e in self.entries.items() if getattr(e, f"{stat}_ms") is None]
        if lacking:
            raise DataFileError(f"{len(lacking)} entr{'y' if len(lacking) == 1 else 'ies'} lack {stat}_ms, which "
                                f"the LUT's statistic {stat!r} needs: {', '.join(sorted(lacking)[:3])}")

    # ---- JSON ------------------------------------------------------------------------------
    def to_json_dict(self, samples: bool = True) -> dict[str, Any]:
        return {
            "format": LUT_FORMAT, "version": LUT_VERSION, "meta": asdict(self.meta),
            "entries": {k: self.entries[k].to_dict(samples) for k in sorted(self.entries)},
            "calibration": self.calibration.to_dict() if self.calibration else None,
        }

    def to_json_text(self, samples: bool = True) -> str:
        """The LUT file's text; strict JSON (no NaN/Infinity), so ``from_json_text`` reads it back."""
        try:
            return json.dumps(self.to_json_dict(samples), indent=1, allow_nan=False)
        except ValueError as exc:  # NaN or Infinity in free-form meta (environment, protocol)
            raise DataFileError(f"LUT cannot be written as JSON: {exc}") from None

    @classmethod
    def from_json_dict(cls, d: Any, source: str = "LUT") -> LUT:
        if not isinstance(d, dict) or d.get("format") != LUT_FORMAT:
            raise DataFileError(f"{source}: not a budgetnas LUT (expected \"format\": \"{LUT_FORMAT}\")")
        if d.get("version") != LUT_VERSION:
            raise DataFileError(f"{source}: LUT version {d.get('version')!r} is not supported (expected {LUT_VERSION})")
        unknown = set(d) - {"format", "version", "meta", "entries", "calibration"}
        if unknown:
            raise DataFileError(f"{source}: unknown fields {sorted(unknown)[:10]}")
        if not isinstance(d.get("meta"), dict):
            raise DataFileError(f"{source}: 'meta' must be an object")
        try:
            meta = LUTMeta(**d["meta"])
        except TypeError as exc:  # an unknown or missing field
            raise DataFileError(f"{source}: bad meta: {exc}") from None
        except BudgetNASError as exc:
            raise DataFileError(f"{source}: bad meta: {exc}") from None
        if not isinstance(d.get("entries"), dict):
            raise DataFileError(f"{source}: 'entries' must be an object of block key -> stats")
        entries = {}
        for k, v in d["entries"].items():
            try:
                entries[k] = LatencyStats.from_dict(v)
            except DataFileError as exc:
                raise DataFileError(f"{source}: entry {brief(k)}: {exc}") from None
        try:
            cal = Calibration.from_dict(d["calibration"]) if d.get("calibration") is not None else None
            return cls(meta, entries, cal)
        except DataFileError as exc:
            raise DataFileError(f"{source}: {exc}") from None

    @classmethod
    def from_json_text(cls, text: str, source: str = "LUT") -> LUT:
        return cls.from_json_dict(parse_json(text, source), source)

    def save(self, path: str | Path, samples: bool = True) -> None:
        write_atomic(path, self.to_json_text(samples))

    @classmethod
    def load(cls, path: str | Path) -> LUT:
        p = Path(path)
        if p.suffix in (".yaml", ".yml"):
            raise DataFileError(f"{p} looks like Once-for-All YAML; import it with LUT.from_ofa_yaml / `lut import`")
        return cls.from_json_text(read_text_file(p, "LUT"), str(p))

    # ---- Once-for-All YAML ---------------------------------------------------------------------
    def to_ofa_yaml(self) -> str:
        """OFA's format: key -> {count, mean, std} in ms (our statistic is written as 'mean')."""
        out = {k: {"count": int(s.count), "mean": float(s.value(self.meta.statistic)), "std": float(s.std_ms)}
               for k, s in sorted(self.entries.items())}
        return yaml.safe_dump(out, sort_keys=True)

    @classmethod
    def from_ofa_yaml(cls, text: str, meta: LUTMeta, source: str = "YAML") -> LUT:
        raw = parse_yaml(text, source)
        if not isinstance(raw, dict) or not raw:
            raise DataFileError(f"{source}: expected a mapping of block key -> {{count, mean, std}}")
        entries: dict[str, LatencyStats] = {}
        for k, v in raw.items():
            key = str(k)
            if key in entries:  # 1 and "1" are two YAML keys but one block key
                raise DataFileError(f"{source}: duplicate key {brief(key)}")
            if not isinstance(v, dict) or not {"count", "mean", "std"} <= set(v):
                raise DataFileError(f"{source}: entry {brief(key)} must have count, mean and std")
            try:
                entries[key] = LatencyStats(count=v["count"], mean_ms=v["mean"], std_ms=v["std"])
                mean, std = entries[key].mean_ms, entries[key].std_ms
                entries[key] = replace(entries[key], cv=std / mean if mean > 0 else 0.0)
            except DataFileError as exc:
                raise DataFileError(f"{source}: entry {brief(key)}: {exc}") from None
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
    """The one "LUT -> latency of an arch": sum of block entries, then calibration.

    Error band: with calibration, ±2 relative residual std of the calibration fit; without, ±2
    standard deviations of the sum of independent block timings. The arithmetic is
    :meth:`from_rows` over LUT row indices, which the server's cached copies call too
    (budgetnas/lut_server/predictor.py); :class:`budgetnas.luts.token_cost.TokenCostModel` is the
    same sum folded into token tables for the generator (tested equal).
    """

    def __init__(self, lut: LUT, space: SearchSpace[Any]) -> None:
        self.lut, self.space = lut, space
        keys = sorted(lut.entries)
        self.index = {k: i for i, k in enumerate(keys)}
        self.keys = keys
        stat = lut.meta.statistic
        self.values = np.array([lut.entries[k].value(stat) for k in keys], np.float64)
        self._var = np.array([lut.entries[k].std_ms ** 2 for k in keys], np.float64)
        self._scaled: tuple[Calibration, np.ndarray] | None = None  # values x a calibration's group scales

    def key_indices(self, archs: Sequence[Any]) -> tuple[np.ndarray, np.ndarray]:
        """Concatenated LUT row indices of every arch's blocks and the start offset of each arch."""
        idx: list[int] = []
        starts = np.empty(len(archs), np.int64)
        missing: list[str] = []
        index = self.index
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
        return np.add.reduceat(self.values[idx], starts)

    def group_sums(self, archs: Sequence[Any]) -> tuple[np.ndarray, list[str]]:
        """Each arch's raw sum split by calibration group (``key_group``): (archs x groups, names)."""
        groups = sorted({key_group(k) for k in self.keys})
        col = np.array([groups.index(key_group(k)) for k in self.keys], np.int64)
        out = np.zeros((len(archs), len(groups)))
        if archs:
            idx, starts = self.key_indices(archs)
            rows = np.repeat(np.arange(len(archs)), np.diff(np.append(starts, len(idx))))
            np.add.at(out, (rows, col[idx]), self.values[idx])
        return out, groups

    def _scaled_values(self, cal: Calibration) -> np.ndarray:
        """The values times ``cal``'s per-group scales, kept for as long as the LUT has that calibration."""
        if self._scaled is None or self._scaled[0] is not cal:
            self._scaled = (cal, self.values * cal.key_scales(self.keys))
        return self._scaled[1]

    def key_costs(self, calibrated: bool = True) -> tuple[dict[str, float], float, float]:
        """Each block key's part of the sum (its value, times its group's scale when ``calibrated``) and the
        calibration's slope and intercept: what :func:`budgetnas.luts.token_cost.cost_model_from_lut` folds."""
        cal = self.lut.calibration if calibrated else None
        if cal is None:
            return dict(zip(self.keys, self.values.tolist(), strict=True)), 1.0, 0.0
        scaled = self._scaled_values(cal) if cal.group_scales else self.values
        return dict(zip(self.keys, scaled.tolist(), strict=True)), cal.slope, cal.intercept

    def from_rows(self, idx: np.ndarray, starts: np.ndarray, calibrated: bool = True
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(latency, half band, raw sum) per arch from its concatenated LUT rows (``key_indices``)."""
        raw = np.add.reduceat(self.values[idx], starts)
        cal = self.lut.calibration if calibrated else None
        if cal is not None:
            lat = cal.apply(np.add.reduceat(self._scaled_values(cal)[idx], starts) if cal.group_scales else raw)
            return lat, 2.0 * cal.rel_residual_std * lat, raw
        return raw, 2.0 * np.sqrt(np.add.reduceat(self._var[idx], starts)), raw

    def predict(self, archs: Sequence[Any]) -> list[Prediction]:
        if not archs:
            return []
        lat, half, raw = self.from_rows(*self.key_indices(archs))
        fmt = self.space.format
        return [Prediction(fmt(a), float(lat[i]), float(lat[i] - half[i]), float(lat[i] + half[i]), float(raw[i]))
                for i, a in enumerate(archs)]

    def breakdown(self, arch: Any) -> list[tuple[str, float]]:
        stat = self.lut.meta.statistic
        missing = self.lut.missing_keys(self.space.block_keys(arch))
        if missing:
            raise MissingKeysError(missing)
        return [(k, self.lut.entries[k].value(stat)) for k in self.space.block_keys(arch)]
