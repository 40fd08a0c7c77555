"""Accuracy records: the CSV file and the LUT server's ``POST /v1/accuracy`` (docs/rest.md)."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

from budgetnas.core.errors import ServerError
from budgetnas.core.http import error_detail
from budgetnas.generator.supernet.checkpoint import atomic_write_bytes

BATCH = 1000  # records per request: keeps each request (one server transaction) small


def write_csv(path: Path, archs: Sequence[str], accuracies: Sequence[float]) -> None:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["arch_str", "accuracy"])
    for a, acc in zip(archs, accuracies, strict=True):
        w.writerow([a, f"{acc:.6f}"])
    atomic_write_bytes(path, lambda f: f.write(buf.getvalue().encode()))


class AccuracyClient:
    """A small httpx client for the accuracy endpoints of the LUT server."""

    def __init__(self, url: str, token: str | None, timeout: float = 30.0,
                 transport: httpx.BaseTransport | None = None) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.url = url.rstrip("/")
        self.http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout, transport=transport)

    def close(self) -> None:
        self.http.close()

    def __enter__(self) -> AccuracyClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _request(self, method: str, path: str, **kw: Any) -> Any:
        try:
            r = self.http.request(method, path, **kw)
        except httpx.HTTPError as exc:
            raise ServerError(f"LUT server {self.url}: {method} {path} failed: {exc}") from None
        if r.status_code >= 400:
            raise ServerError(f"LUT server {self.url}: {method} {path} -> HTTP {r.status_code}: {error_detail(r)}")
        try:
            return r.json()
        except ValueError:
            raise ServerError(f"LUT server {self.url}: {method} {path} did not answer JSON") from None

    def check(self) -> None:
        """Fail early (before hours of evaluation) when the server is unreachable."""
        self._request("GET", "/healthz")

    def post(self, space: str, records: Sequence[dict[str, Any]]) -> dict[str, int]:
        inserted = updated = 0
        for i in range(0, len(records), BATCH):
            out = self._request("POST", "/v1/accuracy", json={"space": space, "records": list(records[i:i + BATCH])})
            inserted += int(out.get("inserted", 0))
            updated += int(out.get("updated", 0))
        return {"inserted": inserted, "updated": updated}

    def get(self, **params: Any) -> dict[str, Any]:
        out = self._request("GET", "/v1/accuracy", params={k: v for k, v in params.items() if v is not None})
        if not isinstance(out, dict):
            raise ServerError(f"LUT server {self.url}: unexpected answer {out!r}")
        return out


def make_records(archs: Sequence[str], accuracies: Sequence[float], dataset: str, source: str,
                 metric: str = "top1") -> list[dict[str, Any]]:
    return [{"arch": a, "dataset": dataset, "metric": metric, "value": float(v), "source": source}
            for a, v in zip(archs, accuracies, strict=True)]
