"""The Prometheus histogram: cumulative buckets whatever order requests come in, edges included."""

from __future__ import annotations

from budgetnas.lut_server.metrics import BUCKETS, Metrics


def test_histogram_buckets_are_cumulative_with_their_edges_inside() -> None:
    m = Metrics()
    for s in (20.0, 0.0005, 0.001, 0.003, 0.001):  # 0.001 is a bucket's edge: le="0.001" holds it
        m.observe("POST", "/v1/predict", 200, s)
    m.observe("BREW", "/v1/predict", 200, 0.2)  # an unknown method is "other", its own series
    text = m.render()
    lab = 'method="POST",route="/v1/predict"'
    counts = {b: int(text.split(f'budgetnas_http_request_seconds_bucket{{{lab},le="{b}"}} ')[1].split()[0])
              for b in BUCKETS}
    assert counts[0.001] == 3 and counts[0.0025] == 3 and counts[0.005] == 4 and counts[10.0] == 4
    assert f'budgetnas_http_request_seconds_bucket{{{lab},le="+Inf"}} 5' in text
    assert f"budgetnas_http_request_seconds_count{{{lab}}} 5" in text
    assert f"budgetnas_http_request_seconds_sum{{{lab}}} {20.0 + 0.0005 + 0.001 + 0.003 + 0.001}" in text
    assert 'budgetnas_http_request_seconds_bucket{method="other",route="/v1/predict",le="0.25"} 1' in text
    assert 'budgetnas_http_request_seconds_bucket{method="other",route="/v1/predict",le="0.1"} 0' in text
    assert 'budgetnas_http_requests_total{method="POST",route="/v1/predict",status="200"} 5' in text
