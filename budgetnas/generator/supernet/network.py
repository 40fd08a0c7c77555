"""The weight-sharing Once-for-All MobileNetV3 supernet over one ``ofa-mbv3`` space.

Fixed parts (stem, first block, head) are the profiler's own block modules; the five units hold
four :class:`ElasticMBConv` each. ``set_active(arch)`` selects a sub-network (elastic depth keeps
the first ``d`` layers of a unit); ``extract(arch)`` returns the profiler's model for that arch
(``budgetnas.profiler.models.build_model``) with the active weights copied in.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from budgetnas.core.errors import InvalidArchitectureError
from budgetnas.generator.supernet.elastic import ElasticMBConv
from budgetnas.profiler.blocks import MBConv, build_block
from budgetnas.profiler.models import BlockSequence, build_model
from budgetnas.spaces.ofa_mbv3 import (
    _UNIT_HSWISH,
    _UNIT_SE,
    _UNIT_STRIDES,
    DEPTHS,
    EXPANDS,
    KERNELS,
    MAX_DEPTH,
    N_UNITS,
    OFAArch,
    OFAMobileNetV3,
    channels_for,
)


@dataclass(frozen=True)
class ChoiceSet:
    """The choices a training phase samples from (progressive shrinking widens them phase by phase)."""

    kernels: tuple[int, ...]
    expands: tuple[int, ...]
    depths: tuple[int, ...]


def phase_choices(phase: str) -> ChoiceSet:
    """Once-for-All's progressive shrinking: full net, then elastic kernel, depth, expand."""
    k, e, d = (max(KERNELS),), (max(EXPANDS),), (max(DEPTHS),)
    table = {
        "full": ChoiceSet(k, e, d),
        "kernel": ChoiceSet(KERNELS, e, d),
        "depth": ChoiceSet(KERNELS, e, DEPTHS),
        "expand": ChoiceSet(KERNELS, EXPANDS, DEPTHS),
    }
    return table[phase]


PHASES = ("full", "kernel", "depth", "expand")


class OFASupernet(nn.Module):
    """Elastic kernel {3,5,7}, expand {3,4,6} and depth {2,3,4} over one (width, resolution) space."""

    def __init__(self, space: OFAMobileNetV3) -> None:
        super().__init__()
        self.space = space
        largest = self.largest()
        blocks = space.blocks(largest)
        n_layers = N_UNITS * MAX_DEPTH
        # Stem, first block and head do not change between sub-networks: reuse the profiler's modules.
        self.stem = build_block(blocks[0].key).train()
        self.first = build_block(blocks[1].key).train()
        self.head = nn.Sequential(*(build_block(b.key).train() for b in blocks[2 + n_layers:]))
        ch = channels_for(space.width)
        units = []
        cin = ch.first
        for u in range(N_UNITS):
            cout = ch.units[u]
            layers = []
            for li in range(MAX_DEPTH):
                stride = _UNIT_STRIDES[u] if li == 0 else 1
                c_in = cin if li == 0 else cout
                layers.append(ElasticMBConv(c_in, cout, KERNELS, EXPANDS, stride, bool(_UNIT_SE[u]),
                                            bool(_UNIT_HSWISH[u]), stride == 1 and c_in == cout))
            units.append(nn.ModuleList(layers))
            cin = cout
        self.units = nn.ModuleList(units)
        self.active_depths = [MAX_DEPTH] * N_UNITS

    # ---- architectures ----------------------------------------------------------------------
    def largest(self) -> OFAArch:
        layer = (max(KERNELS), max(EXPANDS))
        return OFAArch(self.space.width, self.space.resolution, ((layer,) * MAX_DEPTH,) * N_UNITS)

    def smallest(self, choices: ChoiceSet) -> OFAArch:
        layer = (min(choices.kernels), min(choices.expands))
        return OFAArch(self.space.width, self.space.resolution, ((layer,) * min(choices.depths),) * N_UNITS)

    def biggest(self, choices: ChoiceSet) -> OFAArch:
        layer = (max(choices.kernels), max(choices.expands))
        return OFAArch(self.space.width, self.space.resolution, ((layer,) * max(choices.depths),) * N_UNITS)

    def sample(self, choices: ChoiceSet, rng: np.random.Generator) -> OFAArch:
        units = []
        for _ in range(N_UNITS):
            depth = int(rng.choice(choices.depths))
            units.append(tuple((int(rng.choice(choices.kernels)), int(rng.choice(choices.expands)))
                               for _ in range(depth)))
        return OFAArch(self.space.width, self.space.resolution, tuple(units))

    def check_arch(self, arch: OFAArch | str) -> OFAArch:
        """Parse and check that ``arch`` belongs to this supernet's width and resolution."""
        a = self.space.parse(arch) if isinstance(arch, str) else arch
        if a.width != self.space.width or a.resolution != self.space.resolution:
            raise InvalidArchitectureError(
                f"{self.space.format(a)}: this supernet covers width {self.space.width} and resolution "
                f"{self.space.resolution} only (got width {a.width}, resolution {a.resolution})"
            )
        return a

    def unit_layers(self, u: int) -> list[ElasticMBConv]:
        layers = self.units[u]
        assert isinstance(layers, nn.ModuleList)
        return [m for m in layers if isinstance(m, ElasticMBConv)]

    # ---- sub-networks -----------------------------------------------------------------------
    def set_active(self, arch: OFAArch | str) -> OFAArch:
        a = self.check_arch(arch)
        for u, unit in enumerate(a.units):
            self.active_depths[u] = len(unit)
            for layer, (k, e) in zip(self.unit_layers(u), unit, strict=False):
                layer.active_kernel, layer.active_expand = k, e
        return a

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.first(self.stem(x))
        for u, depth in enumerate(self.active_depths):
            for layer in self.unit_layers(u)[:depth]:
                x = layer(x)
        return self.head(x)

    @torch.no_grad()
    def extract(self, arch: OFAArch | str) -> BlockSequence:
        """The profiler's standalone model for ``arch`` holding this supernet's active weights."""
        a = self.check_arch(arch)
        model = build_model(self.space, a)
        assert isinstance(model, BlockSequence)
        mods = model.block_modules()
        mods[0].load_state_dict(self.stem.state_dict())
        mods[1].load_state_dict(self.first.state_dict())
        i = 2
        for u, layers in enumerate(a.units):
            for layer, (k, e) in zip(self.unit_layers(u), layers, strict=False):
                block = mods[i]
                assert isinstance(block, MBConv)
                layer.copy_to(block, k, e)
                i += 1
        for src, dst in zip(self.head, mods[i:], strict=True):
            dst.load_state_dict(src.state_dict())
        return model.train(self.training)

    @torch.no_grad()
    def sort_channels(self) -> None:
        for u in range(N_UNITS):
            for layer in self.unit_layers(u):
                layer.sort_channels()


def sandwich(net: OFASupernet, choices: ChoiceSet, rng: np.random.Generator, n_random: int) -> list[OFAArch]:
    """The sandwich rule: largest and smallest of the phase plus ``n_random`` uniform samples
    (just the largest when the phase has one architecture, as in ``full``)."""
    big, small = net.biggest(choices), net.smallest(choices)
    if big == small:
        return [big]
    return [big, small] + [net.sample(choices, rng) for _ in range(n_random)]
