"""Walk request types (pydantic models, Annotated, unions, containers) for values of some kind
that no field validator of a given class checks: the hostile-input tests' "no field left open"."""

from __future__ import annotations

import typing
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel

# a type's verdict: "leaf" (a value of the kind sought), "skip" (checked elsewhere), None (look inside)
Kind = Callable[[Any, Any], str | None]


def has_validator(metadata: Any, validator: type) -> bool:
    return any(isinstance(getattr(m, "func", None), validator) for m in metadata)


def unchecked(tp: Any, validator: type, kind: Kind, checked: bool, where: str) -> list[str]:
    """Where in ``tp`` a value that ``kind`` calls a leaf is not checked by ``validator``."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Annotated:
        return unchecked(args[0], validator, kind, checked or has_validator(args[1:], validator), where)
    verdict = kind(tp, origin)
    if verdict == "leaf":
        return [] if checked else [where]
    if verdict == "skip":
        return []
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return [w for name, f in tp.model_fields.items()
                for w in unchecked(f.annotation, validator, kind, has_validator(f.metadata, validator),
                                   f"{tp.__name__}.{name}")]
    return [w for a in args for w in unchecked(a, validator, kind, False, where)]
