"""The Once-for-All MobileNetV3 space used by PNAG.

Five units of 2-4 MBConv layers; each layer picks a kernel {3,5,7} and expand ratio {3,4,6}.
Channel rules (``make_divisible``), SE and h-swish placement follow OFA's ``OFAMobileNetV3`` so
that block keys are byte-identical to OFA's published lookup tables.

Canonical string: ``w1.2_r224|k3e4,k5e6|k7e3,k3e3,k3e4|k3e3,k3e3|k5e6,k5e6,k5e6,k5e6|k7e4,k7e4``
(width, resolution, then one ``|``-separated group of ``k<kernel>e<expand>`` layers per unit).
OFA's dict form ``{"ks": [20], "e": [20], "d": [5], "r": 224}`` is accepted too; entries past a
unit's depth are ignored, as in OFA.

Resolution is a space parameter (``resolution=224``: every arch has it) or, with
``resolutions=(160, 176, 192, 208, 224)``, a searched decision (Once-for-All searches it): one more
decision, placed *last* in the token row so the unit layout (``u * STEP``) is the same in both
variants. The canonical string is the same (it always names the resolution).

Tokens per unit: its depth, then (kernel, expand) per layer slot, the slots past the depth gated
off (:class:`Gate`). Features: per layer slot a kernel and an expand one-hot (zeros past the
unit's depth; the depth itself is not a feature), then the searched resolution's one-hot.

FLOPs are multiply-accumulates of convolutions and linear layers without biases (what
``torch.utils.flop_counter`` counts, halved); params count every weight, bias and BN affine.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache, lru_cache
from typing import Any

import numpy as np

from budgetnas.core.errors import InvalidArchitectureError, InvalidArgumentError
from budgetnas.spaces.base import Block, Decision, ImageSpace, int_param, number_param
from budgetnas.spaces.blockkey import BlockKey
from budgetnas.spaces.layout import CostTerm, Gate, KeyCost, UnitGrammar

KERNELS = (3, 5, 7)
EXPANDS = (3, 4, 6)
DEPTHS = (2, 3, 4)
WIDTHS = (1.0, 1.2)
RESOLUTIONS = tuple(range(128, 225, 4))
N_UNITS = 4 + 1
MAX_DEPTH = 4
STEP = 1 + 2 * MAX_DEPTH  # tokens per unit: depth, then (kernel, expand) per layer slot

# OFA MobileNetV3 stage plan: stem, first block, five units, final expand, feature mix.
_BASE_WIDTHS = (16, 16, 24, 40, 80, 112, 160, 960, 1280)
_UNIT_STRIDES = (2, 2, 2, 1, 2)
_UNIT_HSWISH = (0, 0, 1, 1, 1)
_UNIT_SE = (0, 1, 0, 1, 1)

Layer = tuple[int, int]  # (kernel, expand ratio)


def make_divisible(v: float, divisor: int = 8) -> int:
    """OFA/TF rounding of channel counts: nearest multiple of ``divisor``, never below 90% of ``v``."""
    new_v = max(divisor, int(v + divisor / 2) // divisor * divisor)
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


def conv_out(size: int, stride: int) -> int:
    """Spatial size after a 'same'-padded convolution (padding k//2) with this stride."""
    return (size - 1) // stride + 1


@dataclass(frozen=True)
class OFAArch:
    width: float
    resolution: int
    units: tuple[tuple[Layer, ...], ...]

    @property
    def depths(self) -> tuple[int, ...]:
        return tuple(len(u) for u in self.units)


@dataclass(frozen=True)
class Channels:
    stem: int
    first: int
    units: tuple[int, ...]
    final_expand: int
    feature_mix: int


def channels_for(width: float) -> Channels:
    w = [make_divisible(c * width) for c in _BASE_WIDTHS]
    last = make_divisible(_BASE_WIDTHS[-1] * width) if width > 1.0 else _BASE_WIDTHS[-1]
    return Channels(w[0], w[1], tuple(w[2:7]), w[7], last)


def se_mid(channels: int) -> int:
    return make_divisible(channels // 4)


def mbconv_cost(
    h_in: int, h_out: int, cin: int, cout: int, mid: int, kernel: int, se: bool
) -> tuple[int, int]:
    """MACs and params of OFA's MBConvLayer (expansion only when mid != cin)."""
    macs = params = 0
    if mid != cin:
        macs += h_in * h_in * cin * mid
        params += cin * mid + 2 * mid
    macs += h_out * h_out * mid * kernel * kernel
    params += mid * kernel * kernel + 2 * mid
    if se:
        m = se_mid(mid)
        macs += 2 * mid * m
        params += 2 * mid * m + m + mid
    macs += h_out * h_out * mid * cout
    params += mid * cout + 2 * cout
    return macs, params


# ASCII digits only ('\d' would take '٣' too), and few of them: int() of thousands of digits fails
_UNIT_RE = re.compile(r"^k(\d{1,4})e(\d{1,4})$", re.ASCII)
_HEAD_RE = re.compile(r"^w(\d{1,4}(?:\.\d{1,8})?)_r(\d{1,6})$", re.ASCII)


class OFAMobileNetV3(ImageSpace[OFAArch]):
    name = "ofa-mbv3"

    def __init__(self, width: float = 1.2, resolution: int | None = None, num_classes: int = 1000,
                 resolutions: Sequence[int] | None = None) -> None:
        self.width = self._check_width(width)
        self.num_classes = int_param("num_classes", num_classes)
        decs: list[Decision] = []
        for u in range(N_UNITS):
            decs.append(Decision(f"unit{u + 1}.depth", DEPTHS, in_features=False))  # the active slots say it
            for layer in range(MAX_DEPTH):
                gate = _layer_gate(u, layer)
                decs.append(Decision(f"unit{u + 1}.layer{layer + 1}.kernel", KERNELS, gate))
                decs.append(Decision(f"unit{u + 1}.layer{layer + 1}.expand", EXPANDS, gate))
        self.resolutions: tuple[int, ...] | None = None
        if resolutions is None:
            self.resolution = self._check_resolution(224 if resolution is None else resolution)
        else:
            if resolution is not None:
                raise InvalidArgumentError("give resolution (fixed) or resolutions (searched), not both")
            self.resolutions = self._check_resolutions(resolutions)
            self.resolution = self.resolutions[-1]  # the input shape a model of this space may need at most
            decs.append(Decision("resolution", self.resolutions))
        self._decisions = tuple(decs)

    # ---- checks ---------------------------------------------------------------------------
    @staticmethod
    def _check_width(width: float) -> float:
        width = number_param("width", width)
        for w in WIDTHS:
            if abs(width - w) < 1e-9:
                return w
        raise InvalidArgumentError(f"width {width} is not one of {list(WIDTHS)}")

    @staticmethod
    def _check_resolution(resolution: int, name: str = "resolution") -> int:
        if int_param(name, resolution) not in RESOLUTIONS:
            raise InvalidArgumentError(
                ("" if name == "resolution" else f"{name}: ")
                + f"resolution {resolution} is not in {RESOLUTIONS[0]}..{RESOLUTIONS[-1]} step 4"
            )
        return int(resolution)

    def _arch_resolution(self, resolution: int) -> int:
        """An arch's resolution, checked against this space's (one, or the searched ones)."""
        r = self._arch_check(lambda: self._check_resolution(resolution))
        if self.resolutions is not None and r not in self.resolutions:
            raise InvalidArchitectureError(
                f"resolution {r} is not one of the searched resolutions {list(self.resolutions)}")
        return int(r)

    @classmethod
    def _check_resolutions(cls, resolutions: Any) -> tuple[int, ...]:
        if isinstance(resolutions, str | bytes) or not isinstance(resolutions, Sequence):
            raise InvalidArgumentError(f"resolutions must be a list of resolutions, got {resolutions!r}")
        if not resolutions:
            raise InvalidArgumentError("resolutions must name at least one resolution")
        if len(resolutions) > len(RESOLUTIONS):  # checked before any element: a huge list costs nothing
            raise InvalidArgumentError(f"resolutions: {len(resolutions)} given, there are only {len(RESOLUTIONS)}")
        out = [cls._check_resolution(r, "resolutions") for r in resolutions]
        twice = sorted({r for r in out if out.count(r) > 1})
        if twice:
            raise InvalidArgumentError(f"resolutions: {twice} given more than once")
        return tuple(sorted(out))

    def at_resolution(self, resolution: int) -> OFAMobileNetV3:
        """The fixed-resolution space of one of this space's resolutions (its LUT's space)."""
        return OFAMobileNetV3(self.width, resolution, self.num_classes)

    def describe(self) -> dict[str, Any]:
        if self.resolutions is not None:
            return {"space": self.name, "width": self.width, "resolutions": list(self.resolutions),
                    "num_classes": self.num_classes}
        return {"space": self.name, "width": self.width, "resolution": self.resolution,
                "num_classes": self.num_classes}

    # ---- tokens ---------------------------------------------------------------------------
    def to_tokens(self, arch: OFAArch) -> list[int]:
        toks: list[int] = []
        for unit in arch.units:
            toks.append(DEPTHS.index(len(unit)))
            for layer in range(MAX_DEPTH):
                k, e = unit[layer] if layer < len(unit) else (KERNELS[0], EXPANDS[0])
                toks += [KERNELS.index(k), EXPANDS.index(e)]
        if self.resolutions is not None:
            toks.append(self.resolutions.index(self._arch_resolution(arch.resolution)))
        return toks

    def from_tokens(self, tokens: Sequence[int]) -> OFAArch:
        self.check_tokens(tokens)
        units = []
        for u in range(N_UNITS):
            t = tokens[u * STEP:(u + 1) * STEP]
            depth = DEPTHS[int(t[0])]
            units.append(tuple((KERNELS[int(t[1 + 2 * i])], EXPANDS[int(t[2 + 2 * i])]) for i in range(depth)))
        res = self.resolution if self.resolutions is None else self.resolutions[int(tokens[-1])]
        return OFAArch(self.width, res, tuple(units))

    # ---- strings --------------------------------------------------------------------------
    def format(self, arch: OFAArch) -> str:
        units = "|".join(",".join(f"k{k}e{e}" for k, e in unit) for unit in arch.units)
        return f"w{arch.width:.1f}_r{arch.resolution}|{units}"

    def parse(self, text: str | dict[str, Any]) -> OFAArch:
        if isinstance(text, dict):
            return self._parse_dict(text)
        if not isinstance(text, str):
            raise InvalidArchitectureError(
                f"{self.name}: architecture must be a string or dict, got {type(text).__name__}"
            )
        s = text.strip()
        fast = _fast_parse(s)
        if fast is not None:
            if self.resolutions is not None:  # the cached parse knows no space: check the searched set
                self._arch_resolution(fast.resolution)
            return fast
        if s.startswith("{"):
            try:
                obj = json.loads(s)
            except (ValueError, RecursionError) as exc:  # malformed, nested too deeply, a 5000-digit number
                raise InvalidArchitectureError(f"{self.name}: architecture looks like JSON but is not: "
                                               f"{str(exc) or type(exc).__name__}") from None
            if not isinstance(obj, dict):
                raise InvalidArchitectureError(f"{self.name}: JSON architecture must be an object")
            return self._parse_dict(obj)
        parts = s.split("|")
        head = _HEAD_RE.match(parts[0])
        if not head:
            raise InvalidArchitectureError(
                f"{self.name}: {text!r} must start with 'w<width>_r<resolution>|', "
                f"e.g. {self.format(self.from_tokens([0] * len(self.decisions)))!r}"
            )
        width = self._arch_check(lambda: self._check_width(float(head.group(1))))
        resolution = self._arch_resolution(int(head.group(2)))
        if len(parts) != 1 + N_UNITS:
            raise InvalidArchitectureError(f"{self.name}: expected {N_UNITS} '|'-separated units, got {len(parts) - 1}")
        units = []
        for u, unit_text in enumerate(parts[1:]):
            layers = unit_text.split(",") if unit_text else []
            if len(layers) not in DEPTHS:
                raise InvalidArchitectureError(
                    f"unit {u + 1}: depth {len(layers)} is not one of {list(DEPTHS)} (got {unit_text!r})"
                )
            unit = []
            for li, lt in enumerate(layers):
                m = _UNIT_RE.match(lt)
                if not m:
                    raise InvalidArchitectureError(
                        f"unit {u + 1} layer {li + 1}: {lt!r} is not 'k<kernel>e<expand>' like 'k5e6'"
                    )
                unit.append(self._layer(u, li, int(m.group(1)), int(m.group(2))))
            units.append(tuple(unit))
        return OFAArch(width, resolution, tuple(units))

    @staticmethod
    def _arch_check(fn: Any) -> Any:
        try:
            return fn()
        except InvalidArgumentError as exc:
            raise InvalidArchitectureError(str(exc)) from None

    @staticmethod
    def _layer(u: int, li: int, k: int, e: int) -> Layer:
        if k not in KERNELS:
            raise InvalidArchitectureError(f"unit {u + 1} layer {li + 1} kernel: {k} is not one of {list(KERNELS)}")
        if e not in EXPANDS:
            raise InvalidArchitectureError(f"unit {u + 1} layer {li + 1} expand: {e} is not one of {list(EXPANDS)}")
        return (k, e)

    def _parse_dict(self, d: dict[str, Any]) -> OFAArch:
        missing = [k for k in ("ks", "e", "d") if k not in d]
        if missing:
            raise InvalidArchitectureError(f"{self.name}: dict architecture lacks {missing} (needs ks, e, d[, r, w])")
        ks, es, ds = d["ks"], d["e"], d["d"]
        for name, seq, n in (("ks", ks, N_UNITS * MAX_DEPTH), ("e", es, N_UNITS * MAX_DEPTH), ("d", ds, N_UNITS)):
            if not isinstance(seq, list) or len(seq) != n:
                raise InvalidArchitectureError(f"{self.name}: {name!r} must be a list of {n} integers")
        r = d.get("r", self.resolution)
        resolution = self._arch_resolution(r[0] if isinstance(r, list) and r else r)
        width = self._arch_check(lambda: self._check_width(d.get("w", self.width)))
        units = []
        for u, depth in enumerate(ds):
            if depth not in DEPTHS:
                raise InvalidArchitectureError(
                    f"position d[{u}] (unit {u + 1} depth): {depth!r} is not one of {list(DEPTHS)}"
                )
            units.append(tuple(self._layer(u, i, ks[u * MAX_DEPTH + i], es[u * MAX_DEPTH + i]) for i in range(depth)))
        return OFAArch(width, resolution, tuple(units))

    def to_ofa_dict(self, arch: OFAArch) -> dict[str, Any]:
        ks, es = [], []
        for unit in arch.units:
            padded = list(unit) + [(KERNELS[0], EXPANDS[0])] * (MAX_DEPTH - len(unit))
            ks += [k for k, _ in padded]
            es += [e for _, e in padded]
        return {"ks": ks, "e": es, "d": list(arch.depths), "r": arch.resolution, "w": arch.width}

    # ---- walk -----------------------------------------------------------------------------
    def _walk(self, width: float, resolution: int, units: Sequence[Sequence[Layer]]) -> list[Block]:
        stem, tail = _fixed_blocks(width, resolution, self.num_classes)
        blocks = list(stem)
        for u, unit in enumerate(units):
            for li, (k, e) in enumerate(unit):
                blocks.append(_layer_block(width, resolution, u, li > 0, k, e))
        blocks += tail
        return blocks

    def blocks(self, arch: OFAArch) -> list[Block]:
        return self._walk(arch.width, arch.resolution, arch.units)

    def all_block_keys(self) -> list[str]:
        keys: set[str] = set()
        # Every layer position with every (k, e): walking max-depth units with each uniform choice
        # covers first (strided) and later layers of every unit.
        for res in self.resolutions or (self.resolution,):
            for k in KERNELS:
                for e in EXPANDS:
                    units = [[(k, e)] * MAX_DEPTH for _ in range(N_UNITS)]
                    keys.update(str(b.key) for b in self._walk(self.width, res, units))
        return sorted(keys)

    # ---- the walk folded into cost tables ---------------------------------------------------
    def cost_terms(self, cost: KeyCost) -> tuple[float, list[CostTerm]]:
        """A layer's block depends only on (unit, first layer or not, kernel, expand) and counts
        iff its slot is within the unit's depth: one (kernel, expand) table per layer slot, gated
        by the unit's depth token, over the fixed blocks (stem, first block, head)."""
        if self.resolutions is not None:
            raise InvalidArgumentError("a searched resolution's cost tables are folded from at_resolution's spaces")
        shallow = self.blocks(self.from_tokens([0] * len(self.decisions)))
        n_fixed_head = 2  # stem + first block; the walk then lists the units' layers, then 4 tail blocks
        base = sum(cost(b.key_str) for b in shallow[:n_fixed_head] + shallow[-4:])
        tables = np.zeros((N_UNITS, MAX_DEPTH, len(KERNELS), len(EXPANDS)))
        deep = [len(DEPTHS) - 1 if i % STEP == 0 else 0 for i in range(len(self.decisions))]
        for ki in range(len(KERNELS)):
            for ei in range(len(EXPANDS)):
                toks = [t if i % STEP == 0 else (ki if (i % STEP) % 2 == 1 else ei) for i, t in enumerate(deep)]
                layers = self.blocks(self.from_tokens(toks))[n_fixed_head:-4]
                for u in range(N_UNITS):
                    for li in range(MAX_DEPTH):
                        tables[u, li, ki, ei] = cost(layers[u * MAX_DEPTH + li].key_str)
        terms = []
        for u in range(N_UNITS):
            for li in range(MAX_DEPTH):
                pk, pe = u * STEP + 1 + 2 * li, u * STEP + 2 + 2 * li
                gate = self.decisions[pk].gate
                terms.append(CostTerm((pk, pe), tables[u, li].copy(), -1 if gate is None else gate.pos,
                                      0 if gate is None else gate.min))
        return base, terms

    def unit_grammar(self) -> UnitGrammar | None:
        """Canonical strings are ``w<width>_r<resolution>|`` and ``|``-joined units of ``,``-joined
        ``k<kernel>e<expand>`` layers; with a searched resolution the head varies, so None."""
        if self.resolutions is not None:
            return None
        probes = (f"k{KERNELS[0]}e{EXPANDS[0]}", f"k{KERNELS[1]}e{EXPANDS[0]}")
        return UnitGrammar(f"w{self.width:.1f}_r{self.resolution}", "|", ",", probes)


def _layer_gate(u: int, layer: int) -> Gate | None:
    """Layer slot ``layer`` of unit ``u`` exists iff the unit's depth token picks a depth above it."""
    if layer < DEPTHS[0]:
        return None
    return Gate(u * STEP, next(i for i, d in enumerate(DEPTHS) if d > layer))


# ---- cached walk pieces: a layer's block depends only on (width, resolution, unit, first?, k, e) ----
def _mb_key(h_in: int, h_out: int, cin: int, cout: int, mid: int, k: int, stride: int, se: int, hs: int) -> BlockKey:
    idskip = int(stride == 1 and cin == cout)
    return BlockKey("expanded_conv", (h_in, h_in, cin), (h_out, h_out, cout),
                    (("expand", mid), ("kernel", k), ("stride", stride), ("idskip", idskip), ("se", se), ("hs", hs)))


@cache
def _unit_geometry(width: float, resolution: int) -> tuple[tuple[int, int, int], ...]:
    """Per unit: (spatial size before the unit, channels before it, channels out)."""
    ch = channels_for(width)
    h, cin, out = conv_out(resolution, 2), ch.first, []
    for u in range(N_UNITS):
        out.append((h, cin, ch.units[u]))
        h, cin = conv_out(h, _UNIT_STRIDES[u]), ch.units[u]
    return tuple(out)


@cache
def _layer_block(width: float, resolution: int, u: int, later: bool, k: int, e: int) -> Block:
    h0, c0, cout = _unit_geometry(width, resolution)[u]
    stride = 1 if later else _UNIT_STRIDES[u]
    h_in = conv_out(h0, _UNIT_STRIDES[u]) if later else h0
    cin = cout if later else c0
    h_out = conv_out(h_in, stride)
    mid = make_divisible(cin * e)
    macs, params = mbconv_cost(h_in, h_out, cin, cout, mid, k, bool(_UNIT_SE[u]))
    return Block(_mb_key(h_in, h_out, cin, cout, mid, k, stride, _UNIT_SE[u], _UNIT_HSWISH[u]), macs, params)


@cache
def _fixed_blocks(width: float, resolution: int, num_classes: int) -> tuple[tuple[Block, ...], tuple[Block, ...]]:
    """Stem + first block, and the head (final expand, pool, feature mix, logits)."""
    ch = channels_for(width)
    h = conv_out(resolution, 2)
    stem = Block(BlockKey("Conv", (resolution, resolution, 3), (h, h, ch.stem)),
                 h * h * 3 * 9 * ch.stem, 27 * ch.stem + 2 * ch.stem)
    macs, params = mbconv_cost(h, h, ch.stem, ch.first, ch.stem, 3, False)
    first = Block(_mb_key(h, h, ch.stem, ch.first, ch.stem, 3, 1, 0, 0), macs, params)
    h_last, cin = _unit_geometry(width, resolution)[-1][0], ch.units[-1]
    h = conv_out(h_last, _UNIT_STRIDES[-1])
    fe, fm, n = ch.final_expand, ch.feature_mix, num_classes
    tail = (
        Block(BlockKey("Conv_1", (h, h, cin), (h, h, fe)), h * h * cin * fe, cin * fe + 2 * fe),
        Block(BlockKey("AvgPool2D", (h, h, fe), (1, 1, fe)), 0, 0),
        Block(BlockKey("Conv_2", (1, 1, fe), (1, 1, fm)), fe * fm, fe * fm),
        Block(BlockKey("Logits", (1, 1, fm), (n,)), fm * n, fm * n + n),
    )
    return (stem, first), tail


_LAYER_TOKENS = {f"k{k}e{e}": (k, e) for k in KERNELS for e in EXPANDS}
_WIDTH_TOKENS = {f"w{w:.1f}": w for w in WIDTHS}


_RESOLUTION_TOKENS = {str(r): r for r in RESOLUTIONS}
_MAX_CANONICAL = len(f"w1.2_r{RESOLUTIONS[-1]}") + N_UNITS * (1 + MAX_DEPTH * 5)


class _NotCanonical(Exception):
    """Raised (so not cached) for a string that is not exactly a canonical architecture string."""


def _fast_parse(s: str) -> OFAArch | None:
    """Dictionary-lookup parse of a canonical string; None sends anything else to the checking parser.

    Only exact canonical strings are cached (a failed lookup raises, which ``lru_cache`` does not
    keep): other spellings of an architecture cannot fill the cache with copies of one architecture.
    """
    if len(s) > _MAX_CANONICAL:
        return None
    try:
        return _canonical_parse(s)
    except _NotCanonical:
        return None


@lru_cache(maxsize=1 << 14)
def _canonical_parse(s: str) -> OFAArch:
    parts = s.split("|")
    if len(parts) != 1 + N_UNITS:
        raise _NotCanonical
    w_txt, _, r_txt = parts[0].partition("_r")
    width, resolution = _WIDTH_TOKENS.get(w_txt), _RESOLUTION_TOKENS.get(r_txt)
    if width is None or resolution is None:
        raise _NotCanonical
    units = []
    for unit_text in parts[1:]:
        layers = unit_text.split(",")
        if len(layers) not in DEPTHS:
            raise _NotCanonical
        unit = tuple(_LAYER_TOKENS.get(t) for t in layers)
        if None in unit:
            raise _NotCanonical
        units.append(unit)
    return OFAArch(width, resolution, tuple(units))  # type: ignore[arg-type]
