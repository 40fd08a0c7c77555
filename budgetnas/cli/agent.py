"""``budgetnas agent``: a device agent serving the campaigns of one (device, backend)."""

from __future__ import annotations

import logging
from typing import Annotated

import typer

from budgetnas.cli.util import json_object_option
from budgetnas.core.errors import InvalidArgumentError

app = typer.Typer(help="Device agents.")


def parse_cores(text: str | None) -> list[int] | None:
    """``0,1,4-7`` -> [0, 1, 4, 5, 6, 7]."""
    if not text:
        return None
    cores: list[int] = []
    try:
        for part in text.split(","):
            a, _, b = part.strip().partition("-")
            lo, hi = int(a), int(b or a)
            if lo < 0 or hi < lo:
                raise ValueError(part)
            cores += range(lo, hi + 1)
    except ValueError:
        raise InvalidArgumentError(f"--cores {text!r}: expected CPU numbers like 0,1 or 4-7") from None
    return sorted(set(cores))


@app.command("agent")
def agent_cmd(
    server: Annotated[str, typer.Option("--server", help="LUT server base URL, e.g. http://127.0.0.1:8000")],
    token: Annotated[str, typer.Option("--token", envvar="BUDGETNAS_TOKEN",
                                       help="the device's agent token (or the admin token: registers the device)")],
    name: Annotated[str, typer.Option("--name", help="device name: serves LUTs of this device")],
    backend: Annotated[str, typer.Option("--backend", help="ort-cpu, torch-cpu, litert-cpu, torch-cuda, ort-cuda, "
                                                           "android-litert")],
    threads: Annotated[int, typer.Option("--threads", min=1, help="threads when a job does not say")] = 1,
    batch: Annotated[int | None, typer.Option("--batch", min=1, help="batch when a job does not say "
                                                                    "(GPUs: 64)")] = None,
    adb: Annotated[str | None, typer.Option("--adb", help="phone: USB serial or HOST:PORT of adbd")] = None,
    benchmark_binary: Annotated[str | None, typer.Option("--benchmark-binary",
                                                         help="phone: TFLite's benchmark_model for its ABI")] = None,
    cores: Annotated[str | None, typer.Option("--cores", help="pin to CPUs, e.g. 0,1 or 4-7 (phone: taskset "
                                                              "mask of these cores)")] = None,
    protocol: Annotated[str, typer.Option("--protocol", help="JSON overrides of the measurement protocol: the "
                                                             "profiler's (min_runs, min_seconds, rounds...) or, on a "
                                                             "phone, warmup_runs, num_runs, min_secs, rounds, "
                                                             "cool_below_c...")] = "{}",
    quick: Annotated[bool, typer.Option("--quick", help="short measurement protocol (smoke runs, tests)")] = False,
    lease_seconds: Annotated[float, typer.Option("--lease-seconds", min=1.0)] = 60.0,
    poll: Annotated[float, typer.Option("--poll", min=0.05, help="seconds between leases when idle")] = 2.0,
    max_backoff: Annotated[float, typer.Option("--max-backoff", min=0.1, help="cap of the retry backoff (s)")] = 15.0,
    idle_exit: Annotated[float | None, typer.Option("--idle-exit", min=0.0,
                                                    help="exit after this many seconds without a job")] = None,
    max_jobs: Annotated[int | None, typer.Option("--max-jobs", min=1, help="exit after this many jobs")] = None,
    lease_batch: Annotated[int, typer.Option("--lease-batch", min=1, max=100,
                                             help="jobs per lease, measured in one session on CPU/GPU "
                                                  "backends (interleaved rounds) and reported in one call "
                                                  "(where the server has batches)")] = 1,
    spool: Annotated[str | None, typer.Option("--spool", help="JSONL spool of unsent results "
                                                              "(default under ~/.cache/budgetnas/agent)")] = None,
    cache_dir: Annotated[str | None, typer.Option("--cache-dir", help="artifact cache root")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v")] = False,
) -> None:
    """Lease jobs for (--name, --backend) from the LUT server, measure them here, report the results."""
    from budgetnas.device_agents.agent import Agent, AgentConfig
    from budgetnas.device_agents.backends import BackendOptions, get_backend, list_backends

    if backend not in list_backends():
        from budgetnas.core.errors import UnknownNameError

        raise UnknownNameError("backend", backend, list_backends())
    if not server.startswith(("http://", "https://")):
        raise InvalidArgumentError(f"--server {server!r}: expected a URL like http://127.0.0.1:8000")
    proto = json_object_option(protocol, "--protocol")
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format=f"%(asctime)s agent {name}/{backend}: %(message)s")
    for noisy in ("httpx", "httpcore", "adb_shell"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    opts = BackendOptions(threads=threads, batch=batch, cores=parse_cores(cores), quick=quick, adb=adb,
                          benchmark_binary=benchmark_binary, protocol=proto, cache_dir=cache_dir)
    if backend != "android-litert" and (adb or benchmark_binary):
        raise InvalidArgumentError("--adb and --benchmark-binary apply to --backend android-litert only")
    try:
        be = get_backend(backend, opts)
    except TypeError as exc:  # an unknown --protocol field
        raise InvalidArgumentError(f"--protocol: {exc}") from None
    cfg = AgentConfig(server=server, token=token, name=name, backend=backend, lease_seconds=lease_seconds,
                      poll_s=poll, max_backoff_s=max_backoff, idle_exit_s=idle_exit, max_jobs=max_jobs, spool=spool,
                      lease_batch=lease_batch)
    Agent(cfg, be).run()
