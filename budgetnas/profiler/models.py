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
    edge order, ``ops`` one module per edge block of :meth:`Cell.executed` (nb201: its live edges,
    ``budgetnas.spaces.nb201.runs``, a parameter-free op that edges apply to one value once).

    Dead edges are not built, so neither eager torch nor an exported graph runs them; a shared
    module runs once (:meth:`Cell.shared`), as a graph compiler's CSE would run it. A node sums its
    terms with the cell's ``add`` block's module (:meth:`Cell.additions` of them). A node with no
    input edge is never read, except the output of a cell with no edge: that is the ``zero`` block's
    module, NB201's own ``none`` (``x * 0``), which depends on ``x`` so that no graph optimiser folds
    the rest of the network into a constant (the next cells still run and are charged).
    """

    def __init__(self, edges: list[tuple[int, int, int]], ops: list[nn.Module], nodes: int = 4,
                 add: nn.Module | None = None, zero: nn.Module | None = None, cell: Cell | None = None,
                 add_fused: nn.Module | None = None) -> None:
        super().__init__()
        self.nodes = nodes
        self.edges = edges
        self.ops = nn.ModuleList(ops)
        self.add, self.zero, self.add_fused = add, zero, add_fused
        self.cell = cell  # what it was built from: the one count of additions and of a zero output

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
        add = build_block(cell.add.key) if cell.add is not None else None
        zero = build_block(cell.zero.key) if cell.zero is not None else None
        fused = build_block(cell.add_fused.key) if cell.add_fused is not None else None
        return cls(edges, ops, cell.nodes, add, zero, cell, fused)

    def block_modules(self) -> list[nn.Module]:
        """One module per block of :meth:`Cell.executed` (what the cell runs is said there once): an
        edge's own module, the add module per addition (the add_fused module for those a conv can
        absorb: the same addition, charged in its own context), the zero module for a zero output."""
        cell = self.cell
        if cell is None:
            raise InvalidArgumentError("a DAGCell built without its Cell (use DAGCell.from_cell) has no block list")
        built = iter(self.ops)  # one module per edge that runs, in edge order (from_cell)
        ran = [(block, next(built)) for (_, _, block), run in zip(cell.edges, cell.runs(), strict=True) if run]
        edges = iter(m for block, m in ran if block.key.op not in cell.identities)
        joins = {b.key_str: m for b, m in ((cell.add, self.add), (cell.add_fused, self.add_fused),
                                           (cell.zero, self.zero)) if b is not None and m is not None}
        return [joins[b.key_str] if b.key_str in joins else next(edges) for b in cell.executed()]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nodes = {0: x}  # an edge reads only nodes the input reaches, so only those are made
        done: dict[int, torch.Tensor] = {}  # a shared module's one output (its edges read equal values)
        sums: dict[tuple[int, ...], torch.Tensor] = {}  # a partial sum two nodes share is computed once
        for j in range(1, self.nodes):
            chain: tuple[int, ...] = ()
            for to, frm, k in self.edges:
                if to != j:
                    continue
                if k not in done:
                    done[k] = self.ops[k](nodes[frm])
                if not chain:
                    chain, nodes[j] = (k,), done[k]
                    continue
                chain = (*chain, k)
                if chain not in sums:
                    y = done[k]
                    sums[chain] = self.add(nodes[j], y) if self.add is not None else nodes[j] + y
                nodes[j] = sums[chain]
        out = self.nodes - 1
        if out in nodes:
            return nodes[out]
        return self.zero(x) if self.zero is not None else x.mul(0.0)


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
            out += m.block_modules() if isinstance(m, DAGCell) else [m]
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
