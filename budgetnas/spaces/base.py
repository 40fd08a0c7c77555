"""The interface every search space implements, and the records it returns."""

from __future__ import annotations

import abc
import itertools
import math
import numbers
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import numpy as np

from budgetnas.core.errors import InvalidArchitectureError, InvalidArgumentError
from budgetnas.spaces.blockkey import BlockKey, Shape
from budgetnas.spaces.layout import CostTerm, Gate, KeyCost, UnitGrammar

A = TypeVar("A")


def whole(value: Any) -> int | None:
    """The project's one integer rule: ``value`` as an int when it is an integer or an integral float
    (3.0: JSON writers differ), else None (bools, 2.5, inf, NaN, strings)."""
    if isinstance(value, bool | np.bool_) or not isinstance(value, numbers.Real):
        return None
    if isinstance(value, numbers.Integral):
        return int(value)
    x = float(value)
    return int(x) if math.isfinite(x) and x.is_integer() else None


def int_param(name: str, value: Any, minimum: int = 1) -> int:
    """A space's integer parameter (channels, cells...): 2.5, "16", true and lists are refused by name."""
    n = whole(value)
    if n is None:
        raise InvalidArgumentError(f"{name} must be an integer, got {value!r}")
    if n < minimum:
        raise InvalidArgumentError(f"{name} must be >= {minimum}, got {value}")
    return n


def number_param(name: str, value: Any) -> float:
    """A space's real parameter (width): a finite number, not a string or a bool."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(float(value)):
        raise InvalidArgumentError(f"{name} must be a finite number, got {value!r}")
    return float(value)


DENSE_COST_TABLE = 100_000  # token vectors the default cost_terms walks one by one, at most


@dataclass(frozen=True)
class Decision:
    """One categorical choice of a space, emitted as one token by a generator.

    ``gate``: the decision counts only where an earlier token switches it on (otherwise the arch
    ignores it: canonical rows hold 0 there, features zeros). ``in_features``: whether its one-hot
    is part of the features (ofa-mbv3's depths are not: the active layer slots say them).
    """

    name: str
    choices: tuple[Any, ...]
    gate: Gate | None = None
    in_features: bool = True

    def index(self, value: Any, position: int) -> int:
        try:
            return self.choices.index(value)
        except ValueError:
            raise InvalidArchitectureError(
                f"position {position} ({self.name}): {value!r} is not one of {list(self.choices)}"
            ) from None


@dataclass(frozen=True)
class Block:
    """One step of an architecture's walk: its LUT key and the tensor shapes around it."""

    key: BlockKey
    flops: int  # multiply-accumulates, the space's convention
    params: int

    @property
    def key_str(self) -> str:
        return self.key.text

    @property
    def input_shape(self) -> Shape:
        return self.key.input

    @property
    def output_shape(self) -> Shape:
        return self.key.output


@dataclass(frozen=True)
class Cell:
    """A DAG of blocks inside a model: node 0 is its input, node ``nodes - 1`` its output, and each
    edge ``(to, from, block)`` adds ``block(node[from])`` into node ``to``. An output no edge
    reaches is zeros.

    A parameter-free block (``params == 0``: pooling, identity) is a function of its input alone, so
    edges that apply the same one to the same *value* share one computation: every graph compiler's
    common-subexpression elimination merges them (the ONNX exporters and onnxruntime do), and the
    built model computes it once. Two nodes hold the same value when they sum the same terms, or
    when one is only an ``identities`` op of the other (nb201's ``skip_connect``: node 1 = x0 makes
    ``pool(x1)`` the same as ``pool(x0)``). :meth:`executed` lists what runs, the blocks a LUT sum
    charges.

    Summing a node's terms runs additions too (:meth:`additions`), and a cell whose output no edge
    reaches multiplies its input by zero. Where the space gives them, ``add`` (one addition) and
    ``zero`` (that product) are blocks: charged like the rest. On a small cell they are not negligible:
    inside an ort-cpu model an nb201 addition costs a third to a half of a 3x3 pooling of the same map."""

    nodes: int
    edges: tuple[tuple[int, int, Block], ...]
    identities: frozenset[str] = frozenset()  # block ops that return their input
    add: Block | None = None  # one addition of two terms of a node (None: not charged)
    zero: Block | None = None  # the output of a cell with no edge into it (None: not charged)
    add_fused: Block | None = None  # an addition a conv can absorb (the space says how many: fused_adds)
    fused_adds: int = 0  # of the additions, those charged as add_fused

    def __post_init__(self) -> None:
        if self.fused_adds and self.add_fused is None:
            raise InvalidArgumentError(f"a cell with {self.fused_adds} fused additions needs an add_fused block")
        if not 0 <= self.fused_adds <= (self.additions() if self.add is not None else 0):
            raise InvalidArgumentError(f"a cell's fused additions must be among its {self.additions()} additions "
                                       f"(charged with an add block), got {self.fused_adds}")

    def values(self) -> tuple[int, ...]:
        """A value number per node (value numbering): nodes that compute the same tensor share one."""
        numbers: dict[tuple[object, ...], int] = {("input",): 0}
        out = [0]
        for j in range(1, self.nodes):
            terms: list[tuple[object, ...]] = []
            passed = []  # values an identity op passes on
            for e, (to, src, block) in enumerate(self.edges):
                if to != j:
                    continue
                if block.key.op in self.identities:
                    terms.append(("pass", out[src]))
                    passed.append(out[src])
                elif block.params == 0:
                    terms.append(("op", block.key_str, out[src]))
                else:
                    terms.append(("edge", e))  # weights of its own: never the same as another edge
            if len(terms) == 1 and passed:
                out.append(passed[0])  # the node is its only input's value
                continue
            expr: tuple[object, ...] = ("sum", *sorted(terms, key=repr)) if terms else ("zeros", j)
            out.append(numbers.setdefault(expr, len(numbers)))
        return tuple(out)

    def shared(self) -> tuple[tuple[int, str] | None, ...]:
        """Per edge, what identifies its computation among the cell's: ``(value, key)`` for a
        parameter-free block (equal pairs are one computation), None for a block with weights."""
        values = self.values()
        return tuple((values[src], block.key_str) if block.params == 0 else None for _, src, block in self.edges)

    def runs(self) -> tuple[bool, ...]:
        """Per edge, whether its block runs: not when an earlier edge already computes it."""
        seen: set[tuple[int, str]] = set()
        out = []
        for ident in self.shared():
            out.append(ident not in seen)
            if ident is not None:
                seen.add(ident)
        return tuple(out)

    def additions(self) -> int:
        """Additions its nodes run. A node sums its terms in edge order, ``((t1 + t2) + t3)``; a partial
        sum that another node already computes (the same terms in the same order: parameter-free ops of
        the same values) is that computation, as CSE makes it: ``x1 = pool(x0)``, ``x2 = pool(x0) +
        pool(x1)``, ``x3 = pool(x0) + pool(x1) + pool(x2)`` run 2 additions, not 3."""
        shared = self.shared()
        partial: set[tuple[object, ...]] = set()
        for j in range(1, self.nodes):
            chain: tuple[object, ...] = ()
            for e, (to, _, _) in enumerate(self.edges):
                if to == j:
                    chain = (*chain, shared[e] if shared[e] is not None else ("edge", e))
                    if len(chain) > 1:
                        partial.add(chain)
        return len(partial)

    def outputs_zeros(self) -> bool:
        """No edge reaches the output node: the cell returns zeros (its input times zero)."""
        return all(to != self.nodes - 1 for to, _, _ in self.edges)

    def executed(self) -> tuple[Block, ...]:
        """The blocks the cell runs: its edges' in edge order (a shared parameter-free block once; an
        ``identities`` op never: it passes its input on, and exporters drop it), then one ``add`` per
        addition (``fused_adds`` of them as ``add_fused``) and the ``zero`` of an output no edge
        reaches, where given."""
        out = [block for (_, _, block), run in zip(self.edges, self.runs(), strict=True)
               if run and block.key.op not in self.identities]
        if self.add is not None:
            out += [self.add] * (self.additions() - self.fused_adds)
            if self.add_fused is not None:
                out += [self.add_fused] * self.fused_adds
        if self.zero is not None and self.outputs_zeros():
            out.append(self.zero)
        return tuple(out)


class SearchSpace(abc.ABC, Generic[A]):
    """Ordered categorical decisions plus everything derived from an architecture.

    ``tokens`` are indices into each decision's choices; an architecture may ignore some
    tokens (those a :class:`Gate` switches off: layers past a shallow ofa-mbv3 unit's depth), so
    ``from_tokens(to_tokens(a)) == a`` but not every token vector is distinct.

    Everything outside ``spaces`` reads a space through this interface only (token layout,
    features, cost tables, model graph, resolutions), so a new space is one module.
    """

    name: str
    # searched input resolutions (then the *last* decision picks one), None when the space fixes it
    resolutions: tuple[int, ...] | None = None

    @property
    @abc.abstractmethod
    def decisions(self) -> tuple[Decision, ...]: ...

    @abc.abstractmethod
    def to_tokens(self, arch: A) -> list[int]: ...

    @abc.abstractmethod
    def from_tokens(self, tokens: Sequence[int]) -> A: ...

    @abc.abstractmethod
    def format(self, arch: A) -> str: ...

    @abc.abstractmethod
    def parse(self, text: str | dict[str, Any]) -> A: ...

    @abc.abstractmethod
    def blocks(self, arch: A) -> list[Block]:
        """The ordered blocks (LUT keys with shapes) the whole model runs: what a LUT sum charges."""

    @abc.abstractmethod
    def all_block_keys(self) -> list[str]:
        """Every block key an architecture of this space can produce, sorted."""

    @property
    @abc.abstractmethod
    def input_shape(self) -> Shape:
        """Model input as (C, H, W)."""

    def describe(self) -> dict[str, Any]:
        """Space parameters that change its keys (width, resolution...), for records and checkpoints."""
        return {"space": self.name}

    # ---- overridable: what a space may say about itself ---------------------------------------
    def cost_terms(self, cost: KeyCost) -> tuple[float, list[CostTerm]]:
        """Block costs folded into ``(base, terms)``: for every token row, ``base`` plus its terms'
        entries is ``sum(cost(k) for k in block_keys(from_tokens(row)))``. Called on spaces of
        one resolution (a searched one is folded from :meth:`at_resolution`'s spaces).

        This default is one table over every token vector, walked one by one (small spaces
        only); a space whose blocks each depend on a few tokens returns a table per slot."""
        sizes = [len(d.choices) for d in self.decisions]
        if math.prod(sizes) > DENSE_COST_TABLE:
            raise InvalidArgumentError(f"{self.name}: {math.prod(sizes):,} token vectors are too many for one "
                                       f"cost table; the space must fold its costs per slot (cost_terms)")
        table = np.asarray([sum(cost(k) for k in self.block_keys(self.from_tokens(t)))
                            for t in itertools.product(*(range(s) for s in sizes))], np.float64)
        return 0.0, [CostTerm(tuple(range(len(sizes))), table.reshape(sizes))]

    def graph(self, arch: A) -> list[Block | Cell]:
        """The model's structure over ``blocks(arch)`` (the same blocks, in order): a chain by
        default; a space of cells (nb201) groups blocks into :class:`Cell` DAGs, whose
        :meth:`Cell.executed` blocks are the ones ``blocks`` lists."""
        return list(self.blocks(arch))

    def unit_grammar(self) -> UnitGrammar | None:
        """How canonical strings split into units of layer tokens, when they do (ofa-mbv3)."""
        return None

    def at_resolution(self, resolution: int) -> SearchSpace[A]:
        """The fixed-resolution space of one of the searched ``resolutions`` (its LUT's space)."""
        raise InvalidArgumentError(f"{self.name} does not search its resolution")

    # ---- derived, shared by every space -------------------------------------------------
    def check_tokens(self, tokens: Sequence[int]) -> None:
        decs = self.decisions
        if len(tokens) != len(decs):
            raise InvalidArchitectureError(f"{self.name}: expected {len(decs)} tokens, got {len(tokens)}")
        for i, (t, d) in enumerate(zip(tokens, decs, strict=True)):
            if not 0 <= int(t) < len(d.choices):
                raise InvalidArchitectureError(
                    f"position {i} ({d.name}): token {t} out of range 0..{len(d.choices) - 1}"
                )

    def sample(self, rng: np.random.Generator) -> A:
        """Uniform over each decision independently."""
        return self.from_tokens([int(rng.integers(len(d.choices))) for d in self.decisions])

    def sample_many(self, n: int, seed: int | None = 0) -> list[A]:
        rng = np.random.default_rng(seed)
        return [self.sample(rng) for _ in range(n)]

    def mutate(self, arch: A, prob: float, rng: np.random.Generator) -> A:
        """Resample each decision with probability ``prob`` (Once-for-All's evolution mutation)."""
        toks = self.to_tokens(arch)
        for i, d in enumerate(self.decisions):
            if rng.random() < prob:
                toks[i] = int(rng.integers(len(d.choices)))
        return self.from_tokens(toks)

    def crossover(self, a: A, b: A, rng: np.random.Generator) -> A:
        """Take each decision from either parent with equal probability."""
        ta, tb = self.to_tokens(a), self.to_tokens(b)
        return self.from_tokens([x if rng.random() < 0.5 else y for x, y in zip(ta, tb, strict=True)])

    def flops(self, arch: A) -> int:
        return sum(b.flops for b in self.blocks(arch))

    def params(self, arch: A) -> int:
        return sum(b.params for b in self.blocks(arch))

    def block_keys(self, arch: A) -> list[str]:
        return [b.key_str for b in self.blocks(arch)]

    def canonical(self, text: str | dict[str, Any]) -> str:
        return self.format(self.parse(text))

    def token_matrix(self, archs: Iterable[A]) -> np.ndarray:
        return np.asarray([self.to_tokens(a) for a in archs], dtype=np.int64).reshape(-1, len(self.decisions))

    # ---- token matrices: (n, decisions), vectorised -------------------------------------------
    def _gate_masks(self, tok: np.ndarray) -> dict[int, np.ndarray]:
        """Per gated decision, the rows that use its token: its gate is on and the gate's own
        decision is used (ungated decisions are used by every row)."""
        decs = self.decisions
        on: dict[int, np.ndarray] = {}
        for i, d in enumerate(decs):
            g = d.gate
            if g is None:
                continue
            if not (0 <= g.pos < i and 0 < g.min < len(decs[g.pos].choices)):
                raise InvalidArgumentError(
                    f"{self.name}: decision {i} ({d.name}) has gate {g}: its position must come before it "
                    f"and its min be a token 1.. of that decision")
            on[i] = tok[:, g.pos] >= g.min
            if g.pos in on:
                on[i] &= on[g.pos]
        return on

    def canonical_tokens(self, tokens: np.ndarray) -> np.ndarray:
        """A copy with the tokens archs ignore set to 0, so equal archs have equal rows."""
        tok = np.array(tokens, np.int64, copy=True)
        rows = tok.reshape(-1, len(self.decisions))  # a view: zeroing it zeroes ``tok``
        for i, used in self._gate_masks(rows).items():
            rows[~used, i] = 0
        return tok

    @property
    def feature_dim(self) -> int:
        return sum(len(d.choices) for d in self.decisions if d.in_features)

    def token_features(self, tokens: np.ndarray) -> np.ndarray:
        """The features (float32): per decision ``in_features``, in order, a one-hot of its token,
        all zeros where the arch ignores it."""
        tok = np.asarray(tokens, np.int64).reshape(-1, len(self.decisions))
        on = self._gate_masks(tok)
        out = np.zeros((len(tok), self.feature_dim), np.float32)
        rows, off = np.arange(len(tok)), 0
        for i, d in enumerate(self.decisions):
            if d.in_features:
                out[rows, off + tok[:, i]] = on.get(i, 1.0)
                off += len(d.choices)
        return out

    def features(self, arch: A) -> np.ndarray:
        return self.token_features(np.asarray([self.to_tokens(arch)]))[0]

    def features_many(self, archs: Iterable[A]) -> np.ndarray:
        return self.token_features(self.token_matrix(archs))

    def token_resolutions(self, tokens: np.ndarray) -> np.ndarray:
        """Each row's input resolution: the searched one (the last token), else the space's."""
        tok = np.asarray(tokens, np.int64).reshape(-1, len(self.decisions))
        if self.resolutions is None:
            return np.full(len(tok), self.input_shape[1], np.int64)
        return np.asarray(self.resolutions, np.int64)[tok[:, -1]]


class ImageSpace(SearchSpace[A]):
    """A space of models of one square RGB image of ``resolution`` px whose decisions are fixed when it
    is built (``_decisions``): what nb201 and ofa-mbv3 share."""

    resolution: int
    _decisions: tuple[Decision, ...]

    @property
    def decisions(self) -> tuple[Decision, ...]:
        return self._decisions

    @property
    def input_shape(self) -> Shape:
        return (3, self.resolution, self.resolution)
