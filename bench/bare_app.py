"""The bare endpoint beside the LUT server in bench/server_load.py: the same stack, no work.

    uvicorn bench.bare_app:app --workers N

uvicorn + FastAPI answering ``POST /v1/predict`` with a fixed small JSON of one prediction's shape
(the body is read, as the real route reads it, and not parsed), and ``GET /healthz``. What it
sustains on a machine is what the framework itself can do there: the LUT server's figures are
ratios to it.
"""

from __future__ import annotations

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import Response

ANSWER = orjson.dumps({"predictions": [{"arch": "bare", "latency_ms": 1.0, "low_ms": 0.9, "high_ms": 1.1,
                                        "raw_ms": 1.0}]})

app = FastAPI(title="bare endpoint (bench)")


@app.post("/v1/predict")
async def predict(request: Request) -> Response:
    await request.body()
    return Response(ANSWER, media_type="application/json")


@app.get("/healthz")
async def healthz() -> Response:
    return Response(b'{"status":"ok"}', media_type="application/json")
