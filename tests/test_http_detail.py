"""The one reader of the LUT server's error answers, shared by the CLI, supernet records and agents."""

from __future__ import annotations

import httpx
import pytest

from budgetnas.core.http import error_detail


@pytest.mark.parametrize(("response", "expected"), [
    (httpx.Response(422, json={"detail": "budget must be positive"}), "budget must be positive"),
    (httpx.Response(404, json={"detail": [{"loc": ["body"], "msg": "x"}]}), "[{'loc': ['body'], 'msg': 'x'}]"),
    (httpx.Response(400, json=["not", "a", "dict"]), '["not","a","dict"]'),  # used to raise AttributeError
    (httpx.Response(502, text="  <html>Bad Gateway</html>\n"), "<html>Bad Gateway</html>"),
    (httpx.Response(500, text="x" * 900), "x" * 500),
])
def test_error_detail(response: httpx.Response, expected: str) -> None:
    assert error_detail(response) == expected


def test_error_detail_limit() -> None:
    assert error_detail(httpx.Response(500, text="abcdef"), limit=3) == "abc"
