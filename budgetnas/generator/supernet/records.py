"""Accuracy records: the CSV file and the LUT server's ``POST /v1/accuracy`` (docs/rest.md)."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx

from budgetnas.core.http import RestClient
from budgetnas.generator.supernet.checkpoint import atomic_write_bytes

BATCH = 1000  # records per request: keeps each request (one server transaction) small


def write_csv(path: Path, archs: Sequence[str], accuracies: Sequence[float]) -> None:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(["arch_str", "accuracy"])
    for a, acc in zip(archs, accuracies, strict=True):
        w.writerow([a, f"{acc:.6f}"])
    atomic_write_bytes(path, lambda f: f.write(buf.getvalue().encode()))


class AccuracyClient(RestClient):
    """The accuracy endpoints of the LUT server over the shared REST client."""

    def __init__(self, url: str, token: str | None, timeout: float = 30.0,
                 transport: httpx.BaseTransport | None = None) -> None:
        super().__init__(url, token, timeout, transport)

    def check(self) -> None:
        """Fail early (before hours of evaluation) when the server is unreachable."""
        self.request("GET", "/healthz")

    def post(self, space: str, records: Sequence[dict[str, Any]]) -> dict[str, int]:
        inserted = updated = 0
        for i in range(0, len(records), BATCH):
            out = self.object("POST", "/v1/accuracy", json={"space": space, "records": list(records[i:i + BATCH])})
            inserted += int(out.get("inserted", 0))
            updated += int(out.get("updated", 0))
        return {"inserted": inserted, "updated": updated}

    def get(self, **params: Any) -> dict[str, Any]:
        return self.object("GET", "/v1/accuracy", params={k: v for k, v in params.items() if v is not None})


def make_records(archs: Sequence[str], accuracies: Sequence[float], dataset: str, source: str,
                 metric: str = "top1") -> list[dict[str, Any]]:
    return [{"arch": a, "dataset": dataset, "metric": metric, "value": float(v), "source": source}
            for a, v in zip(archs, accuracies, strict=True)]
