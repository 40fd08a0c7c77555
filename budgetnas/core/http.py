"""The one REST client of the LUT server, shared by the CLI, the device agents, supernet records and the demo.

One error mapping: no answer (refused connection, timeout) or a 5xx is
:class:`~budgetnas.core.errors.ServerUnreachableError` (retry as is); a 4xx is
:class:`~budgetnas.core.errors.ServerRefusedError` with the status and the server's ``detail``.
"""

from __future__ import annotations

from typing import Any, Self

import httpx

from budgetnas.core.errors import InvalidArgumentError, ServerError, ServerRefusedError, ServerUnreachableError


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


class RestClient:
    """REST v1 calls to one server: ``base_url`` (its path prefix kept), an optional bearer token.

    ``transport`` replaces the network (tests: ``httpx.MockTransport``, or the app in process).
    """

    def __init__(self, base_url: str, token: str | None = None, timeout: float = 30.0,
                 transport: httpx.BaseTransport | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        try:
            self._http = httpx.Client(base_url=self.base_url, headers=headers, timeout=timeout, transport=transport)
        except httpx.InvalidURL as exc:
            raise InvalidArgumentError(f"server URL {base_url!r}: {exc}") from None

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(self, method: str, path: str, **kw: Any) -> Any:
        """One call (``kw``: httpx's ``json``, ``params``, ``content``...); the parsed JSON answer,
        its text when it is not JSON, ``None`` when it is empty."""
        try:
            r = self._http.request(method, path, **kw)
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise ServerUnreachableError(f"{method} {path}: cannot reach {self.base_url}: "
                                         f"{type(exc).__name__}: {exc}") from None
        if r.status_code >= 400:
            detail = error_detail(r)
            message = f"{method} {path}: HTTP {r.status_code}: {detail}"
            if r.status_code >= 500:
                raise ServerUnreachableError(message)
            raise ServerRefusedError(message, r.status_code, detail)
        if not r.content:
            return None
        if r.headers.get("content-type", "").startswith("application/json"):
            try:
                return r.json()
            except ValueError:
                raise ServerError(f"{method} {path}: the answer is not valid JSON") from None
        return r.text

    def object(self, method: str, path: str, **kw: Any) -> dict[str, Any]:
        """A call whose answer must be a JSON object (what every typed REST v1 call expects)."""
        out = self.request(method, path, **kw)
        if not isinstance(out, dict):
            raise ServerError(f"{method} {path}: expected a JSON object, got {str(out)[:100]!r}")
        return out
