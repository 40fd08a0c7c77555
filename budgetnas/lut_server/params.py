"""Bounded request parameters: ids fit the 32-bit INTEGER columns, seeds fit numpy's generators,
free-form JSON objects are bounded in depth and size (``budgetnas.core.jsonlimits``), free text is
printable (``budgetnas.core.text``, the predicate ``LUTMeta`` uses)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Path
from pydantic import AfterValidator, Field
from pydantic_core import PydanticCustomError

from budgetnas.core.jsonlimits import MAX_BYTES, json_problem
from budgetnas.core.text import printable_problem

MAX_ID = 2**31 - 1
IdPath = Annotated[int, Path(ge=1, le=MAX_ID)]
IdField = Annotated[int, Field(ge=1, le=MAX_ID)]
Seed = Annotated[int, Field(ge=0, le=2**32 - 1)]


class BoundedJson:
    """The one validator of every free-form JSON object in a request model: depth and size bounded."""

    def __init__(self, max_bytes: int = MAX_BYTES) -> None:
        self.max_bytes = max_bytes

    def __call__(self, value: dict[str, Any]) -> dict[str, Any]:
        problem = json_problem(value, max_bytes=self.max_bytes)
        if problem is not None:  # the 422 handler prefixes the field's location
            raise PydanticCustomError("json_bounds", problem)
        return value


JsonObject = Annotated[dict[str, Any], AfterValidator(BoundedJson())]  # facts, environment, space descriptions
# latency stats keep their raw samples (up to a protocol's max_runs of them)
STATS_MAX_BYTES = 4 << 20
StatsObject = Annotated[dict[str, Any], AfterValidator(BoundedJson(max_bytes=STATS_MAX_BYTES))]


class Printable:
    """The one validator of every free-text request field: no control characters, NUL or lone surrogates,
    so a name is stored alike on SQLite and PostgreSQL and read back by ``LUTMeta``."""

    def __init__(self, multiline: bool = False) -> None:
        self.multiline = multiline

    def __call__(self, value: str) -> str:
        problem = printable_problem(value, self.multiline)
        if problem is not None:  # the 422 handler prefixes the field's location
            raise PydanticCustomError("printable_text", problem)
        return value


Line = Annotated[str, AfterValidator(Printable())]  # names, versions, keys: lengths stay with each field
Text = Annotated[str, AfterValidator(Printable(multiline=True))]  # error messages and logs
