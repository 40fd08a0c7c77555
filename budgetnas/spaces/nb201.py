"""NAS-Bench-201: a cell of 4 nodes and 6 edges, each edge one of 5 operations.

Architecture strings are NB201's own: ``|op~0|+|op~0|op~1|+|op~0|op~1|op~2|``. The macro network
(TinyNetwork) is a 3x3 conv stem, N cells at C, a residual reduction block, N cells at 2C, another
reduction, N cells at 4C, then BN-ReLU-global-pool-linear. Block keys are per operation, channel
count and feature size (``nor_conv_3x3-input:32x32x16-output:32x32x16``) plus ``stem``,
``resblock`` and ``head``. Only *live* edges have blocks (:func:`live_edges`): ``none`` edges, and
edges that ``none`` edges cut off from the cell's input or output, are not run by the exported model
(a graph optimiser drops an unused output; the built model skips them), so a LUT sum must not charge
them. Nor does it charge twice a parameter-free op (``avg_pool_3x3``) that two edges apply to one
value (the same node, or a node that is only ``skip_connect`` of it): that is one computation
(:func:`runs`, :meth:`budgetnas.spaces.base.Cell.executed`), built once; nor a ``skip_connect`` at all
(it passes its input on: exporters drop it). What a node's sum runs is charged too: an ``add`` block
per addition, and a ``zeros`` block for a cell whose output no live edge reaches (:func:`joins`).
Three additions per cell over 15 cells cost about 0.05 ms on ort-cpu, against whole models of
0.1-2 ms (bench/results/lut_fidelity).

Graph optimisers fold a conv's neighbours into it (:func:`fusion`): a ReLU that conv edges read is
computed once, and folds into the conv that produced its input when nothing else reads that output;
an addition folds into a conv whose output only it reads. So a conv edge whose ReLU runs elsewhere is
charged as ``nor_conv_KxK_fused`` and such an addition as ``add_fused``: the same modules, timed alike,
but calibration groups of their own, which learn what a runtime makes of the context (the fitted
ort-cpu scales are in bench/results/lut_fidelity).

FLOPs and params follow the NB201 API, whose tables count every non-``none`` edge, dead or not:
multiply-accumulates of convolutions and the classifier plus the classifier bias, pooling not
counted; params include BN affine weights. They are therefore not sums over ``blocks`` when an
arch has dead edges.
"""

from __future__ import annotations

import itertools
import re
from collections import Counter
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
# every op a cell's blocks can have (:func:`cell_ops`): its edges', in their fusion contexts, then its sums'
CHARGED = ("nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3", "nor_conv_1x1_fused",
           "nor_conv_3x3_fused", "add", "add_fused", "zeros")


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


# ---- fusion contexts ------------------------------------------------------------------------
FUSED = {"nor_conv_1x1": "nor_conv_1x1_fused", "nor_conv_3x3": "nor_conv_3x3_fused", "add": "add_fused"}


@dataclass(frozen=True)
class Fusion:
    """Where a cell's ops sit in a fusion context (:func:`fusion`)."""

    relu_elsewhere: tuple[bool, ...]  # per edge (EDGES order): a conv edge whose ReLU is not its own to run
    adds: int  # of the cell's additions (:func:`joins`), those a conv can absorb
    out_conv: bool  # the output is a conv's, read nowhere else in the cell: the next ReLU can fold into it


@cache
def fusion(ops: tuple[str, ...], input_conv: bool = True) -> Fusion:
    """The fusion contexts of a cell whose input is a conv's output (the stem's, a reduction's, or a
    cell's with ``out_conv``) when ``input_conv``.

    A conv edge is ReLU-Conv-BN, and what the whole model runs of its ReLU and of the node sums
    depends on its neighbours: exporters compute one ReLU per value that conv edges read (CSE), and
    a graph optimiser folds a conv's epilogue into it: an addition into a conv whose output only
    that addition reads (onnxruntime's NCHWc ``Sum`` input), a ReLU into a conv whose output only
    that ReLU reads. A conv edge's ReLU is *elsewhere* when another conv edge reads the same value
    and is charged it (a 1x1 conv before a 3x3, then the first), or when the value is the output of
    a conv that nothing else reads; an addition is absorbable when one of its terms is the output of
    a conv that nothing else reads and that has absorbed none yet. The rule follows onnxruntime's
    CPU optimiser, checked against its optimised graphs (tests/test_nb201_live_edges.py); whether a
    runtime does fold them is the calibration's to learn (the blocks' own groups, ``key_group``).
    """
    cell = _unit_cell(ops)
    values, shared = cell.values(), cell.shared()
    kind: list[str] = ["input"]  # tensor -> what produces it; tensor 0 is the cell input
    args: list[tuple[int, ...]] = [()]

    def new(what: str, *inputs: int) -> int:
        kind.append(what)
        args.append(inputs)
        return len(kind) - 1

    tensor = {values[0]: 0}  # value number -> tensor
    relu: dict[int, int] = {}  # tensor -> its ReLU
    owner: dict[int, int] = {}  # ReLU -> the edge charged it
    made: dict[object, int] = {}  # a parameter-free op of a value: one tensor
    sums: dict[tuple[object, ...], int] = {}  # a partial sum: one addition (Cell.additions)
    for j in range(1, cell.nodes):
        acc: int | None = None
        chain: tuple[object, ...] = ()
        for e, (to, src, block) in enumerate(cell.edges):
            if to != j:
                continue
            x = tensor[values[src]]
            if block.params == 0:
                ident: object = shared[e]
                if block.key.op in cell.identities:
                    t = x
                else:
                    if ident not in made:
                        made[ident] = new("op", x)
                    t = made[ident]
            else:
                if x not in relu:
                    relu[x] = new("relu", x)
                # one of its readers is charged the ReLU: a 1x1 conv before a 3x3 (so that a relabelling,
                # which reorders edges, does not move it), then the first
                if relu[x] not in owner or block.key.op < cell.edges[owner[relu[x]]][2].key.op:
                    owner[relu[x]] = e
                t, ident = new("conv", relu[x]), ("edge", e)
            chain = (*chain, ident)
            if acc is None:
                acc = t
            else:
                if chain not in sums:
                    sums[chain] = new("add", acc, t)
                acc = sums[chain]
        if acc is not None:
            tensor.setdefault(values[j], acc)
    out = None if cell.outputs_zeros() else tensor[values[-1]]
    uses = Counter(i for a in args for i in a)
    if out is not None:
        uses[out] += 1  # the next cell (or block) reads it
    alias: dict[int, int] = {}  # an absorbed addition -> the conv that now computes it
    summed: set[int] = set()
    for t, what in enumerate(kind):
        if what != "add":
            continue
        for c in (alias.get(i, i) for i in args[t]):
            if kind[c] == "conv" and c not in summed and uses[c] == 1:
                summed.add(c)
                alias[t] = c
                uses[c] = uses[t]
                break

    def folds(x: int) -> bool:  # a ReLU of x folds into x's producer
        x = alias.get(x, x)
        return uses[x] == 1 and (kind[x] == "conv" or (x == 0 and input_conv))

    own = {e: not folds(args[r][0]) for r, e in owner.items()}
    elsewhere = iter(block.params > 0 and not own.get(e, False) for e, (_, _, block) in enumerate(cell.edges))
    relu_elsewhere = tuple(on and next(elsewhere) for on in live_edges(ops))
    # the next cell's ReLU of it folds in by the same rule (its one use is the output)
    return Fusion(relu_elsewhere, len(alias), out is not None and folds(out))


@cache
def fusions(ops: tuple[str, ...], cells: int) -> tuple[Fusion, ...]:
    """:func:`fusion` of each cell of a stage: the first reads the stage's first block (the stem's
    conv, or a reduction ending in a conv's sum), the others the cell before."""
    out, input_conv = [], True
    for _ in range(cells):
        out.append(fusion(ops, input_conv))
        input_conv = out[-1].out_conv
    return tuple(out)


@cache
def cell_ops(ops: tuple[str, ...], cells: int) -> tuple[tuple[str, ...], ...]:
    """Per cell of a stage (:func:`fusions`), the ops of the blocks it runs: its edges' (:func:`runs`,
    a conv edge whose ReLU is elsewhere as ``nor_conv_KxK_fused``), then its additions (absorbable
    ones as ``add_fused``) and its zeros (:func:`joins`)."""
    adds, zeros = joins(ops)
    out = []
    for f in fusions(ops, cells):
        edges = [FUSED[op] if elsewhere else op
                 for op, run, elsewhere in zip(ops, runs(ops), f.relu_elsewhere, strict=True)
                 if run and op not in IDENTITIES]
        out.append((*edges, *["add"] * (adds - f.adds), *["add_fused"] * f.adds, *["zeros"] * zeros))
    return tuple(out)


_SWAP_12 = (1, 0, 2, 3, 5, 4)  # edge positions after exchanging the labels of nodes 1 and 2 (when 2<-1 is none)


def relabelled(ops: Sequence[str]) -> tuple[str, ...]:
    """The cell's canonical spelling under relabelling its two intermediate nodes: when edge 2<-1 is
    ``none``, nodes 1 and 2 both read the cell input alone and are interchangeable, so
    ``(a, b, none, c, d, e)`` and ``(b, a, none, c, e, d)`` are one network, every op (live, dead or
    ``none``) the same, in any runtime (node 3 sums its terms in another order, which can move a
    fusion context: :func:`fusion`; 120 pairs). The smaller spelling of the two; 1,500 pairs among the 15,625
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
        base = op.removesuffix("_fused")
        if base in WEIGHTED:
            return Block(key, *_conv_cost(h, c, c, int(base[-1])))  # nor_conv_KxK(_fused)
        return Block(key, 0, 0)  # skip_connect, avg_pool_3x3, add(_fused), zeros: no weights, not counted

    def blocks(self, arch: NB201Arch) -> list[Block]:
        """Stem, then per stage (resblock), its cells' blocks (:func:`cell_ops`: the ops of the edges
        that run, in EDGES order: live, a shared parameter-free op once, :func:`runs`, a conv whose
        ReLU is elsewhere as ``_fused``; then the additions, absorbable ones as ``add_fused``, and the
        ``zeros`` of an output no edge reaches, :func:`joins`), then head: ``Cell.executed`` of
        :meth:`graph`'s cells."""
        return self._walk(cell_ops(arch.ops, self.cells))

    def flops(self, arch: NB201Arch) -> int:
        return sum(b.flops for b in self._walk([[op for op in arch.ops if op != "none"]] * self.cells))  # NB201 API

    def params(self, arch: NB201Arch) -> int:
        return sum(b.params for b in self._walk([[op for op in arch.ops if op != "none"]] * self.cells))  # NB201 API

    def _walk(self, per_cell: Sequence[Sequence[str]]) -> list[Block]:
        """Stem; per stage its reduction (but the first's) and each of its cells' ops; head."""
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
            for ops in per_cell:
                out += [self._op_block(op, c, h) for op in ops]
        c, h = stages[-1]
        n = self.num_classes
        out.append(Block(BlockKey("head", (h, h, c), (n,)), c * n + n, 2 * c + c * n + n))
        return out

    def all_block_keys(self) -> list[str]:
        keys = {b.key_str for b in self._walk([()] * self.cells)}  # stem, reductions, head
        for c, h in self._stages():
            keys.update(self._op_block(op, c, h).key_str for op in CHARGED)
        return sorted(keys)

    def graph(self, arch: NB201Arch) -> list[Block | Cell]:
        """Stem, then per stage (its resblock) ``cells`` cells of the live edges, then head."""
        alive = live_edges(arch.ops)
        chain = iter(self._walk([()] * self.cells))
        out: list[Block | Cell] = [next(chain)]
        for stage, (c, h) in enumerate(self._stages()):
            if stage:
                out.append(next(chain))
            add, add_fused, zero = (self._op_block(op, c, h) for op in ("add", "add_fused", "zeros"))
            for f in fusions(arch.ops, self.cells):
                edges = tuple((j, i, self._op_block(FUSED[op] if elsewhere else op, c, h))
                              for (j, i), op, on, elsewhere
                              in zip(EDGES, arch.ops, alive, f.relu_elsewhere, strict=True) if on)
                out.append(Cell(4, edges, IDENTITIES, add, zero, add_fused, f.adds))
        out.append(next(chain))
        return out

    # ---- the walk folded into a cost table ------------------------------------------------
    def cost_terms(self, cost: KeyCost) -> tuple[float, list[CostTerm]]:
        """Fixed blocks (stem, reductions, head) + Σ over the ops the cells run (:func:`cell_ops`: which
        edges run, and in which fusion context, depend on the other edges) of the op's cost summed over
        the stages: one term over all six edges, a 5^6 table."""
        n_edges = len(self.decisions)
        base = sum(cost(b.key_str) for b in self._walk([()] * self.cells))  # stem, resblocks, head
        per_op = np.array([sum(cost(self._op_block(op, c, h).key_str) for c, h in self._stages()) for op in CHARGED])
        table = _charged_grid(self.cells) @ per_op
        return base, [CostTerm(tuple(range(n_edges)), table.reshape((len(OPS),) * n_edges))]


@cache
def _charged_grid(cells: int) -> np.ndarray:
    """How many of each ``CHARGED`` op a stage's cells run (:func:`cell_ops`), for every cell in C order
    of the token grid (5^6 x ops, computed once per number of cells)."""
    col = {op: i for i, op in enumerate(CHARGED)}
    out = np.zeros((len(OPS) ** len(EDGES), len(CHARGED)))
    for n, ops in enumerate(itertools.product(OPS, repeat=len(EDGES))):  # C order: the last edge varies fastest
        for per_cell in cell_ops(ops, cells):
            for op in per_cell:
                out[n, col[op]] += 1
    return out
