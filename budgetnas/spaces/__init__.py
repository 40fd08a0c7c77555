"""Search spaces: decisions, canonical architecture strings, block keys, FLOPs/params, features.

Pure Python + numpy; imports nothing of the project but the leaf ``budgetnas.core.errors``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from budgetnas.core.errors import UnknownNameError
from budgetnas.spaces.base import Block, Decision, SearchSpace
from budgetnas.spaces.blockkey import BlockKey, format_block_key, parse_block_key
from budgetnas.spaces.nb201 import NASBench201, NB201Arch
from budgetnas.spaces.ofa_mbv3 import OFAArch, OFAMobileNetV3

SPACES: dict[str, Callable[..., SearchSpace[Any]]] = {
    OFAMobileNetV3.name: OFAMobileNetV3,
    NASBench201.name: NASBench201,
}


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
    "SPACES", "Block", "BlockKey", "Decision", "NASBench201", "NB201Arch", "OFAArch", "OFAMobileNetV3",
    "SearchSpace", "format_block_key", "get_space", "list_spaces", "parse_block_key", "space_from_description",
]
