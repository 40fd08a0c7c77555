"""The agent's side of REST v1 (docs/rest.md): typed calls over the shared :class:`~budgetnas.core.http.RestClient`.

:class:`~budgetnas.core.errors.ServerUnreachableError` (connection refused, timeout, 5xx) means "try again
later"; a 4xx is final, :class:`~budgetnas.core.errors.ServerRefusedError` with its ``status`` and ``detail``.
"""

from __future__ import annotations

from typing import Any

import httpx

from budgetnas.core.http import RestClient


class Rest(RestClient):
    """The agent's client: its device token, one typed method per REST v1 call it makes."""

    def __init__(self, server: str, token: str, timeout_s: float = 30.0,
                 transport: httpx.BaseTransport | None = None) -> None:
        super().__init__(server, token, timeout_s, transport)

    def call(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        """Every call of the agent goes through here: a JSON body, a JSON object answer."""
        return self.object(method, path, json=body)

    # ---- REST v1 ----------------------------------------------------------------------------------
    def devices(self) -> list[dict[str, Any]]:
        return list(self.call("GET", "/v1/devices")["devices"])

    def register(self, name: str, facts: dict[str, Any]) -> dict[str, Any]:
        return self.call("POST", "/v1/devices", {"name": name, "facts": facts})

    def device_heartbeat(self, name: str, facts: dict[str, Any] | None = None) -> dict[str, Any]:
        return self.call("POST", f"/v1/devices/{name}/heartbeat", {"facts": facts} if facts else {})

    def lease(self, device: str, backend: str, lease_seconds: float, max_jobs: int = 1) -> list[dict[str, Any]]:
        out = self.call("POST", "/v1/jobs/lease", {"device": device, "backend": backend, "max_jobs": max_jobs,
                                                   "lease_seconds": lease_seconds})
        return list(out["jobs"])

    def job_heartbeat(self, job_id: int, lease_seconds: float, lease_id: str | None) -> dict[str, Any]:
        return self.call("POST", f"/v1/jobs/{job_id}/heartbeat", {"lease_seconds": lease_seconds, "lease_id": lease_id})

    def result(self, job_id: int, body: dict[str, Any]) -> dict[str, Any]:
        return self.call("POST", f"/v1/jobs/{job_id}/result", body)

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
        return self.call("POST", f"/v1/jobs/{job_id}/fail", {"error": error, "output": output, "lease_id": lease_id})

    def release(self, job_id: int, lease_id: str | None) -> dict[str, Any]:
        return self.call("POST", f"/v1/jobs/{job_id}/release", {"lease_id": lease_id})
