"""CPU per warm single-arch predict inside the app, beside the bare endpoint's, with no HTTP in between.

    .venv/bin/python bench/asgi_cost.py [--requests 20000] [--rounds 3] [--profile]

Both apps (the LUT server's, on a fresh SQLite database with the Once-for-All Note10 r224 LUT imported,
and bench/bare_app.py's) are called in this process as uvicorn calls them (an ASGI scope, a body,
a send that checks the status), alternating, ``--rounds`` times each; the figure is process CPU time
per request. What uvicorn costs (HTTP parsing, sockets) is the same for both and is left out, so
the ratio here is the app's own share of what bench/server_load.py measures end to end. With
``--profile``, the LUT app's top functions (cProfile, by own time). Needs ../shared/data (the LUT);
one process, one core: run it on a quiet machine and read the ratio, not the microseconds.
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import os
import pstats
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
YAML = REPO.parent / "shared" / "data" / "ofa_note10_lut" / "224_lookup_table.yaml"
ADMIN = "bench-admin"


async def drive(app: Any, bodies: Sequence[bytes], n: int) -> None:
    for i in range(n):
        body = bodies[i % len(bodies)]
        scope = {"type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "POST",
                 "scheme": "http", "path": "/v1/predict", "raw_path": b"/v1/predict", "query_string": b"",
                 "root_path": "", "client": ("127.0.0.1", 1), "server": ("127.0.0.1", 2),
                 "headers": [(b"host", b"bench"), (b"content-type", b"application/json"),
                             (b"content-length", str(len(body)).encode())]}
        sent = False

        async def receive(body: bytes = body) -> dict[str, Any]:
            nonlocal sent
            if sent:
                return {"type": "http.disconnect"}
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(msg: dict[str, Any]) -> None:
            if msg["type"] == "http.response.start" and msg["status"] != 200:
                raise SystemExit(f"error: the app answered {msg['status']}")

        await app(scope, receive, send)


async def per_request_us(app: Any, bodies: Sequence[bytes], n: int) -> float:
    await drive(app, bodies, n // 10)  # warm: caches, the predictor's copy
    t = time.process_time()
    await drive(app, bodies, n)
    return (time.process_time() - t) / n * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=20000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()
    if not YAML.is_file():
        raise SystemExit(f"error: {YAML} not found (the Once-for-All Note10 LUT in ../shared/data)")
    tmp = tempfile.mkdtemp(prefix="budgetnas-asgi-")
    os.environ.update(BUDGETNAS_DB_URL=f"sqlite:///{tmp}/bench.db", BUDGETNAS_ADMIN_TOKEN=ADMIN)
    from fastapi.testclient import TestClient

    import bench.bare_app as bare
    from budgetnas.db.session import migrate
    from budgetnas.lut_server.app import create_app
    from budgetnas.spaces import get_space

    migrate(os.environ["BUDGETNAS_DB_URL"])
    app = create_app(freeze_gc=True)  # as `budgetnas serve` makes it
    with TestClient(app) as client:  # the lifespan runs; the LUT is imported through the API
        r = client.post("/v1/luts/import", headers={"Authorization": f"Bearer {ADMIN}"},
                        json={"format": "ofa-yaml", "content": YAML.read_text(), "device": "note10"})
        r.raise_for_status()
        sp = get_space("ofa-mbv3", width=1.2, resolution=224)
        bodies = [orjson.dumps({"lut": r.json()["id"], "archs": [sp.format(a)]}) for a in sp.sample_many(500, seed=0)]

        async def run() -> None:
            lut, base = [], []
            for _ in range(args.rounds):
                lut.append(await per_request_us(app, bodies, args.requests))
                base.append(await per_request_us(bare.app, bodies, args.requests))
            ratios = sorted(a / b for a, b in zip(lut, base, strict=True))
            print(f"CPU per warm single-arch predict, {args.requests} requests x {args.rounds} rounds (in process, "
                  f"no HTTP): LUT app {', '.join(f'{v:.1f}' for v in lut)} us; bare endpoint "
                  f"{', '.join(f'{v:.1f}' for v in base)} us; LUT / bare median {ratios[len(ratios) // 2]:.2f}")
            if args.profile:
                prof = cProfile.Profile()
                prof.enable()
                await drive(app, bodies, args.requests)
                prof.disable()
                pstats.Stats(prof).sort_stats("tottime").print_stats(25)

        asyncio.run(run())


if __name__ == "__main__":
    main()
