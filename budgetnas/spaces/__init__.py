"""Search spaces: decisions, canonical architecture strings, block keys, FLOPs/params, features.

A new space is one module: a :class:`SearchSpace` subclass (everything outside ``spaces`` reads it
through that interface) and its entry in ``SPACES`` (here, or :func:`register_space` from outside).

Pure Python + numpy; imports nothing of the project but the leaf ``budgetnas.core.errors``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from budgetnas.core.errors import InvalidArgumentError, UnknownNameError
from budgetnas.spaces.base import Block, Cell, Decision, SearchSpace
from budgetnas.spaces.blockkey import BlockKey, format_block_key, parse_block_key
from budgetnas.spaces.layout import CostTerm, Gate, UnitGrammar
from budgetnas.spaces.nb201 import NASBench201, NB201Arch
from budgetnas.spaces.ofa_mbv3 import OFAArch, OFAMobileNetV3

SPACES: dict[str, Callable[..., SearchSpace[Any]]] = {
    OFAMobileNetV3.name: OFAMobileNetV3,
    NASBench201.name: NASBench201,
}


def register_space(name: str, factory: Callable[..., SearchSpace[Any]]) -> None:
    """Add a space to the registry, so records, LUTs, bundles and the server find it by name
    (``factory`` builds it from ``describe()``'s parameters; a class's ``name`` must be ``name``)."""
    if not isinstance(name, str) or not name.strip() or name != name.strip():
        raise InvalidArgumentError(f"a search space's name must be a non-empty string without outer blanks, "
                                   f"got {name!r}")
    if name in SPACES:
        raise InvalidArgumentError(f"search space {name!r} is already registered")
    own = getattr(factory, "name", name)
    if own != name:
        raise InvalidArgumentError(f"search space {name!r}: its class is named {own!r}")
    SPACES[name] = factory


def list_spaces() -> list[str]:
    return sorted(SPACES)


def get_space(name: str, **params: Any) -> SearchSpace[Any]:
    """Build a space by registry name; ``params`` are its constructor's (width, resolution...).

    ``None`` values are dropped so callers can pass optional CLI flags straight through.
    """
    try:
        factory = SPACES[name]
    except KeyError:
        raise UnknownNameError("search space", name, list_spaces()) from None
    return factory(**{k: v for k, v in params.items() if v is not None})


def space_from_description(desc: dict[str, Any]) -> SearchSpace[Any]:
    """Inverse of ``SearchSpace.describe()``: rebuild the exact space a record was made with."""
    params = dict(desc)
    return get_space(params.pop("space"), **params)


__all__ = [
    "SPACES", "Block", "BlockKey", "Cell", "CostTerm", "Decision", "Gate", "NASBench201", "NB201Arch", "OFAArch",
    "OFAMobileNetV3", "SearchSpace", "UnitGrammar", "format_block_key", "get_space", "list_spaces",
    "parse_block_key", "register_space", "space_from_description",
]
