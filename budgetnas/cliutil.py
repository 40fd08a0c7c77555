"""Small helpers shared by the CLI modules."""

from __future__ import annotations

import json
from typing import Any

from budgetnas.errors import InvalidArgumentError


def json_object_option(text: str, flag: str) -> dict[str, Any]:
    """Parse a CLI option that takes a JSON object; errors name the flag."""
    try:
        parsed = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidArgumentError(f"{flag}: not JSON: {exc}") from None
    if not isinstance(parsed, dict):
        raise InvalidArgumentError(f"{flag}: must be a JSON object")
    return parsed
