"""NAS-Bench-201: a cell of 4 nodes and 6 edges, each edge one of 5 operations.

Architecture strings are NB201's own: ``|op~0|+|op~0|op~1|+|op~0|op~1|op~2|``. The macro network
(TinyNetwork) is a 3x3 conv stem, N cells at C, a residual reduction block, N cells at 2C, another
reduction, N cells at 4C, then BN-ReLU-global-pool-linear. Block keys are per operation, channel
count and feature size (``nor_conv_3x3-input:32x32x16-output:32x32x16``) plus ``stem``,
``resblock`` and ``head``. Only *live* edges have blocks (:func:`live_edges`): ``none`` edges, and
edges that ``none`` edges cut off from the cell's input or output, are not run by the exported model
(a graph optimiser drops an unused output; the built model skips them), so a LUT sum must not charge
them. Nor does it charge twice a parameter-free op (``avg_pool_3x3``, ``skip_connect``) that two edges
apply to one value (the same node, or a node that is only ``skip_connect`` of it): that is one
computation (:func:`runs`, :meth:`budgetnas.spaces.base.Cell.executed`), built once. What a node's
sum runs is charged too: an ``add`` block per addition, and a ``zeros`` block for a cell whose output
no live edge reaches (:func:`joins`). Three additions per cell over 15 cells cost about 0.05 ms on
ort-cpu, against whole models of 0.1-2 ms (bench/results/lut_fidelity).

FLOPs and params follow the NB201 API, whose tables count every non-``none`` edge, dead or not:
multiply-accumulates of convolutions and the classifier plus the classifier bias, pooling not
counted; params include BN affine weights. They are therefore not sums over ``blocks`` when an
arch has dead edges.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np

from budgetnas.core.errors import InvalidArchitectureError, InvalidArgumentError
from budgetnas.spaces.base import Block, Cell, Decision, ImageSpace, int_param
from budgetnas.spaces.blockkey import BlockKey
from budgetnas.spaces.layout import CostTerm, KeyCost

OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
# (to_node, from_node) in NB201 string order
EDGES = ((1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2))
_NODE_RE = re.compile(r"^([a-z_0-9]+)~(\d{1,4})$", re.ASCII)  # ASCII digits, few: int() stays cheap


def live_edges(ops: Sequence[str]) -> tuple[bool, ...]:
    """Which edges (``EDGES`` order) the cell's output depends on: the non-``none`` edges whose
    input node the cell's input reaches, and whose output node reaches the cell's output, through
    non-``none`` edges. The others are dead: their output is never used, or is computed from a
    zero node alone (a constant). The one definition behind block keys, the built model and the
    cost tables (:meth:`NASBench201.cost_terms`); no live edge at all means the cell outputs zeros.
    """
    on = [op != "none" for op in ops]
    reached = [True, False, False, False]  # from node 0 (the cell input)
    for (j, i), e in zip(EDGES, on, strict=True):  # EDGES is sorted by to-node: sources come first
        reached[j] = reached[j] or (e and reached[i])
    reaches = [False, False, False, True]  # to node 3 (the cell output)
    for (j, i), e in sorted(zip(EDGES, on, strict=True), key=lambda t: -t[0][1]):
        reaches[i] = reaches[i] or (e and reaches[j])
    return tuple(e and reached[i] and reaches[j] for (j, i), e in zip(EDGES, on, strict=True))


WEIGHTED = frozenset({"nor_conv_1x1", "nor_conv_3x3"})  # ops with weights (ReLU-Conv-BN); the others are functions
IDENTITIES = frozenset({"skip_connect"})  # ops that return their input: node j = skip(x_i) is x_i
JOINS = ("add", "zeros")  # blocks a cell runs besides its edges' ops (:func:`joins`)


@cache
def _unit_cell(ops: tuple[str, ...]) -> Cell:
    """The cell of the live edges, shapes left out: what runs in it depends on its ops alone."""
    edges = tuple((j, i, Block(BlockKey(op, (1, 1, 1), (1, 1, 1)), 0, int(op in WEIGHTED)))
                  for (j, i), op, on in zip(EDGES, ops, live_edges(ops), strict=True) if on)
    return Cell(4, edges, IDENTITIES)


@cache
def runs(ops: tuple[str, ...]) -> tuple[bool, ...]:
    """Per edge (``EDGES`` order), whether the cell runs its op: live (:func:`live_edges`) and not
    an op an earlier edge already computes on the same value (:meth:`Cell.executed`: a
    parameter-free op, ``avg_pool_3x3`` or ``skip_connect``, applied twice to one node, or to two
    nodes that hold one value)."""
    run = iter(_unit_cell(ops).runs())
    return tuple(on and next(run) for on in live_edges(ops))


@cache
def joins(ops: tuple[str, ...]) -> tuple[int, bool]:
    """What the cell runs besides its edges' ops: its nodes' additions (:meth:`Cell.additions`), and
    whether its output is zeros (no live edge reaches it: the input times zero)."""
    cell = _unit_cell(ops)
    return cell.additions(), cell.outputs_zeros()


_SWAP_12 = (1, 0, 2, 3, 5, 4)  # edge positions after exchanging the labels of nodes 1 and 2 (when 2<-1 is none)


def relabelled(ops: Sequence[str]) -> tuple[str, ...]:
    """The cell's canonical spelling under relabelling its two intermediate nodes: when edge 2<-1 is
    ``none``, nodes 1 and 2 both read the cell input alone and are interchangeable, so
    ``(a, b, none, c, d, e)`` and ``(b, a, none, c, e, d)`` are one network, every op (live, dead or
    ``none``) the same, in any runtime. The smaller spelling of the two; 1,500 pairs among the 15,625
    cells (the only graph isomorphisms of the full cell). Not the 6,466 "unique" cells of
    NAS-Bench-201's ``to_unique_str``: those treat skip as identity and drop dead edges, so they merge
    networks that compute different ops.
    """
    ops = tuple(ops)
    if len(ops) != len(EDGES):
        raise InvalidArchitectureError(f"nb201: a cell has {len(EDGES)} edges, got {len(ops)}")
    if ops[2] != "none":
        return ops
    return min(ops, tuple(ops[k] for k in _SWAP_12))


@dataclass(frozen=True)
class NB201Arch:
    ops: tuple[str, ...]  # one per edge, in EDGES order


def _conv_cost(h: int, cin: int, cout: int, k: int) -> tuple[int, int]:
    """MACs and params of ReLU-Conv(no bias)-BN at output size h."""
    return h * h * cin * cout * k * k, cin * cout * k * k + 2 * cout


class NASBench201(ImageSpace[NB201Arch]):
    name = "nb201"

    def __init__(self, channels: int = 16, cells: int = 5, resolution: int = 32, num_classes: int = 10) -> None:
        channels, cells = int_param("channels", channels), int_param("cells", cells)
        num_classes, resolution = int_param("num_classes", num_classes), int_param("resolution", resolution)
        if resolution < 4 or resolution % 4:
            raise InvalidArgumentError(f"resolution must be a positive multiple of 4, got {resolution}")
        self.channels, self.cells, self.resolution, self.num_classes = channels, cells, resolution, num_classes
        self._decisions = tuple(Decision(f"edge{j}<-{i}", OPS) for j, i in EDGES)

    def describe(self) -> dict[str, Any]:
        return {"space": self.name, "channels": self.channels, "cells": self.cells,
                "resolution": self.resolution, "num_classes": self.num_classes}

    def to_tokens(self, arch: NB201Arch) -> list[int]:
        return [OPS.index(o) for o in arch.ops]

    def from_tokens(self, tokens: Sequence[int]) -> NB201Arch:
        self.check_tokens(tokens)
        return NB201Arch(tuple(OPS[int(t)] for t in tokens))

    def format(self, arch: NB201Arch) -> str:
        nodes, i = [], 0
        for j in (1, 2, 3):
            nodes.append("|" + "|".join(f"{arch.ops[i + k]}~{k}" for k in range(j)) + "|")
            i += j
        return "+".join(nodes)

    def parse(self, text: str | dict[str, Any]) -> NB201Arch:
        if not isinstance(text, str):
            raise InvalidArchitectureError(f"{self.name}: architecture must be an NB201 string like "
                                           f"'|nor_conv_3x3~0|+|none~0|skip_connect~1|+|...|'")
        nodes = text.strip().split("+")
        if len(nodes) != 3:
            raise InvalidArchitectureError(f"{self.name}: {text!r} must have 3 '+'-separated nodes, got {len(nodes)}")
        ops: list[str] = []
        for j, node in enumerate(nodes, start=1):
            if not (node.startswith("|") and node.endswith("|")):
                raise InvalidArchitectureError(f"node {j}: {node!r} must be enclosed in '|'")
            inputs = node[1:-1].split("|")
            if len(inputs) != j:
                raise InvalidArchitectureError(f"node {j}: expected {j} input edge(s), got {len(inputs)} in {node!r}")
            for i, edge in enumerate(inputs):
                m = _NODE_RE.match(edge)
                position = len(ops)
                if not m or int(m.group(2)) != i:
                    raise InvalidArchitectureError(
                        f"position {position} (edge {j}<-{i}): {edge!r} must be '<op>~{i}'")
                op = m.group(1)
                if op not in OPS:
                    raise InvalidArchitectureError(
                        f"position {position} (edge {j}<-{i}): {op!r} is not one of {list(OPS)}")
                ops.append(op)
        return NB201Arch(tuple(ops))

    # ---- walk -----------------------------------------------------------------------------
    def _stages(self) -> list[tuple[int, int]]:
        c, h = self.channels, self.resolution
        return [(c, h), (2 * c, h // 2), (4 * c, h // 4)]

    def _op_block(self, op: str, c: int, h: int) -> Block:
        key = BlockKey(op, (h, h, c), (h, h, c))
        if op in WEIGHTED:
            return Block(key, *_conv_cost(h, c, c, int(op[-1])))  # nor_conv_KxK
        return Block(key, 0, 0)  # skip_connect, avg_pool_3x3, add, zeros: no weights, not counted

    def blocks(self, arch: NB201Arch) -> list[Block]:
        """Stem, then per stage (resblock), cells x (the ops of the edges that run, in EDGES order:
        live, a shared parameter-free op once, :func:`runs`; then an ``add`` per addition and the
        ``zeros`` of an output no edge reaches, :func:`joins`), then head: ``Cell.executed`` of
        :meth:`graph`'s cells."""
        adds, zeros = joins(arch.ops)
        cell_ops = [op for op, run in zip(arch.ops, runs(arch.ops), strict=True) if run]
        return self._walk(arch, [*cell_ops, *["add"] * adds, *["zeros"] * zeros])

    def flops(self, arch: NB201Arch) -> int:
        return sum(b.flops for b in self._walk(arch, [op for op in arch.ops if op != "none"]))  # NB201 API

    def params(self, arch: NB201Arch) -> int:
        return sum(b.params for b in self._walk(arch, [op for op in arch.ops if op != "none"]))  # NB201 API

    def _walk(self, arch: NB201Arch, cell_ops: list[str]) -> list[Block]:
        r, c0 = self.resolution, self.channels
        stem_macs, stem_params = r * r * 3 * c0 * 9, 27 * c0 + 2 * c0
        out = [Block(BlockKey("stem", (r, r, 3), (r, r, c0)), stem_macs, stem_params)]
        stages = self._stages()
        for s, (c, h) in enumerate(stages):
            if s > 0:
                cp, hp = stages[s - 1]
                a_m, a_p = _conv_cost(h, cp, c, 3)
                b_m, b_p = _conv_cost(h, c, c, 3)
                out.append(Block(BlockKey("resblock", (hp, hp, cp), (h, h, c)),
                                 a_m + b_m + h * h * cp * c, a_p + b_p + cp * c))
            for _ in range(self.cells):
                out += [self._op_block(op, c, h) for op in cell_ops]
        c, h = stages[-1]
        n = self.num_classes
        out.append(Block(BlockKey("head", (h, h, c), (n,)), c * n + n, 2 * c + c * n + n))
        return out

    def all_block_keys(self) -> list[str]:
        r, c0 = self.resolution, self.channels
        keys = {str(b.key) for b in self.blocks(NB201Arch(("nor_conv_3x3",) * 6))}
        for c, h in self._stages():
            keys.update(str(self._op_block(op, c, h).key) for op in (*OPS[1:], *JOINS))
        keys.add(str(BlockKey("stem", (r, r, 3), (r, r, c0))))
        return sorted(keys)

    def graph(self, arch: NB201Arch) -> list[Block | Cell]:
        """Stem, then per stage (its resblock) ``cells`` cells of the live edges, then head."""
        alive = live_edges(arch.ops)
        live = [edge for edge, on in zip(EDGES, alive, strict=True) if on]
        it = iter(self._walk(arch, [op for op, on in zip(arch.ops, alive, strict=True) if on]))
        out: list[Block | Cell] = [next(it)]
        for stage in range(len(self._stages())):
            if stage:
                out.append(next(it))
            c, h = self._stages()[stage]
            add, zero = self._op_block("add", c, h), self._op_block("zeros", c, h)
            out += [Cell(4, tuple((j, i, next(it)) for j, i in live), IDENTITIES, add, zero)
                    for _ in range(self.cells)]
        out.append(next(it))
        return out

    # ---- the walk folded into a cost table ------------------------------------------------
    def cost_terms(self, cost: KeyCost) -> tuple[float, list[CostTerm]]:
        """Fixed blocks (stem, reductions, head) + Σ over the edges that run (:func:`runs`: live,
        a shared parameter-free op once) of the edge's op cost summed over the stages (x cells), +
        the cell's additions and zeros (:func:`joins`) likewise. Whether an edge runs depends on the
        other edges, so it is one term over all six edges: a 5^6 table."""
        ops = self.decisions[0].choices
        n_edges = len(self.decisions)
        none_tok = [0] * n_edges  # token 0 is 'none'
        base = sum(cost(str(b.key)) for b in self._walk(self.from_tokens(none_tok), []))  # stem, resblocks, head
        per_cell = {j: self.cells * sum(cost(str(self._op_block(j, c, h).key)) for c, h in self._stages())
                    for j in JOINS}
        # an op's blocks cost the same on every live edge; probe them with edge 3<-0, live on its own
        probe = EDGES.index((3, 0))
        per_op = np.zeros(len(ops))
        for o in range(1, len(ops)):
            toks = list(none_tok)
            toks[probe] = o
            per_op[o] = sum(cost(b.key_str) for b in self.blocks(self.from_tokens(toks)) if b.key.op == ops[o])
        grid = np.indices((len(ops),) * n_edges).reshape(n_edges, -1).T  # every token vector, C order
        adds, zeros = _joins_grid()
        table = (_runs_grid() * per_op[grid]).sum(1) + adds * per_cell["add"] + zeros * per_cell["zeros"]
        return base, [CostTerm(tuple(range(n_edges)), table.reshape((len(ops),) * n_edges))]


@cache
def _runs_grid() -> np.ndarray:
    """:func:`runs` of every cell, rows in C order of the token grid (5^6 x 6 bools, computed once)."""
    cells = itertools.product(OPS, repeat=len(EDGES))  # C order: the last edge varies fastest
    return np.array([runs(ops) for ops in cells])


@cache
def _joins_grid() -> tuple[np.ndarray, np.ndarray]:
    """:func:`joins` of every cell in the same order: additions, and whether the output is zeros."""
    both = np.array([joins(ops) for ops in itertools.product(OPS, repeat=len(EDGES))], dtype=float)
    return both[:, 0], both[:, 1]
