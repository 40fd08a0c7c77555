"""The agent's side of REST v1 (docs/rest.md): a thin httpx client that tells transient from final.

``Unreachable`` (connection refused, timeout, 5xx) means "try again later"; a 4xx is final and
raised as :class:`budgetnas.core.errors.ServerError` with the server's ``detail``.
"""

from __future__ import annotations

from typing import Any

import httpx

from budgetnas.core.errors import ServerError
from budgetnas.core.http import error_detail


class Unreachable(ServerError):
    """The server did not answer (or answered 5xx): the request may be retried as is."""


class HTTPStatusError(ServerError):
    """A final 4xx answer; ``status`` is the HTTP status."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class Rest:
    def __init__(self, server: str, token: str, timeout_s: float = 30.0) -> None:
        self.base = server.rstrip("/")
        self._http = httpx.Client(timeout=timeout_s, headers={"Authorization": f"Bearer {token}"})

    def close(self) -> None:
        self._http.close()

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> Any:
        try:
            r = self._http.request(method, self.base + path, json=body)
        except httpx.HTTPError as exc:
            raise Unreachable(f"{method} {path}: server unreachable: {type(exc).__name__}: {exc}") from None
        if r.status_code >= 500:
            raise Unreachable(f"{method} {path}: HTTP {r.status_code}: {r.text[:300]}")
        if r.status_code >= 400:
            raise HTTPStatusError(f"{method} {path}: HTTP {r.status_code}: {error_detail(r, 300)}", r.status_code)
        return r.json() if r.content else None

    # ---- REST v1 ----------------------------------------------------------------------------------
    def devices(self) -> list[dict[str, Any]]:
        return list(self.call("GET", "/v1/devices")["devices"])

    def register(self, name: str, facts: dict[str, Any]) -> dict[str, Any]:
        return dict(self.call("POST", "/v1/devices", {"name": name, "facts": facts}))

    def device_heartbeat(self, name: str, facts: dict[str, Any] | None = None) -> dict[str, Any]:
        return dict(self.call("POST", f"/v1/devices/{name}/heartbeat", {"facts": facts} if facts else {}))

    def lease(self, device: str, backend: str, lease_seconds: float, max_jobs: int = 1) -> list[dict[str, Any]]:
        out = self.call("POST", "/v1/jobs/lease", {"device": device, "backend": backend, "max_jobs": max_jobs,
                                                   "lease_seconds": lease_seconds})
        return list(out["jobs"])

    def job_heartbeat(self, job_id: int, lease_seconds: float, lease_id: str | None) -> dict[str, Any]:
        return dict(self.call("POST", f"/v1/jobs/{job_id}/heartbeat",
                              {"lease_seconds": lease_seconds, "lease_id": lease_id}))

    def result(self, job_id: int, body: dict[str, Any]) -> dict[str, Any]:
        return dict(self.call("POST", f"/v1/jobs/{job_id}/result", body))

    def results(self, items: list[tuple[int, dict[str, Any]]]) -> list[dict[str, Any]]:
        """Several results in one call, all stored or none (a server without the route answers 404/405)."""
        out = self.call("POST", "/v1/jobs/results", {"results": [{"job": job_id, **body} for job_id, body in items]})
        return list(out["results"])

    def job_heartbeats(self, leases: list[tuple[int, str]], lease_seconds: float) -> list[dict[str, Any]]:
        """Extend several leases: each answers ``lease_expires`` or ``lost`` (404/405: the server has no batches)."""
        out = self.call("POST", "/v1/jobs/heartbeat", {"lease_seconds": lease_seconds, "leases": [
            {"job": job_id, "lease_id": lease_id} for job_id, lease_id in leases]})
        return list(out["leases"])

    def fail(self, job_id: int, error: str, output: str, lease_id: str | None) -> dict[str, Any]:
        """Report a failed measurement; ``lease_id``: the lease's (only its holder may fail it)."""
        return dict(self.call("POST", f"/v1/jobs/{job_id}/fail",
                              {"error": error, "output": output, "lease_id": lease_id}))

    def release(self, job_id: int, lease_id: str | None) -> dict[str, Any]:
        return dict(self.call("POST", f"/v1/jobs/{job_id}/release", {"lease_id": lease_id}))
