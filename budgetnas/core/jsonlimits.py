"""Bounds of the free-form JSON values the service accepts and stores (device facts, environments...).

A value nested hundreds deep is accepted by ``json.loads`` but breaks every serializer after it
(pydantic stops at 255 levels, ``json`` at the recursion limit); a huge one makes every listing that
shows it huge. So every free-form value is checked here, on the way in (a 422 naming the field,
before anything is written) and again on the way out (a value stored before these bounds is shown
as a placeholder instead of failing the listing). Like ``budgetnas.core.errors`` this module imports
nothing else of the project, so every package may use it.
"""

from __future__ import annotations

import json
import math
from typing import Any

from budgetnas.core.errors import InvalidArgumentError

MAX_DEPTH = 16  # levels of objects/arrays; the agents' environments use 4
MAX_BYTES = 64 * 1024  # of the compact JSON text; an agent's facts and environment are a few KiB


def too_deep(value: Any, max_depth: int) -> bool:
    """Whether objects/arrays (dicts/lists) nest deeper than ``max_depth`` levels in ``value``.

    The one depth walk of the project (request fields here, JSON and YAML files in ``budgetnas.luts.lut``):
    without recursion (the depth is what is being checked), and each shared node (YAML aliases,
    even cyclic ones) visited once per depth, so any parsed input is safe to check.
    """
    depth_of: dict[int, int] = {}
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict | list):
            if depth > max_depth:
                return True
            if depth_of.get(id(node), 0) >= depth:
                continue
            depth_of[id(node)] = depth
            stack.extend((c, depth + 1) for c in (node.values() if isinstance(node, dict) else node))
    return False


def json_problem(value: Any, max_depth: int = MAX_DEPTH, max_bytes: int = MAX_BYTES) -> str | None:
    """Why ``value`` is not a bounded JSON value, or None when it is (any input is safe to check)."""
    if too_deep(value, max_depth):
        return f"nested deeper than {max_depth} levels"
    stack: list[Any] = [value]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if not all(isinstance(k, str) for k in node):
                return "object keys must be strings"
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
        elif isinstance(node, float):
            if not math.isfinite(node):
                return f"{node} is not a JSON number"
        elif not (node is None or isinstance(node, str | int)):  # bool is an int
            return f"a {type(node).__name__} is not a JSON value"
    size = len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode())
    if size > max_bytes:
        return f"{size} bytes of JSON; at most {max_bytes}"
    return None


def check_json(value: Any, field: str, max_depth: int = MAX_DEPTH, max_bytes: int = MAX_BYTES) -> None:
    """Raise :class:`InvalidArgumentError` naming ``field`` when ``value`` is not bounded JSON."""
    problem = json_problem(value, max_depth, max_bytes)
    if problem is not None:
        raise InvalidArgumentError(f"{field}: {problem}")


def shown_json(value: Any) -> Any:
    """A stored value as a reply may show it: itself, or a placeholder saying why it is withheld."""
    problem = json_problem(value)
    return value if problem is None else {"withheld": f"the stored value is not shown: {problem}"}
