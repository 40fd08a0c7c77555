"""Request counters and latency histograms in the Prometheus text format (no client library needed)."""

from __future__ import annotations

import threading
from bisect import bisect_left
from collections import defaultdict

# label values come from the request: anything else is "other", so a client cannot add series
METHODS = frozenset(("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"))
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._count: dict[tuple[str, str, int], int] = defaultdict(int)
        # per bucket the requests whose time it is the first to hold, then those over every bucket, sum, count
        self._hist: dict[tuple[str, str], list[float]] = {}

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        method = method if method in METHODS else "other"
        with self._lock:
            self._count[(method, route, status)] += 1
            h = self._hist.setdefault((method, route), [0.0] * (len(BUCKETS) + 3))
            h[bisect_left(BUCKETS, seconds)] += 1  # the first bucket with le >= seconds; cumulated on render
            h[-2] += seconds
            h[-1] += 1

    def render(self, gauges: dict[str, dict[tuple[tuple[str, str], ...], float]] | None = None) -> str:
        out = ["# HELP budgetnas_http_requests_total HTTP requests by method, route and status.",
               "# TYPE budgetnas_http_requests_total counter"]
        with self._lock:
            counts = sorted(self._count.items())
            hists = sorted((k, list(v)) for k, v in self._hist.items())
        for (m, r, st), n in counts:
            out.append(f'budgetnas_http_requests_total{{method="{m}",route="{_esc(r)}",status="{st}"}} {n}')
        out += ["# HELP budgetnas_http_request_seconds Request latency.",
                "# TYPE budgetnas_http_request_seconds histogram"]
        for (m, r), h in hists:
            lab = f'method="{m}",route="{_esc(r)}"'
            below = 0.0
            for i, b in enumerate(BUCKETS):
                below += h[i]
                out.append(f'budgetnas_http_request_seconds_bucket{{{lab},le="{b}"}} {int(below)}')
            out.append(f'budgetnas_http_request_seconds_bucket{{{lab},le="+Inf"}} {int(h[-1])}')
            out.append(f"budgetnas_http_request_seconds_sum{{{lab}}} {h[-2]}")
            out.append(f"budgetnas_http_request_seconds_count{{{lab}}} {int(h[-1])}")
        for name, series in (gauges or {}).items():
            out.append(f"# TYPE {name} gauge")
            for labels, v in sorted(series.items()):
                lab = ",".join(f'{k}="{_esc(val)}"' for k, val in labels)
                out.append(f"{name}{{{lab}}} {v}" if lab else f"{name} {v}")
        return "\n".join(out) + "\n"


def _esc(s: str) -> str:
    return s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
