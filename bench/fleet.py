"""Fleet throughput: N agents (default 1, 4, 16) on loopback profiling a campaign against PostgreSQL.

    .venv/bin/python bench/fleet.py [--agents 1,4,16] [--space ofa-mbv3 --resolution 128]

For each N: a fresh device and campaign (every block key of the space), N ``budgetnas agent``
subprocesses (torch-cpu, a minimal protocol so the server and queue, not the measurement, are
what is stressed), started and idle *before* the campaign is created, so process start-up (torch
imports) is not timed. Reports jobs/s from campaign creation to LUT complete, the server's CPU
seconds over that window (process + children), and the scaling ratio jobs/s(N max) / jobs/s(1).

PostgreSQL: ``$BUDGETNAS_TEST_PG_URL`` if set, else a throw-away cluster started the ``.ci/run``
way (initdb/pg_ctl as the ``postgres`` user via runuser) on 127.0.0.1 and removed afterwards.
On a 2-core machine the agents compete with the server for CPU: read the ratio with that in mind.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil

ADMIN = "fleet-bench-admin"
REPO = Path(__file__).resolve().parents[1]
TINY = '{"warmup_runs": 1, "warmup_seconds": 0, "min_runs": 5, "min_seconds": 0.001, "max_runs": 20, ' \
       '"max_seconds": 0.2, "rounds": 1, "round_warmup": 0, "remeasure": 0}'


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def postgres() -> Iterator[str]:
    url = os.environ.get("BUDGETNAS_TEST_PG_URL")
    if url:
        yield url
        return
    bins = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not bins or shutil.which("runuser") is None:
        sys.exit("no PostgreSQL: set BUDGETNAS_TEST_PG_URL or install postgresql (initdb, pg_ctl) and run as root")
    pg_bin = Path(bins[-1]).parent
    port = free_port()
    d = Path(tempfile.mkdtemp(prefix="budgetnas-fleet-pg."))
    shutil.chown(d, "postgres", "postgres")

    def as_pg(*args: str) -> None:
        subprocess.run(["runuser", "-u", "postgres", "--", *args], check=True, stdout=subprocess.DEVNULL)

    as_pg(str(pg_bin / "initdb"), "-D", str(d / "data"), "-A", "trust", "-U", "postgres")
    as_pg(str(pg_bin / "pg_ctl"), "-D", str(d / "data"), "-w", "-l", str(d / "pg.log"), "-o",
          f"-p {port} -k {d} -c listen_addresses=127.0.0.1 -c max_connections=300 -c fsync=off", "start")
    try:
        as_pg(str(pg_bin / "createdb"), "-h", "127.0.0.1", "-p", str(port), "fleet")
        yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/fleet"
    finally:
        with contextlib.suppress(subprocess.CalledProcessError):
            as_pg(str(pg_bin / "pg_ctl"), "-D", str(d / "data"), "-m", "fast", "-w", "stop")
        shutil.rmtree(d, ignore_errors=True)


def server_cpu(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    total = t.user + t.system
    for c in proc.children(recursive=True):
        with contextlib.suppress(psutil.Error):
            ct = c.cpu_times()
            total += ct.user + ct.system
    return total


def run_fleet(n: int, url: str, http: httpx.Client, env: dict[str, str], work: Path, space: dict[str, object],
              timeout_s: float) -> dict[str, float]:
    name = f"fleet-{n}-{int(time.time())}"
    token = http.post("/v1/devices", json={"name": name, "facts": {}}).json()["token"]
    logs = [work / f"{name}-{i}.log" for i in range(n)]
    agents = [subprocess.Popen([sys.executable, "-m", "budgetnas", "agent", "--server", url, "--token", token,
                                "--name", name, "--backend", "torch-cpu", "--quick", "--protocol", TINY,
                                "--lease-seconds", "30", "--poll", "0.2", "--spool", str(work / f"{name}-{i}.jsonl")],
                               env=env, stdout=logs[i].open("wb"), stderr=subprocess.STDOUT) for i in range(n)]
    try:
        deadline = time.monotonic() + 600
        while not all("resumed" in p.read_text() for p in logs):  # every agent up and polling
            if time.monotonic() > deadline or any(a.poll() is not None for a in agents):
                raise SystemExit(f"agents did not start: {[p.read_text()[-500:] for p in logs]}")
            time.sleep(0.5)
        srv = psutil.Process(int(env["FLEET_SERVER_PID"]))
        cpu0, t0 = server_cpu(srv), time.perf_counter()
        out = http.post("/v1/campaigns", json={"space": space, "device": name, "backend": "torch-cpu",
                                               "batch": 1, "threads": 1}).json()
        lut, jobs = out["lut_id"], out["jobs_created"]
        while True:
            info = http.get(f"/v1/luts/{lut}").json()
            if info["status"] == "complete":
                break
            if time.perf_counter() - t0 > timeout_s:
                raise SystemExit(f"N={n}: campaign not complete after {timeout_s} s: {info['progress']}")
            time.sleep(0.1)
        wall, cpu = time.perf_counter() - t0, server_cpu(srv) - cpu0
    finally:
        for a in agents:
            a.terminate()
        for a in agents:
            try:
                a.wait(30)
            except subprocess.TimeoutExpired:
                a.kill()
    return {"agents": n, "jobs": jobs, "seconds": wall, "jobs_per_s": jobs / wall, "server_cpu_s": cpu,
            "server_cpu_pct": 100.0 * cpu / wall, "server_cpu_ms_per_job": 1000.0 * cpu / jobs}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--agents", default="1,4,16", help="comma-separated fleet sizes")
    ap.add_argument("--space", default="ofa-mbv3")
    ap.add_argument("--resolution", type=int, default=128)
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds per campaign")
    args = ap.parse_args()
    sizes = [int(x) for x in args.agents.split(",")]
    space: dict[str, object] = {"space": args.space}
    if args.space == "ofa-mbv3":
        space["resolution"] = args.resolution
    work = Path(tempfile.mkdtemp(prefix="budgetnas-fleet."))
    with postgres() as db:
        port = free_port()
        env = dict(os.environ, BUDGETNAS_ADMIN_TOKEN=ADMIN, BUDGETNAS_CACHE=str(work / "cache"),
                   PYTHONPATH=str(REPO), HOME=str(work))
        server = subprocess.Popen([sys.executable, "-m", "budgetnas", "serve", "--db", db, "--port", str(port),
                                   "--log-level", "warning"], env=env, stdout=(work / "server.log").open("wb"),
                                  stderr=subprocess.STDOUT)
        env["FLEET_SERVER_PID"] = str(server.pid)
        url = f"http://127.0.0.1:{port}"
        http = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {ADMIN}"}, timeout=60)
        try:
            for _ in range(300):
                with contextlib.suppress(httpx.HTTPError):
                    if http.get("/healthz").status_code == 200:
                        break
                time.sleep(0.2)
            rows = [run_fleet(n, url, http, env, work, space, args.timeout) for n in sizes]
        finally:
            server.terminate()
            server.wait(30)
            http.close()
    print(f"fleet benchmark: {space}, torch-cpu agents (minimal protocol), PostgreSQL, "
          f"{psutil.cpu_count()} CPUs on this machine")
    print(f"{'agents':>6} {'jobs':>5} {'seconds':>8} {'jobs/s':>7} {'server CPU s':>12} {'server CPU %':>12} "
          f"{'CPU ms/job':>10}")
    for r in rows:
        print(f"{r['agents']:>6} {r['jobs']:>5} {r['seconds']:>8.1f} {r['jobs_per_s']:>7.2f} {r['server_cpu_s']:>12.1f} "
              f"{r['server_cpu_pct']:>12.0f} {r['server_cpu_ms_per_job']:>10.1f}")
    if len(rows) > 1 and rows[0]["agents"] == 1:
        print(f"scaling ratio jobs/s({rows[-1]['agents']}) / jobs/s(1): {rows[-1]['jobs_per_s'] / rows[0]['jobs_per_s']:.2f}")
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
