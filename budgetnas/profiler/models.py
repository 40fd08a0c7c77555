"""Whole models of a space, composed exactly of the modules of their block keys, shaped by the space's
``graph`` (a chain, or blocks and cells)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from budgetnas.core.errors import InvalidArgumentError
from budgetnas.profiler.blocks import build_block
from budgetnas.spaces import Block, Cell, SearchSpace


class BlockSequence(nn.Sequential):
    """A chain model (ofa-mbv3): one child per block key, in walk order."""

    def block_modules(self) -> list[nn.Module]:
        return list(self.children())


class DAGCell(nn.Module):
    """A cell DAG (``budgetnas.spaces.base.Cell``): ``edges`` are ``(to, from, module index)`` in
    edge order, ``ops`` one module per block of :meth:`Cell.executed` (nb201: its live edges,
    ``budgetnas.spaces.nb201.runs``, a parameter-free op that edges apply to one value once).

    Dead edges are not built, so neither eager torch nor an exported graph runs them; a shared
    module runs once (:meth:`Cell.shared`), as a graph compiler's CSE would run it. A node with no input
    edge is never read, except the output of a cell with no edge: that is ``x * 0``, NB201's own
    ``none``, which depends on ``x`` so that no graph optimiser folds the rest of the network into a
    constant (the next cells still run and are charged).
    """

    def __init__(self, edges: list[tuple[int, int, int]], ops: list[nn.Module], nodes: int = 4) -> None:
        super().__init__()
        self.nodes = nodes
        self.edges = edges
        self.ops = nn.ModuleList(ops)

    @classmethod
    def from_cell(cls, cell: Cell) -> DAGCell:
        index: dict[tuple[int, str], int] = {}
        edges: list[tuple[int, int, int]] = []
        ops: list[nn.Module] = []
        for (to, src, block), ident in zip(cell.edges, cell.shared(), strict=True):
            key = ident if ident is not None else (-1, f"#{len(ops)}")  # a block with weights: its own module
            if key not in index:
                index[key] = len(ops)
                ops.append(build_block(block.key))  # in edge order: modules are built (seeded) as walked
            edges.append((to, src, index[key]))
        return cls(edges, ops, cell.nodes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nodes = {0: x}  # an edge reads only nodes the input reaches, so only those are made
        done: dict[int, torch.Tensor] = {}  # a shared module's one output (its edges read equal values)
        for j in range(1, self.nodes):
            for to, frm, k in self.edges:
                if to == j:
                    if k not in done:
                        done[k] = self.ops[k](nodes[frm])
                    y = done[k]
                    nodes[j] = nodes[j] + y if j in nodes else y
        out = self.nodes - 1
        return nodes[out] if out in nodes else x.mul(0.0)


class CellNetwork(nn.Module):
    """A model with cells: its first block, the body (blocks and cells), its last block."""

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
            out += list(m.ops) if isinstance(m, DAGCell) else [m]
        return [*out, self.head]


NB201Cell, NB201Network = DAGCell, CellNetwork  # the names nb201's tests and callers know


def _module(part: Block | Cell) -> nn.Module:
    if isinstance(part, Block):
        return build_block(part.key)
    return DAGCell.from_cell(part)


def build_model(space: SearchSpace[Any], arch: Any) -> nn.Module:
    """The whole model of ``space.graph(arch)``; ``model.block_modules()`` lists one module per entry
    of ``space.blocks(arch)``."""
    graph = space.graph(arch)
    chain = [p for p in graph if isinstance(p, Block)]
    if len(chain) == len(graph):
        return BlockSequence(*(build_block(b.key) for b in chain)).eval()
    if len(graph) < 2 or not (isinstance(graph[0], Block) and isinstance(graph[-1], Block)):
        raise InvalidArgumentError(f"{space.name}: a model with cells must start and end with a block")
    stem, *body, head = (_module(p) for p in graph)  # in walk order: blocks are built as before
    return CellNetwork(stem, body, head).eval()
