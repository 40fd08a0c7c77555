"""Load on the LUT server under uvicorn, beside a bare endpoint of the same stack, measured by one client.

    .venv/bin/python bench/server_load.py --quick                      # smoke: SQLite, 1 worker, < 1 minute
    nice -n 10 .venv/bin/python bench/server_load.py --repeats 5 --workers 1 2 \\
        --db sqlite --db postgresql+psycopg://postgres@127.0.0.1:5432/bench     # the full run, by hand

For each database and worker count, two servers run side by side: ``budgetnas serve`` and the bare
endpoint (bench/bare_app.py: uvicorn + FastAPI returning a fixed small JSON). Each repetition
measures both, alternating which goes first, with the same requests from the same client:

- sequential single-arch predict (one connection, one request at a time: the service time);
- saturation: ``--clients`` connections closed loop for ``--sat-seconds`` (requests/s);
- open loop at ``--rate`` req/s for ``--seconds``: requests are due on a fixed schedule whatever
  the answers do and latency counts from the due time (no coordinated omission);

then, on the LUT server only, a 10,000-arch batch predict (cold: archs never seen; warm: again)
and lease+result with ``--agents`` agents leasing and reporting ``--lease-batch`` jobs per call,
checking that no job is lost or done twice. Every latency figure is also given as a ratio to the
bare endpoint's in the same repetition, the only comparison that survives a shared machine.
Before the first repetition each endpoint runs one uncounted, so that every worker is warm (the goals
are for a warm predict; without it, the first repetition had the LUT server's slowest sequential p50 in every setting).

Where there are two CPUs or more, the client (this process) runs on CPU 0 and the servers (and
their workers) on CPU 1; the output says so, and what else used the CPUs during the run. The
single-request client speaks HTTP/1.1 over asyncio streams (keep-alive, Content-Length) so that it
costs a few microseconds per request, not the server's figure. Needs the Once-for-All Note10 LUT in
../shared/data. Not run in CI as a test: the figures depend on the machine.
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
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import orjson

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from budgetnas.spaces import get_space  # noqa: E402

ADMIN = "bench-admin"
H = {"Authorization": f"Bearer {ADMIN}"}
YAML = REPO.parent / "shared" / "data" / "ofa_note10_lut" / "224_lookup_table.yaml"
CLIENT_CPU, SERVER_CPU = 0, 1
QUICK = {"repeats": 2, "sequential": 300, "sat_seconds": 1.5, "seconds": 2.0, "jobs": 200}  # --quick: < 1 minute


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pinned(cpus: set[int] | None) -> Callable[[], None] | None:
    """A preexec_fn that pins the child (and the workers it forks) to ``cpus``."""
    if cpus is None:
        return None
    return lambda: os.sched_setaffinity(0, cpus)


def wait_healthy(proc: subprocess.Popen[bytes], base: str) -> None:
    for _ in range(600):
        try:
            if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise SystemExit(f"server {base} did not start")


def start_server(db: str, workers: int, cpus: set[int] | None = None,
                 env: dict[str, str] | None = None) -> tuple[subprocess.Popen[bytes], str]:
    """``budgetnas serve`` on a free port (bench/server_memory.py uses it too)."""
    port = free_port()
    full_env = {**os.environ, "BUDGETNAS_ADMIN_TOKEN": ADMIN, **(env or {})}
    proc = subprocess.Popen([sys.executable, "-m", "budgetnas", "serve", "--db", db, "--port", str(port),
                             "--workers", str(workers), "--log-level", "warning"], env=full_env, cwd=REPO,
                            preexec_fn=pinned(cpus))
    base = f"http://127.0.0.1:{port}"
    wait_healthy(proc, base)
    return proc, base


def start_bare(workers: int, cpus: set[int] | None = None) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "uvicorn", "bench.bare_app:app", "--port", str(port),
                             "--workers", str(workers), "--log-level", "warning"], cwd=REPO,
                            preexec_fn=pinned(cpus))
    base = f"http://127.0.0.1:{port}"
    wait_healthy(proc, base)
    return proc, base


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()


# ---- what else ran ------------------------------------------------------------------------------

def cpu_seconds() -> dict[int, tuple[int, float, str]]:
    """pid -> (parent pid, CPU seconds so far, command line) of every process."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[int, tuple[int, float, str]] = {}
    for p in Path("/proc").iterdir():
        if not p.name.isdigit():
            continue
        try:
            stat = (p / "stat").read_text()
            cmd = (p / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        rest = stat[stat.rindex(")") + 2:].split()
        out[int(p.name)] = (int(rest[1]), (int(rest[11]) + int(rest[12])) / tick, cmd or stat.split()[1])
    return out


def sched(pid: int) -> tuple[float, float]:
    """(CPU seconds, seconds waiting on a run queue) so far of ``pid`` and its descendants.

    CPU: each process's utime + stime (which keeps the time of its threads that exited, such as idle
    thread-pool workers); run-queue wait: each process's main thread (the event loop, where requests wait).
    """
    parents = {p: v[0] for p, v in cpu_seconds().items()}
    tree, grew = {pid}, True
    while grew:
        grew = False
        for p, ppid in parents.items():
            if ppid in tree and p not in tree:
                tree.add(p)
                grew = True
    tick = os.sysconf("SC_CLK_TCK")
    run, wait = 0.0, 0
    for p in tree:
        try:
            stat = Path(f"/proc/{p}/stat").read_text()
            wait += int(Path(f"/proc/{p}/schedstat").read_text().split()[1])
        except OSError:
            continue
        rest = stat[stat.rindex(")") + 2:].split()
        run += (int(rest[11]) + int(rest[12])) / tick
    return run, wait / 1e9


def machine_busy() -> float:
    """CPU seconds every CPU spent busy so far (/proc/stat: user, nice, system, irq, softirq)."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    return sum(int(fields[i]) for i in (0, 1, 2, 5, 6)) / os.sysconf("SC_CLK_TCK")


def others_report(before: dict[int, tuple[int, float, str]], now: dict[int, tuple[int, float, str]],
                  busy: float, wall: float, top: int = 5) -> str:
    """The processes outside this bench's tree that used CPU between the snapshots ``before`` and
    ``now``, busiest first, and all the CPU the machine spent outside the tree (``busy``: the
    machine's busy CPU seconds meanwhile), which also counts processes that started and ended
    between the snapshots (a test run)."""
    ours = {os.getpid()}
    changed = True
    while changed:  # descendants of this process: the servers and their workers
        changed = False
        for pid, (ppid, _, _) in now.items():
            if ppid in ours and pid not in ours:
                ours.add(pid)
                changed = True
    used = sorted(((cpu - before.get(pid, (0, 0.0, ""))[1], pid, cmd) for pid, (_, cpu, cmd) in now.items()
                   if pid not in ours), reverse=True)
    total = sum(u for u, _, _ in used)
    mine = sum(cpu - before.get(pid, (0, 0.0, ""))[1] for pid, (_, cpu, _) in now.items() if pid in ours)
    outside = max(busy - mine, 0.0)
    lines = [f"  the machine spent {outside:.1f} CPU-s outside this bench in {wall:.0f} s ({outside / wall:.2f} CPUs, "
             "exited processes included)",
             f"  other processes alive at the end used {total:.1f} CPU-s ({total / wall:.2f} CPUs); busiest:"]
    lines += [f"    {u:7.1f} s  pid {pid}: {cmd[:90]}" for u, pid, cmd in used[:top] if u >= 0.05]
    return "\n".join(lines)


# ---- a minimal HTTP/1.1 client for the single-request figures -------------------------------------

class Conn:
    """One keep-alive HTTP/1.1 connection: POST a JSON body, read the status and a Content-Length body."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str) -> None:
        self.reader, self.writer, self.host = reader, writer, host.encode()

    @classmethod
    async def open(cls, host: str, port: int) -> Conn:
        reader, writer = await asyncio.open_connection(host, port)
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return cls(reader, writer, f"{host}:{port}")

    async def post(self, path: bytes, body: bytes) -> int:
        self.writer.write(b"POST %s HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\n"
                          b"Content-Length: %d\r\n\r\n%s" % (path, self.host, len(body), body))
        status = int((await self.reader.readline()).split()[1])
        length = 0
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            if name.lower() == b"content-length":
                length = int(value)
        await self.reader.readexactly(length)
        return status

    def close(self) -> None:
        self.writer.close()


@dataclass(frozen=True)
class Endpoint:
    name: str
    base: str
    pid: int  # the server's (uvicorn's) process: its tree is what the CPU figures count

    @property
    def host_port(self) -> tuple[str, int]:
        host, port = self.base.removeprefix("http://").rsplit(":", 1)
        return host, int(port)


def check(status: int, ep: Endpoint) -> None:
    if status != 200:
        raise SystemExit(f"{ep.name}: HTTP {status} on predict")


async def sequential(ep: Endpoint, bodies: Sequence[bytes], n: int) -> np.ndarray:
    """One connection, one request at a time (the first 10% warm up and are not counted)."""
    c = await Conn.open(*ep.host_port)
    lat = []
    try:
        for i in range(n):
            t0 = time.perf_counter()
            check(await c.post(b"/v1/predict", bodies[i % len(bodies)]), ep)
            lat.append(time.perf_counter() - t0)
    finally:
        c.close()
    return np.array(lat[n // 10:]) * 1000


async def saturation(ep: Endpoint, bodies: Sequence[bytes], clients: int, seconds: float) -> float:
    """Requests/s with ``clients`` connections closed loop (each sends its next request on an answer)."""
    conns = [await Conn.open(*ep.host_port) for _ in range(clients)]
    done = 0
    counting = False
    end = 0.0

    async def loop(i: int, c: Conn) -> None:
        nonlocal done
        k = i
        while time.perf_counter() < end:
            check(await c.post(b"/v1/predict", bodies[k % len(bodies)]), ep)
            k += clients
            if counting:
                done += 1

    try:
        end = time.perf_counter() + min(1.0, seconds / 4)  # warm-up: every connection answered once
        await asyncio.gather(*(loop(i, c) for i, c in enumerate(conns)))
        counting, t0 = True, time.perf_counter()
        end = t0 + seconds
        await asyncio.gather(*(loop(i, c) for i, c in enumerate(conns)))
        return done / (time.perf_counter() - t0)
    finally:
        for c in conns:
            c.close()


async def paced(ep: Endpoint, bodies: Sequence[bytes], rate: float, seconds: float, clients: int
                ) -> tuple[np.ndarray, float]:
    """Open loop: request i is due at start + i/rate, sent by the first of ``clients`` connections free.

    Latency counts from the due time, so a slow answer charges the requests queued behind it.
    The first second opens the connections and is not counted.
    """
    warm = int(rate)
    n = warm + int(rate * seconds)
    conns = [await Conn.open(*ep.host_port) for _ in range(clients)]
    lat: list[float] = []
    slots = iter(range(n))
    start = time.perf_counter() + 0.05

    async def loop(c: Conn) -> None:
        for i in slots:
            due = start + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            check(await c.post(b"/v1/predict", bodies[i % len(bodies)]), ep)
            if i >= warm:
                lat.append(time.perf_counter() - due)

    try:
        await asyncio.gather(*(loop(c) for c in conns))
    finally:
        for c in conns:
            c.close()
    wall = time.perf_counter() - start - warm / rate
    return np.array(lat) * 1000, len(lat) / wall


# ---- figures over repetitions ---------------------------------------------------------------------

@dataclass
class Figures:
    """name -> one value per repetition."""

    values: dict[str, list[float]] = field(default_factory=dict)

    def add(self, name: str, value: float) -> None:
        self.values.setdefault(name, []).append(value)

    def get(self, name: str) -> list[float]:
        return self.values.get(name, [])


def spread(vals: Sequence[float], unit: str = "", fmt: str = ".2f") -> str:
    if not vals:
        return "n/a"
    runs = ", ".join(f"{v:{fmt}}" for v in vals)
    return f"median {statistics.median(vals):{fmt}}{unit} (min {min(vals):{fmt}}, max {max(vals):{fmt}}; runs {runs})"


async def single_figures(ep: Endpoint, bodies: Sequence[bytes], args: argparse.Namespace, fig: Figures) -> None:
    ms = await sequential(ep, bodies, args.sequential)
    fig.add(f"{ep.name} sequential p50 ms", float(np.percentile(ms, 50)))
    fig.add(f"{ep.name} sequential p99 ms", float(np.percentile(ms, 99)))
    run0, _ = sched(ep.pid)
    t0 = time.perf_counter()
    rps = await saturation(ep, bodies, args.clients, args.sat_seconds)
    run1, wait1 = sched(ep.pid)
    fig.add(f"{ep.name} saturation req/s", rps)
    # the server's CPU per request: what contention on a shared machine changes least (warm-up included)
    fig.add(f"{ep.name} saturation cpu us/request", (run1 - run0) / (rps * (time.perf_counter() - t0)) * 1e6)
    ms, achieved = await paced(ep, bodies, args.rate, args.seconds, args.clients)
    run2, wait2 = sched(ep.pid)
    for q in (50, 90, 99):
        fig.add(f"{ep.name} open-loop p{q} ms", float(np.percentile(ms, q)))
    fig.add(f"{ep.name} open-loop max ms", float(ms.max()))
    fig.add(f"{ep.name} open-loop achieved req/s", achieved)
    # time the server was ready to run but another process had its CPU (the shared machine's share of the tail)
    fig.add(f"{ep.name} open-loop run-queue wait ms", (wait2 - wait1) * 1000)
    fig.add(f"{ep.name} open-loop cpu us/request", (run2 - run1) / (args.rate * (1 + args.seconds)) * 1e6)


def batch_figures(base: str, lut: int, seed: int, fig: Figures) -> None:
    sp = get_space("ofa-mbv3", width=1.2, resolution=224)
    archs = [sp.format(a) for a in sp.sample_many(10_000, seed=seed)]
    body = orjson.dumps({"lut": lut, "archs": archs})
    with httpx.Client(base_url=base, timeout=120, headers={"Content-Type": "application/json"}) as c:
        for name in ("cold", "warm"):
            t0 = time.perf_counter()
            r = c.post("/v1/predict", content=body)
            n = len(orjson.loads(r.content)["predictions"]) if r.status_code == 200 else 0
            fig.add(f"batch 10k {name} ms", (time.perf_counter() - t0) * 1000)
            if n != 10_000:
                raise SystemExit(f"batch predict: HTTP {r.status_code}, {n} predictions: {r.text[:300]}")


RUN_ID = f"{os.getpid()}{int(time.time()) % 100000}"  # names this run's campaigns apart from a kept database's


def lease_figures(base: str, token: str, backend: str, n_jobs: int, agents: int, batch: int, fig: Figures) -> None:
    """``agents`` threads lease and report until the queue is empty; counts lost and duplicated jobs."""
    camp = httpx.post(f"{base}/v1/campaigns", json={"space": {"space": "nb201"}, "device": "bench-rig",
                                                    "backend": backend, "validation_models": n_jobs, "seed": 1},
                      headers=H, timeout=300)
    if camp.status_code not in (200, 201):
        raise SystemExit(f"campaign: HTTP {camp.status_code}: {camp.text[:300]}")
    total = int(camp.json()["jobs_created"])
    if total == 0:
        raise SystemExit(f"lease+result: the campaign of backend {backend!r} created no jobs (already measured?)")
    stats = {"count": 3, "mean_ms": 1.0, "std_ms": 0.1, "median_ms": 1.0}
    leased: Counter[int] = Counter()
    stored: Counter[int] = Counter()
    errors: list[str] = []
    lock = threading.Lock()
    barrier = threading.Barrier(agents + 1)

    def agent(i: int) -> None:
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=120) as c:
            barrier.wait()
            n = 0
            while True:
                r = c.post("/v1/jobs/lease", json={"device": "bench-rig", "backend": backend, "max_jobs": batch})
                if r.status_code != 200:
                    errors.append(f"lease: HTTP {r.status_code}: {r.text[:200]}")
                    return
                jobs = r.json()["jobs"]
                if not jobs:
                    return
                if batch == 1:
                    j = jobs[0]
                    r = c.post(f"/v1/jobs/{j['id']}/result", json={"idempotency_key": f"{i}:{n}", "stats": stats})
                    outs = [r.json()] if r.status_code == 200 else []
                else:
                    r = c.post("/v1/jobs/results", json={"results": [
                        {"job": j["id"], "lease_id": j["lease_id"], "idempotency_key": f"{i}:{n}:{k}",
                         "stats": stats} for k, j in enumerate(jobs)]})
                    outs = r.json()["results"] if r.status_code == 200 else []
                n += 1
                if r.status_code != 200:
                    errors.append(f"result: HTTP {r.status_code}: {r.text[:200]}")
                    return
                with lock:
                    for j in jobs:
                        leased[j["id"]] += 1
                    for o in outs:
                        stored[o["id"]] += int(o["stored"])

    threads = [threading.Thread(target=agent, args=(i,)) for i in range(agents)]
    for t in threads:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - t0
    if errors:
        raise SystemExit(f"lease+result: {errors[0]}")
    fig.add(f"lease+result x{batch} jobs/s", total / wall)
    fig.add(f"lease+result x{batch} lost", total - len(stored))
    fig.add(f"lease+result x{batch} duplicated", sum(v - 1 for v in stored.values() if v > 1)
            + sum(v - 1 for v in leased.values() if v > 1))


# ---- one setting: a database and a worker count ---------------------------------------------------

def verdicts(fig: Figures, args: argparse.Namespace) -> list[str]:
    p99 = fig.get("lut open-loop p99 ms")
    ratio = [a / b for a, b in zip(p99, fig.get("bare open-loop p99 ms"), strict=True)]
    sat = [a / b for a, b in zip(fig.get("lut saturation req/s"), fig.get("bare saturation req/s"), strict=True)]
    cold = fig.get("batch 10k cold ms")
    best = max(args.lease_batch)  # the goal is for the batching agent
    jobs = fig.get(f"lease+result x{best} jobs/s") if args.jobs else []
    lost = sum(sum(fig.get(f"lease+result x{b} lost")) for b in args.lease_batch)
    dup = sum(sum(fig.get(f"lease+result x{b} duplicated")) for b in args.lease_batch)

    def yes(ok: bool) -> str:
        return "met" if ok else "NOT met"

    out = [f"  p99 at {args.rate:.0f} req/s < 20 ms in each run: {yes(all(v < 20 for v in p99))} "
           f"({', '.join(f'{v:.1f}' for v in p99)} ms)",
           f"  p99 within 2x of the bare endpoint's in each run: {yes(all(r <= 2 for r in ratio))} "
           f"(ratios {', '.join(f'{r:.2f}' for r in ratio)})",
           f"  saturation >= 60% of the bare endpoint's: {yes(all(r >= 0.6 for r in sat))} "
           f"(ratios {', '.join(f'{r:.2f}' for r in sat)})"]
    if cold:
        out.append(f"  10,000-arch batch cold < 100 ms: {yes(all(v < 100 for v in cold))} "
                   f"(runs {', '.join(f'{v:.0f}' for v in cold)} ms)")
    if jobs:
        out.append(f"  lease+result >= 300 jobs/s ({best} jobs per call), 0 lost, 0 duplicated: "
                   f"{yes(all(v >= 300 for v in jobs) and lost == 0 and dup == 0)} "
                   f"(runs {', '.join(f'{v:.0f}' for v in jobs)} jobs/s; lost {lost:.0f}, duplicated {dup:.0f})")
    return out


def run_setting(db_arg: str, workers: int, args: argparse.Namespace, cpus: set[int] | None) -> list[str]:
    tmp = tempfile.mkdtemp(prefix="budgetnas-bench-")
    db = f"sqlite:///{tmp}/bench.db" if db_arg == "sqlite" else db_arg
    shown = db.split("@")[-1]
    lut_proc, lut_base = start_server(db, workers, cpus)
    bare_proc, bare_base = start_bare(workers, cpus)
    fig = Figures()
    before, busy0, t_start, load0 = cpu_seconds(), machine_busy(), time.perf_counter(), os.getloadavg()
    try:
        lut = httpx.post(f"{lut_base}/v1/luts/import", json={"format": "ofa-yaml", "content": YAML.read_text(),
                                                              "device": "note10",
                                                              "runtime_version": f"bench-{time.time()}"},
                         headers=H, timeout=120).json()["id"]
        sp = get_space("ofa-mbv3", width=1.2, resolution=224)
        bodies = [orjson.dumps({"lut": lut, "archs": [sp.format(a)]}) for a in sp.sample_many(1000, seed=0)]
        eps = [Endpoint("bare", bare_base, bare_proc.pid), Endpoint("lut", lut_base, lut_proc.pid)]
        token = ""
        if args.jobs:
            token = httpx.post(f"{lut_base}/v1/devices", json={"name": "bench-rig"}, headers=H).json()["token"]
        for ep in eps:
            # "warm" predict: one uncounted repetition first, so that every worker has loaded the LUT and
            # run the code paths before anything counts (the counted first one was slower in every setting)
            asyncio.run(single_figures(ep, bodies, args, Figures()))
        for rep in range(args.repeats):
            for ep in eps if rep % 2 == 0 else eps[::-1]:  # alternate who goes first: drift hits both alike
                asyncio.run(single_figures(ep, bodies, args, fig))
            batch_figures(lut_base, lut, seed=1000 + rep, fig=fig)
            for b in args.lease_batch if args.jobs else []:
                # a backend of its own per setting and run: a database kept between settings (PostgreSQL)
                # already holds the measurements of an earlier setting's campaign, which enqueues nothing again
                lease_figures(lut_base, token, f"bench-{RUN_ID}-w{workers}-r{rep}-x{b}", args.jobs, args.agents, b, fig)
            print(f"  [{shown}, {workers} worker(s)] repetition {rep + 1}/{args.repeats} done, "
                  f"load average {os.getloadavg()[0]:.2f}", flush=True)
    finally:
        now, busy = cpu_seconds(), machine_busy() - busy0  # while the servers still count as this bench's
        stop(lut_proc)
        stop(bare_proc)
    wall = time.perf_counter() - t_start
    load1 = os.getloadavg()
    lines = [f"== {shown}, {workers} uvicorn worker(s), {args.repeats} repetitions "
             f"(load average {load0[0]:.2f} before, {load1[0]:.2f} after) ==",
             others_report(before, now, busy, wall)]
    for who in ("bare", "lut"):
        name = "bare endpoint" if who == "bare" else "LUT server"
        lines += [f"  {name}:",
                  f"    sequential p50 {spread(fig.get(f'{who} sequential p50 ms'), ' ms')}",
                  f"    sequential p99 {spread(fig.get(f'{who} sequential p99 ms'), ' ms')}",
                  f"    saturation, {args.clients} connections: "
                  f"{spread(fig.get(f'{who} saturation req/s'), ' req/s', '.0f')}",
                  f"      server CPU per request {spread(fig.get(f'{who} saturation cpu us/request'), ' us', '.0f')}",
                  f"    open loop {args.rate:.0f} req/s for {args.seconds:g} s, p50 "
                  f"{spread(fig.get(f'{who} open-loop p50 ms'), ' ms')}",
                  f"      p99 {spread(fig.get(f'{who} open-loop p99 ms'), ' ms')}",
                  f"      max {spread(fig.get(f'{who} open-loop max ms'), ' ms', '.1f')}",
                  f"      achieved {spread(fig.get(f'{who} open-loop achieved req/s'), ' req/s', '.0f')}",
                  f"      server waited for a CPU {spread(fig.get(f'{who} open-loop run-queue wait ms'), ' ms', '.0f')}",
                  f"      server CPU per request {spread(fig.get(f'{who} open-loop cpu us/request'), ' us', '.0f')}"]

    def ratios(name: str) -> list[float]:
        return [a / b for a, b in zip(fig.get(f"lut {name}"), fig.get(f"bare {name}"), strict=True)]

    lines += ["  LUT server / bare endpoint, per repetition:",
              f"    sequential p50 {spread(ratios('sequential p50 ms'))}",
              f"    saturation req/s {spread(ratios('saturation req/s'))}",
              f"    server CPU per request (saturation) {spread(ratios('saturation cpu us/request'))}",
              f"    open-loop p50 {spread(ratios('open-loop p50 ms'))}",
              f"    open-loop p99 {spread(ratios('open-loop p99 ms'))}",
              f"  10,000-arch batch (request to parsed response): cold {spread(fig.get('batch 10k cold ms'), ' ms', '.0f')}",
              f"    warm {spread(fig.get('batch 10k warm ms'), ' ms', '.0f')}"]
    for b in args.lease_batch if args.jobs else []:
        lines.append(f"  lease+result, {args.agents} agents, {args.jobs}+ jobs, {b} per call: "
                     f"{spread(fig.get(f'lease+result x{b} jobs/s'), ' jobs/s', '.0f')}; lost "
                     f"{sum(fig.get(f'lease+result x{b} lost')):.0f}, "
                     f"duplicated {sum(fig.get(f'lease+result x{b} duplicated')):.0f}")
    lines += ["  Must-show goals:", *verdicts(fig, args)]
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--db", action="append", help="'sqlite' (a fresh file, the default) or a database URL; repeatable")
    ap.add_argument("--workers", type=int, nargs="+", default=[1], help="uvicorn worker counts to run")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--sequential", type=int, default=1000, help="requests of the sequential figure")
    ap.add_argument("--clients", type=int, default=32, help="connections of the saturation and open-loop figures")
    ap.add_argument("--sat-seconds", type=float, default=5, help="duration of the saturation figure")
    ap.add_argument("--rate", type=float, default=500, help="offered req/s of the open-loop figure")
    ap.add_argument("--seconds", type=float, default=10, help="duration of the open-loop figure")
    ap.add_argument("--jobs", type=int, default=1500, help="model jobs per lease+result run (0: skip)")
    ap.add_argument("--agents", type=int, default=20)
    ap.add_argument("--lease-batch", type=int, nargs="+", default=[1, 10],
                    help="jobs per lease and per result call, each measured (1: the single-job routes)")
    ap.add_argument("--no-pin", action="store_true", help="leave the client and servers on every CPU")
    ap.add_argument("--quick", action="store_true", help="smoke setting (< 1 minute): 2 short repetitions")
    args = ap.parse_args()
    if args.quick:  # what is not given on the command line
        for name, value in QUICK.items():
            if getattr(args, name) == ap.get_default(name):
                setattr(args, name, value)
    dbs = args.db or ["sqlite"]
    for name, v in (("--repeats", args.repeats), ("--sequential", args.sequential), ("--clients", args.clients),
                    ("--agents", args.agents), *(("--lease-batch", b) for b in args.lease_batch),
                    *(("--workers", w) for w in args.workers)):
        if v < 1:
            print(f"error: {name} must be >= 1 (got {v})", file=sys.stderr)
            sys.exit(2)
    if max(args.lease_batch) > 100:
        print(f"error: --lease-batch must be <= 100 (the server's batch bound; got {max(args.lease_batch)})",
              file=sys.stderr)
        sys.exit(2)
    if min(args.rate, args.seconds, args.sat_seconds) <= 0 or args.jobs < 0:
        print("error: --rate, --seconds and --sat-seconds must be > 0, --jobs >= 0", file=sys.stderr)
        sys.exit(2)
    if not YAML.exists():
        print(f"error: needs {YAML}", file=sys.stderr)
        sys.exit(2)
    cpus: set[int] | None = None
    n_cpu = len(os.sched_getaffinity(0))
    if n_cpu >= 2 and not args.no_pin:
        cpus = {SERVER_CPU}
        os.sched_setaffinity(0, {CLIENT_CPU})
        pin = f"client pinned to CPU {CLIENT_CPU}, servers and their workers to CPU {SERVER_CPU}"
    else:
        pin = "not pinned (client and servers share every CPU)"
    print(f"bench/server_load.py {' '.join(sys.argv[1:])}")
    print(f"{time.strftime('%Y-%m-%d %H:%M:%S %Z')}; {os.uname().nodename}, {os.cpu_count()} CPUs; {pin}; "
          f"load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}", flush=True)
    report: list[str] = []
    for db in dbs:
        for w in args.workers:
            report += run_setting(db, w, args, cpus)
    print("\n".join(report))


if __name__ == "__main__":
    main()
