"""The one grammar for block keys.

A key is ``OP`` followed by ``-field:value`` pairs, e.g.
``expanded_conv-input:112x112x24-output:56x56x32-expand:144-kernel:5-stride:2-idskip:0-se:0-hs:0``.
Values are integers or ``x``-joined shapes (``HxWxC``). Field order is part of the key: for
``ofa-mbv3`` the strings are byte-identical to Once-for-All's LUT keys, so keys are compared as
strings and :func:`format_block_key` is the only function that writes one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property

from budgetnas.core.errors import InvalidBlockKeyError

Shape = tuple[int, ...]
_OP_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")
_FIELD_RE = re.compile(r"^[a-z][a-z0-9_]*$")


@dataclass(frozen=True)
class BlockKey:
    """A parsed block key: operation, input/output shapes and ordered integer attributes."""

    op: str
    input: Shape
    output: Shape
    attrs: tuple[tuple[str, int], ...] = ()

    def attr(self, name: str) -> int:
        for k, v in self.attrs:
            if k == name:
                return v
        raise InvalidBlockKeyError(f"block key {self} has no field {name!r}")

    @cached_property
    def text(self) -> str:
        return format_block_key(self)

    def __str__(self) -> str:
        return self.text


def _fmt_shape(shape: Shape) -> str:
    return "x".join(str(s) for s in shape)


def format_block_key(key: BlockKey) -> str:
    """Write a key in the canonical grammar (the only place that does)."""
    parts = [key.op, f"input:{_fmt_shape(key.input)}", f"output:{_fmt_shape(key.output)}"]
    parts += [f"{k}:{v}" for k, v in key.attrs]
    return "-".join(parts)


def _parse_shape(text: str, whole: str) -> Shape:
    try:
        dims = tuple(int(p) for p in text.split("x"))
    except ValueError:
        raise InvalidBlockKeyError(f"block key {whole!r}: shape {text!r} is not HxWxC integers") from None
    if not dims or any(d <= 0 for d in dims):
        raise InvalidBlockKeyError(f"block key {whole!r}: shape {text!r} must have positive dimensions")
    return dims


def parse_block_key(text: str) -> BlockKey:
    """Parse ``OP-input:...-output:...-field:int...``; raises InvalidBlockKeyError naming the part."""
    if not isinstance(text, str) or not text:
        raise InvalidBlockKeyError(f"block key must be a non-empty string, got {text!r}")
    op, *fields = text.split("-")
    if not _OP_RE.match(op):
        raise InvalidBlockKeyError(f"block key {text!r}: operation {op!r} is not an identifier")
    pairs: list[tuple[str, str]] = []
    for f in fields:
        name, sep, value = f.partition(":")
        if not sep or not _FIELD_RE.match(name) or not value:
            raise InvalidBlockKeyError(f"block key {text!r}: field {f!r} is not 'name:value'")
        pairs.append((name, value))
    if len(pairs) < 2 or pairs[0][0] != "input" or pairs[1][0] != "output":
        raise InvalidBlockKeyError(f"block key {text!r}: must start with input:... and output:... fields")
    attrs: list[tuple[str, int]] = []
    for name, value in pairs[2:]:
        try:
            attrs.append((name, int(value)))
        except ValueError:
            raise InvalidBlockKeyError(
                f"block key {text!r}: field {name!r} value {value!r} is not an integer"
            ) from None
    return BlockKey(op, _parse_shape(pairs[0][1], text), _parse_shape(pairs[1][1], text), tuple(attrs))
