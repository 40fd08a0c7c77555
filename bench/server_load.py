"""Load on the LUT server under uvicorn on 127.0.0.1 (its own process), measured by HTTP clients.

    .venv/bin/python bench/server_load.py [--db URL] [--workers N] [--requests N] [--jobs N]

Figures: single-architecture predict p50/p99 latency and requests/s with 32 concurrent clients
(closed loop: the saturation point) and at a fixed offered rate (open loop, ``--rate``, default 500/s);
a 10,000-architecture batch predict (cold: archs never seen; warm: the same batch again); lease+result
cycles/s with 20 agents, with a check that no job is lost or done twice. Needs the Once-for-All
Note10 LUT in ../shared/data. Not run in CI: the figures depend on the machine.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from spaces import get_space  # noqa: E402

ADMIN = "bench-admin"
H = {"Authorization": f"Bearer {ADMIN}"}
YAML = REPO.parent / "shared" / "data" / "ofa_note10_lut" / "224_lookup_table.yaml"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(db: str, workers: int) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {**os.environ, "BUDGETNAS_ADMIN_TOKEN": ADMIN}
    proc = subprocess.Popen([sys.executable, "-m", "budgetnas", "serve", "--db", db, "--port", str(port),
                             "--workers", str(workers), "--log-level", "warning"], env=env, cwd=REPO)
    base = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                return proc, base
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit("server did not start")


async def single_predict(base: str, lut: int, archs: list[str], clients: int, total: int) -> None:
    lat: list[float] = []
    per = total // clients

    async def client(i: int) -> None:
        async with httpx.AsyncClient(base_url=base, timeout=30) as c:
            for n in range(per):
                body = {"lut": lut, "archs": [archs[(i * per + n) % len(archs)]]}
                t0 = time.perf_counter()
                r = await c.post("/v1/predict", json=body)
                lat.append(time.perf_counter() - t0)
                assert r.status_code == 200, r.text

    await asyncio.gather(*(client(i) for i in range(min(clients, 4))))  # warm-up: caches, connections
    lat.clear()
    t0 = time.perf_counter()
    await asyncio.gather(*(client(i) for i in range(clients)))
    wall = time.perf_counter() - t0
    ms = np.array(lat) * 1000
    print(f"single-arch predict, {clients} concurrent clients, {len(ms)} requests: "
          f"p50 {np.percentile(ms, 50):.1f} ms, p99 {np.percentile(ms, 99):.1f} ms, {len(ms) / wall:.0f} req/s")


async def paced_predict(base: str, lut: int, archs: list[str], rate: float, seconds: float, clients: int) -> None:
    """Open loop at a fixed offered rate over at most ``clients`` connections.

    Requests are due on a fixed schedule whatever the answers do, and latency counts from the due
    time: a slow answer delays the ones behind it, and they are charged for it (no coordinated
    omission). The 32-client figure above is closed loop: it measures the saturation point instead.
    """
    warm = int(rate)  # the first second opens the connections and is not counted
    n = warm + int(rate * seconds)
    lat: list[float] = []
    slots = iter(range(n))  # shared: each connection takes the next due request when it is free
    start = time.perf_counter() + 0.2

    async def connection() -> None:
        async with httpx.AsyncClient(base_url=base, timeout=30) as c:
            for i in slots:
                due = start + i / rate
                await asyncio.sleep(max(0.0, due - time.perf_counter()))
                r = await c.post("/v1/predict", json={"lut": lut, "archs": [archs[i % len(archs)]]})
                if i >= warm:
                    lat.append(time.perf_counter() - due)
                assert r.status_code == 200, r.text

    await asyncio.gather(*(connection() for _ in range(clients)))
    wall = time.perf_counter() - start - warm / rate
    ms = np.array(lat) * 1000
    print(f"single-arch predict, offered {rate:.0f} req/s for {seconds:.0f} s over <= {clients} connections: "
          f"p50 {np.percentile(ms, 50):.1f} ms, p90 {np.percentile(ms, 90):.1f} ms, p99 {np.percentile(ms, 99):.1f} ms, "
          f"achieved {len(ms) / wall:.0f} req/s")


def sequential_predict(base: str, lut: int, archs: list[str], n: int = 500) -> None:
    """One client, one request at a time: the service time without queueing."""
    with httpx.Client(base_url=base, timeout=30) as c:
        lat = []
        for i in range(n):
            t0 = time.perf_counter()
            r = c.post("/v1/predict", json={"lut": lut, "archs": [archs[i % len(archs)]]})
            lat.append(time.perf_counter() - t0)
            assert r.status_code == 200
    ms = np.array(lat[50:]) * 1000
    print(f"single-arch predict, 1 client, sequential: p50 {np.percentile(ms, 50):.2f} ms, "
          f"p99 {np.percentile(ms, 99):.2f} ms")


def batch_predict(base: str, lut: int, space_seed: int) -> None:
    sp = get_space("ofa-mbv3", width=1.2, resolution=224)
    with httpx.Client(base_url=base, timeout=120) as c:
        cold: list[float] = []
        warm: list[float] = []
        for rep in range(3):
            archs = [sp.format(a) for a in sp.sample_many(10_000, seed=space_seed + rep)]
            for out in (cold, warm, warm):
                t0 = time.perf_counter()
                r = c.post("/v1/predict", json={"lut": lut, "archs": archs})
                out.append(time.perf_counter() - t0)
                assert r.status_code == 200 and len(r.json()["predictions"]) == 10_000
    print(f"10,000-arch batch predict (request to parsed response): cold median {statistics.median(cold) * 1000:.0f} ms "
          f"(runs {', '.join(f'{v * 1000:.0f}' for v in cold)}), warm median {statistics.median(warm) * 1000:.0f} ms")


def lease_cycles(base: str, n_jobs: int, agents: int) -> None:
    token = httpx.post(f"{base}/v1/devices", json={"name": "bench-rig"}, headers=H).json()["token"]
    camp = httpx.post(f"{base}/v1/campaigns", json={"space": {"space": "nb201"}, "device": "bench-rig",
                                                    "backend": "bench", "validation_models": n_jobs, "seed": 1},
                      headers=H, timeout=120).json()
    total = camp["jobs_created"]
    stats = {"count": 3, "mean_ms": 1.0, "std_ms": 0.1, "median_ms": 1.0}
    leased: Counter[int] = Counter()
    stored: Counter[int] = Counter()
    lock = threading.Lock()
    barrier = threading.Barrier(agents + 1)

    def agent(i: int) -> None:
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=60) as c:
            barrier.wait()
            while True:
                jobs = c.post("/v1/jobs/lease", json={"device": "bench-rig", "backend": "bench"}).json()["jobs"]
                if not jobs:
                    return
                j = jobs[0]
                r = c.post(f"/v1/jobs/{j['id']}/result", json={"idempotency_key": f"{i}", "stats": stats}).json()
                with lock:
                    leased[j["id"]] += 1
                    stored[j["id"]] += int(r["stored"])

    threads = [threading.Thread(target=agent, args=(i,)) for i in range(agents)]
    for t in threads:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    lost = total - len(stored)
    dup = sum(v - 1 for v in stored.values() if v > 1) + sum(v - 1 for v in leased.values() if v > 1)
    print(f"lease+result, {agents} agents, {total} jobs: {total / wall:.0f} cycles/s; lost {lost}, duplicated {dup}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--db", help="database URL (default: a fresh SQLite file)")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--requests", type=int, default=4000, help="single-arch predict requests")
    ap.add_argument("--clients", type=int, default=32)
    ap.add_argument("--rate", type=float, default=500, help="offered req/s for the open-loop predict figure")
    ap.add_argument("--seconds", type=float, default=10, help="duration of the open-loop predict figure")
    ap.add_argument("--jobs", type=int, default=1500, help="jobs for the lease+result figure")
    ap.add_argument("--agents", type=int, default=20)
    args = ap.parse_args()
    if not YAML.exists():
        raise SystemExit(f"needs {YAML}")
    tmp = tempfile.mkdtemp(prefix="budgetnas-bench-")
    db = args.db or f"sqlite:///{tmp}/bench.db"
    proc, base = start_server(db, args.workers)
    try:
        print(f"load average before: {os.getloadavg()[0]:.1f}")
        print(f"server: budgetnas serve --db {db.split('@')[-1]} --workers {args.workers} (uvicorn, 127.0.0.1); "
              f"{os.cpu_count()} CPUs")
        lut = httpx.post(f"{base}/v1/luts/import", json={"format": "ofa-yaml", "content": YAML.read_text(),
                                                          "device": "note10", "runtime_version": f"bench-{time.time()}"},
                         headers=H, timeout=60).json()["id"]
        sp = get_space("ofa-mbv3", width=1.2, resolution=224)
        archs = [sp.format(a) for a in sp.sample_many(1000, seed=0)]
        sequential_predict(base, lut, archs)
        asyncio.run(single_predict(base, lut, archs, args.clients, args.requests))
        asyncio.run(paced_predict(base, lut, archs, args.rate, args.seconds, args.clients))
        batch_predict(base, lut, space_seed=100)
        lease_cycles(base, args.jobs, args.agents)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)


if __name__ == "__main__":
    main()
