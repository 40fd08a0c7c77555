"""What every REST client of the LUT server (CLI, supernet records, device agents) shares."""

from __future__ import annotations

from typing import Any


def error_detail(response: Any, limit: int = 500) -> str:
    """The server's ``detail`` of an error answer (FastAPI's shape), else the start of its body.

    ``response`` is an ``httpx.Response``; a body that is not JSON, or JSON without ``detail``,
    is reported as text so a proxy's HTML error page still says something.
    """
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and "detail" in body:
        return str(body["detail"])
    return str(response.text).strip()[:limit]
