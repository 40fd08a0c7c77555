"""What a runner measures: a *target* is a recipe to build a PyTorch module plus its input shape.

- ``block_target(key, batch)``: one LUT row's module (``budgetnas.profiler.blocks.build_block``).
- ``model_target(space, arch, batch)``: a whole model of a space (``budgetnas.profiler.models.build_model``).
- ``module_target(module, example, name)``: any module with an example input (NCHW, batch first).

Modules are built with a fixed seed, so a recipe (block key or architecture string, batch, a
digest of the builder sources and, for a model, of its space's walk) identifies the artifact and
the exporter cache can skip building.
Inputs are deterministic ``randn`` tensors of ``input_shape`` (``target.example()``).
"""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import torch
from torch import nn

from budgetnas.core.errors import InvalidArgumentError
from budgetnas.spaces.base import SearchSpace
from budgetnas.spaces.blockkey import parse_block_key

SEED = 0


@cache
def builders_digest() -> str:
    """Digest of the sources that build modules: a change there invalidates cached artifacts."""
    here = Path(__file__).resolve().parent
    h = hashlib.sha256()
    for name in ("blocks.py", "models.py"):
        h.update((here / name).read_bytes())
    return h.hexdigest()[:16]


@dataclass(frozen=True)
class Target:
    name: str
    recipe: dict[str, Any]
    input_shape: tuple[int, ...]
    builder: Callable[[], nn.Module]

    def build(self) -> nn.Module:
        torch.manual_seed(SEED)
        return self.builder().eval()

    def example(self) -> torch.Tensor:
        return torch.randn(*self.input_shape, generator=torch.Generator().manual_seed(SEED))


def _check_batch(batch: int) -> int:
    if int(batch) < 1:
        raise InvalidArgumentError(f"batch must be >= 1, got {batch}")
    return int(batch)


def block_target(key: str, batch: int = 1) -> Target:
    from budgetnas.profiler.blocks import build_block

    k = parse_block_key(key)
    h, w, c = k.input
    text = str(k)
    return Target(text, {"kind": "block", "key": text, "batch": _check_batch(batch), "builders": builders_digest()},
                  (batch, c, h, w), lambda: build_block(text))


@cache
def walk_digest(space_type: type) -> str:
    """Digest of a space's module: its walk (blocks, nb201's live edges) decides what a model runs."""
    return hashlib.sha256(Path(inspect.getfile(space_type)).read_bytes()).hexdigest()[:16]


def model_target(space: SearchSpace[Any], arch: Any, batch: int = 1) -> Target:
    from budgetnas.profiler.models import build_model

    a = space.parse(arch) if isinstance(arch, str | dict) else arch
    name = space.format(a)
    c, h, w = space.input_shape
    return Target(name, {"kind": "model", "space": space.describe(), "arch": name, "batch": _check_batch(batch),
                         "builders": builders_digest(), "walk": walk_digest(type(space))},
                  (batch, c, h, w), lambda: build_model(space, a))


def module_digest(module: nn.Module) -> str:
    h = hashlib.sha256(repr(module).encode())
    for k, v in module.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def module_target(module: nn.Module, example: torch.Tensor, name: str | None = None) -> Target:
    """A target for an arbitrary module; its recipe is a digest of structure and weights."""
    module = module.eval()
    shape = tuple(example.shape)
    return Target(name or type(module).__name__,
                  {"kind": "module", "digest": module_digest(module), "input_shape": list(shape)},
                  shape, lambda: module)


def as_target(target: Target | str, batch: int) -> Target:
    """A block key string becomes a block target; a Target passes through."""
    return block_target(target, batch) if isinstance(target, str) else target
