"""Whole models of both spaces, composed exactly of the modules of their block keys."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from budgetnas.profiler.blocks import build_block
from budgetnas.spaces import NASBench201, NB201Arch, SearchSpace
from budgetnas.spaces.nb201 import EDGES, live_edges


class BlockSequence(nn.Sequential):
    """A chain model (ofa-mbv3): one child per block key, in walk order."""

    def block_modules(self) -> list[nn.Module]:
        return list(self.children())


class NB201Cell(nn.Module):
    """A cell DAG; ``ops`` holds one module per live edge (``budgetnas.spaces.nb201.live_edges``), in edge order.

    Dead edges are not built, so neither eager torch nor an exported graph runs them. A node with
    no live input is never read, except the output of a cell with no live edge: that is
    ``x * 0``, NB201's own ``none``, which depends on ``x`` so that no graph optimiser folds the
    rest of the network into a constant (the next cells still run and are charged).
    """

    def __init__(self, ops: list[tuple[int, int, nn.Module]]) -> None:
        super().__init__()
        self.edges = [(j, i) for j, i, _ in ops]
        self.ops = nn.ModuleList(m for _, _, m in ops)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nodes = {0: x}  # a live edge reads only nodes the input reaches, so only those are made
        for j in (1, 2, 3):
            for (to, frm), op in zip(self.edges, self.ops, strict=True):
                if to == j:
                    y = op(nodes[frm])
                    nodes[j] = nodes[j] + y if j in nodes else y
        return nodes[3] if 3 in nodes else x.mul(0.0)


class NB201Network(nn.Module):
    def __init__(self, stem: nn.Module, body: list[nn.Module], head: nn.Module) -> None:
        super().__init__()
        self.stem, self.body, self.head = stem, nn.ModuleList(body), head

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for m in self.body:
            x = m(x)
        return self.head(x)

    def block_modules(self) -> list[nn.Module]:
        out: list[nn.Module] = [self.stem]
        for m in self.body:
            out += list(m.ops) if isinstance(m, NB201Cell) else [m]
        return [*out, self.head]


def build_model(space: SearchSpace[Any], arch: Any) -> nn.Module:
    """The whole model; ``model.block_modules()`` lists one module per entry of ``space.blocks(arch)``."""
    blocks = space.blocks(arch)
    if not isinstance(space, NASBench201):
        return BlockSequence(*(build_block(b.key) for b in blocks)).eval()
    assert isinstance(arch, NB201Arch)
    it = iter(blocks)
    stem = build_block(next(it).key)
    body: list[nn.Module] = []
    live = [edge for edge, alive in zip(EDGES, live_edges(arch.ops), strict=True) if alive]
    for stage in range(3):
        if stage:
            body.append(build_block(next(it).key))
        for _ in range(space.cells):
            body.append(NB201Cell([(j, i, build_block(next(it).key)) for j, i in live]))
    head = build_block(next(it).key)
    return NB201Network(stem, body, head).eval()
