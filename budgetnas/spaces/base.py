"""The interface every search space implements, and the records it returns."""

from __future__ import annotations

import abc
import math
import numbers
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import numpy as np

from budgetnas.core.errors import InvalidArchitectureError, InvalidArgumentError
from budgetnas.spaces.blockkey import BlockKey, Shape

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


@dataclass(frozen=True)
class Decision:
    """One categorical choice of a space, emitted as one token by a generator."""

    name: str
    choices: tuple[Any, ...]

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


class SearchSpace(abc.ABC, Generic[A]):
    """Ordered categorical decisions plus everything derived from an architecture.

    ``tokens`` are indices into each decision's choices; an architecture may ignore some
    tokens (inactive layers of a shallow ofa-mbv3 unit), so ``from_tokens(to_tokens(a)) == a``
    but not every token vector is distinct.
    """

    name: str

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
        """The ordered blocks (LUT keys with shapes) that make up the whole model."""

    @abc.abstractmethod
    def all_block_keys(self) -> list[str]:
        """Every block key an architecture of this space can produce, sorted."""

    @abc.abstractmethod
    def features(self, arch: A) -> np.ndarray:
        """One-hot encoding (float32) of the architecture, length ``feature_dim``."""

    @property
    @abc.abstractmethod
    def feature_dim(self) -> int: ...

    @property
    @abc.abstractmethod
    def input_shape(self) -> Shape:
        """Model input as (C, H, W)."""

    def describe(self) -> dict[str, Any]:
        """Space parameters that change its keys (width, resolution...), for records and checkpoints."""
        return {"space": self.name}

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

    def features_many(self, archs: Iterable[A]) -> np.ndarray:
        rows = [self.features(a) for a in archs]
        return np.stack(rows) if rows else np.zeros((0, self.feature_dim), np.float32)

    def token_matrix(self, archs: Iterable[A]) -> np.ndarray:
        return np.asarray([self.to_tokens(a) for a in archs], dtype=np.int64).reshape(-1, len(self.decisions))
