"""Files to ``budgetnas.luts.lut.LUT``: our JSON, Once-for-All YAML, and per-architecture measured tables.

Shared by ``POST /v1/luts/import`` and the offline ``budgetnas lut import --out``. Everything a
LUT file is goes through ``budgetnas.luts.lut``; this module only decides the metadata and, for a
per-architecture table, fits block values whose sums reproduce the measured models.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from budgetnas.core.errors import DataFileError, InvalidArchitectureError, InvalidArgumentError
from budgetnas.luts.lut import LUT, MAX_MS, LatencyStats, LUTMeta, brief
from budgetnas.spaces import SearchSpace, get_space, list_spaces, space_from_description

FORMATS = ("json", "ofa-yaml", "arch-csv")
MAX_SPACE_PARAM = 4096
_OFA_STEM = re.compile(r"^Conv-input:(\d+)x\1x3-")


@dataclass
class Imported:
    lut: LUT
    measurements: list[tuple[str, float]]  # whole models measured (arch-csv), kept for calibration


@dataclass
class ImportOptions:
    device: str | None = None
    backend: str | None = None
    space: dict[str, Any] | None = None
    resolution: int | None = None
    width: float | None = None
    column: str | None = None
    runtime_version: str | None = None


def space_for(desc: dict[str, Any], field_name: str = "space") -> SearchSpace[Any]:
    """The space of a LUT (created, imported or measured by a campaign) from its description.

    A LUT is measured at one input resolution, so a space that searches resolution
    (``{"resolutions": [...]}``) is refused: it would silently be measured at its largest one.
    """
    if not isinstance(desc, dict) or not isinstance(desc.get("space"), str):
        raise InvalidArgumentError(
            f"{field_name}: must be an object like {{\"space\": \"ofa-mbv3\", \"resolution\": 224}}")
    for k, v in desc.items():  # bounded, so records fit their columns and a walk stays small
        if isinstance(v, int | float) and not isinstance(v, bool) and not -MAX_SPACE_PARAM <= v <= MAX_SPACE_PARAM:
            raise InvalidArgumentError(f"{field_name}.{k}: {v} is out of range (|value| <= {MAX_SPACE_PARAM})")
    try:
        space = space_from_description(desc)
    except TypeError as exc:  # an unknown parameter of the space's constructor
        raise InvalidArgumentError(f"{field_name}: {exc}") from None
    except (InvalidArgumentError, InvalidArchitectureError) as exc:
        raise InvalidArgumentError(f"{field_name}: {exc}") from None
    searched = space.describe().get("resolutions")
    if searched is not None:
        raise InvalidArgumentError(
            f"{field_name}.resolutions: a LUT is measured at one resolution; give \"resolution\" (one of "
            f"{searched}) and make one LUT per resolution: a LUT family, searched with `--lut-family`")
    return space


def check_keys(lut: LUT, space: SearchSpace[Any]) -> None:
    extra = sorted(set(lut.entries) - set(space.all_block_keys()))
    if extra:
        raise DataFileError(f"content: {len(extra)} key(s) are not block keys of {space.describe()}: "
                            + ", ".join(extra[:3]))


def import_lut(fmt: str, content: str, opts: ImportOptions) -> Imported:
    try:
        reader = _READERS[fmt]
    except KeyError:
        raise InvalidArgumentError(f"format: {fmt!r} is not one of {list(FORMATS)}") from None
    out = reader(content, opts)
    check_keys(out.lut, space_for(out.lut.meta.space))
    return out


def _meta(opts: ImportOptions, space: SearchSpace[Any], default_backend: str, source: str) -> LUTMeta:
    return LUTMeta(space=space.describe(), device=opts.device or "imported", backend=opts.backend or default_backend,
                   runtime_version=opts.runtime_version or "unknown", protocol={"source": source})


def _space_params(opts: ImportOptions, name: str, **defaults: Any) -> SearchSpace[Any]:
    if opts.space is not None:
        return space_for(opts.space)
    given = (("resolution", opts.resolution), ("width", opts.width))
    params = {**defaults, **{k: v for k, v in given if v is not None}}
    try:
        return get_space(name, **params)
    except InvalidArgumentError as exc:
        raise InvalidArgumentError(f"resolution/width: {exc}") from None


def _read_json(content: str, opts: ImportOptions) -> Imported:
    lut = LUT.from_json_text(content, "content")
    if opts.space is not None and space_for(opts.space).describe() != space_for(lut.meta.space).describe():
        raise InvalidArgumentError(f"space: {opts.space} differs from the file's {lut.meta.space}")
    changes: dict[str, Any] = {k: v for k, v in (("device", opts.device), ("backend", opts.backend),
                                                 ("runtime_version", opts.runtime_version)) if v}
    return Imported(replace(lut, meta=replace(lut.meta, **changes)) if changes else lut, [])


def _read_ofa_yaml(content: str, opts: ImportOptions) -> Imported:
    resolution = opts.resolution
    if resolution is None and opts.space is None:  # Once-for-All's stem key names the input size
        for line in content.splitlines():
            m = _OFA_STEM.match(line.strip())
            if m:
                resolution = int(m.group(1))
                break
    space = _space_params(replace(opts, resolution=resolution), "ofa-mbv3", width=1.2)
    return Imported(LUT.from_ofa_yaml(content, _meta(opts, space, "ofa-yaml", "ofa-yaml"), "content"), [])


def _read_arch_csv(content: str, opts: ImportOptions) -> Imported:
    try:
        reader = csv.DictReader(io.StringIO(content))
        rows = list(reader)
    except csv.Error as exc:  # a field over the csv module's size limit, a NUL byte
        raise DataFileError(f"content: not CSV: line {reader.line_num}: {exc}") from None
    if not rows:
        raise DataFileError("content: the CSV has no rows (expected a header with arch_str or arch "
                            "and a latency column)")
    header = list(reader.fieldnames or ())
    repeated = sorted({c for c in header if header.count(c) > 1})
    if repeated:  # DictReader would keep the last column of a name
        raise DataFileError(f"content: the CSV header repeats column(s) {repeated[:5]}")
    arch_col = next((c for c in ("arch_str", "arch") if c in header), None)
    if arch_col is None:
        raise DataFileError(f"content: no 'arch_str' or 'arch' column in {header}")
    lat_cols = [c for c in header if "latency" in c]
    column = opts.column or (lat_cols[0] if len(lat_cols) == 1 else "latency_ms")
    if column not in header:
        raise InvalidArgumentError(f"column: {column!r} is not a column of the CSV; latency columns: {lat_cols}")
    pairs: list[tuple[str, float]] = []
    lines: list[int] = []
    for n, r in enumerate(rows, start=2):
        cell = r.get(column)
        cell = cell.strip() if isinstance(cell, str) else ""
        if not cell:
            continue  # unmeasured architecture (HW-NAS-Bench leaves some blank)
        try:
            pairs.append((str(r[arch_col]), float(cell)))
        except ValueError:
            raise DataFileError(f"content: line {n}: {column} {brief(cell)} is not a number") from None
        lines.append(n)
    space = _csv_space(opts, pairs[0][0] if pairs else "")
    return fit_arch_table(pairs, space, _meta(opts, space, "arch-csv", f"arch-csv:{column}"), lines)


def _csv_space(opts: ImportOptions, first_arch: str) -> SearchSpace[Any]:
    if opts.space is not None:
        return space_for(opts.space)
    for name in list_spaces():  # the one registered space (with its defaults) the architectures parse in
        sp = get_space(name)
        try:
            sp.parse(first_arch)
        except InvalidArchitectureError:
            continue
        return _space_params(opts, name)
    raise InvalidArgumentError(f"space: {first_arch!r} parses in no registered space; give \"space\"")


def fit_arch_table(pairs: list[tuple[str, float]], space: SearchSpace[Any], meta: LUTMeta,
                   lines: list[int] | None = None) -> Imported:
    """Block values (non-negative least squares) whose sums reproduce measured whole models.

    Blocks present in every architecture (stem, head) are not separable from each other: only
    their sum is determined, which is all a prediction uses. Each entry's ``std_ms`` spreads the
    fit's residual variance evenly over an architecture's blocks, so the uncalibrated error band
    (±2 std of the sum) is about ±2 residual standard deviations. The measured models are returned
    too: the server keeps them for ``/calibrate`` and ``/validation``.
    """
    from scipy.optimize import nnls

    if len(pairs) < 2:
        raise DataFileError("content: a per-architecture table needs at least 2 measured architectures")
    archs, keys_of = [], []
    first_at: dict[str, str] = {}
    for i, (text, ms) in enumerate(pairs):
        where = f"line {lines[i]}" if lines else f"row {i + 1}"
        if not (np.isfinite(ms) and 0 < ms <= MAX_MS):
            raise DataFileError(f"content: {where}: latency {ms} must be a positive number <= {MAX_MS:g}")
        try:
            a = space.parse(text)
        except InvalidArchitectureError as exc:
            raise InvalidArchitectureError(f"content: {where}: {exc}") from None
        canonical = space.format(a)  # two spellings of one architecture are one duplicate
        if canonical in first_at:
            raise DataFileError(f"content: {where}: architecture {brief(canonical)} repeats {first_at[canonical]}")
        first_at[canonical] = where
        archs.append(canonical)
        keys_of.append(space.block_keys(a))
    keys = sorted({k for ks in keys_of for k in ks})
    col = {k: j for j, k in enumerate(keys)}
    a_mat = np.zeros((len(pairs), len(keys)))
    for i, ks in enumerate(keys_of):
        for k in ks:
            a_mat[i, col[k]] += 1.0
    y = np.array([ms for _, ms in pairs], np.float64)
    x, _ = nnls(a_mat, y, maxiter=50 * len(keys))
    resid = y - a_mat @ x
    dof = max(1, len(y) - len(keys))
    per_block_var = float(resid @ resid) / dof / float(a_mat.sum(axis=1).mean())
    std = float(np.sqrt(per_block_var))
    counts = (a_mat > 0).sum(axis=0)
    entries = {k: LatencyStats(count=int(counts[j]), mean_ms=float(x[j]), std_ms=std,
                               cv=std / float(x[j]) if x[j] > 0 else 0.0)
               for j, k in enumerate(keys)}
    lut = LUT(replace(meta, statistic="mean"), entries)
    return Imported(lut, list(zip(archs, y.tolist(), strict=True)))


_READERS = {"json": _read_json, "ofa-yaml": _read_ofa_yaml, "arch-csv": _read_arch_csv}
