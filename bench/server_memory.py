"""Server memory under predict requests full of distinct spellings of the same architectures.

    .venv/bin/python bench/server_memory.py [--requests 1000] [--archs 10000] [--space ofa-mbv3|nb201]

Starts ``budgetnas serve`` (one worker, a fresh SQLite file), imports a synthetic LUT of the space
through the API (every block key, 1-2 ms), then sends ``--requests`` predict requests of ``--archs``
architecture strings each. Every string of the run is distinct, yet they spell only ``--pool``
architectures (leading zeros in numbers, outer blanks: spellings the parsers accept). A server that
caches by the text it was sent grows with every request (issue 16 item 3: 156 -> 640 MB in 60
requests); one that caches canonical architectures stays flat. Prints the server's RSS (the
process tree's, from /proc) after a warm-up and at every tenth of the run, and the growth in
percent from the warm-up to the end (goal: < 20% over 1,000 requests). Linux only. Not run in CI.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.server_load import ADMIN, H, start_server  # noqa: E402
from budgetnas.luts.lut import LUT, LatencyStats, LUTMeta  # noqa: E402
from budgetnas.spaces import get_space  # noqa: E402


def rss_mb(pid: int) -> float:
    """Resident memory of a process and its descendants, in MB."""
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            status = Path(f"/proc/{p}/status").read_text()
            total += next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:"))
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (FileNotFoundError, StopIteration, ProcessLookupError):
            continue
    return total / 1024


def import_lut(base: str, space: str) -> int:
    sp = get_space(space)
    lut = LUT(LUTMeta(space=sp.describe(), device="mem-bench", backend="synthetic"),
              {k: LatencyStats.from_samples([1.0, 2.0]) for k in sp.all_block_keys()})
    r = httpx.post(f"{base}/v1/luts/import", json={"format": "json", "content": json.dumps(lut.to_json_dict())},
                   headers=H, timeout=60)
    r.raise_for_status()
    return int(r.json()["id"])


def digits(m: int, n: int) -> list[int]:
    """m in base 4, n digits (least significant first), the rest returned as the last digit's overflow."""
    out = []
    for _ in range(n - 1):
        out.append(m % 4)
        m //= 4
    return [*out, m]


def spell_ofa(arch: str, m: int) -> str:
    """The m-th spelling of a canonical ofa-mbv3 string: zeros before every kernel/expand/resolution."""
    head, *units = arch.split("|")
    n_tok = 1 + sum(2 * len(u.split(",")) for u in units)
    z = digits(m, n_tok)
    w, _, r = head.partition("_r")
    parts, i = [f"{w}_r{'0' * z[0]}{r}"], 1
    for unit in units:
        toks = []
        for tok in unit.split(","):
            k, _, e = tok[1:].partition("e")
            toks.append(f"k{'0' * z[i]}{k}e{'0' * z[i + 1]}{e}")
            i += 2
        parts.append(",".join(toks))
    return "|".join(parts)


def spell_nb201(arch: str, m: int) -> str:
    """The m-th spelling of an nb201 string: zeros in the six '~i' indices, then outer blanks."""
    z = digits(m, 7)
    out, e = [], 0
    for node in arch.split("+"):
        edges = []
        for edge in node.strip("|").split("|"):
            op, _, i = edge.partition("~")
            edges.append(f"{op}~{'0' * z[e]}{i}")
            e += 1
        out.append("|" + "|".join(edges) + "|")
    return " " * z[6] + "+".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=1000, help="predict requests after the warm-up")
    ap.add_argument("--archs", type=int, default=10_000, help="architecture strings per request")
    ap.add_argument("--pool", type=int, default=1000, help="distinct architectures the strings spell")
    ap.add_argument("--space", choices=("ofa-mbv3", "nb201"), default="ofa-mbv3")
    ap.add_argument("--warmup", type=int, default=5, help="requests before the baseline RSS is taken")
    args = ap.parse_args()
    sp = get_space(args.space)
    pool = [sp.format(a) for a in sp.sample_many(args.pool, seed=0)]
    spell = spell_ofa if args.space == "ofa-mbv3" else spell_nb201
    with tempfile.TemporaryDirectory() as tmp:
        proc, base = start_server(f"sqlite:///{Path(tmp) / 'mem.db'}", workers=1)
        try:
            lut = import_lut(base, args.space)
            client = httpx.Client(base_url=base, timeout=120)
            counter = 0

            def one() -> None:
                nonlocal counter
                archs = []
                for _ in range(args.archs):  # string number `counter`: arch counter % pool, spelling counter // pool
                    archs.append(spell(pool[counter % len(pool)], counter // len(pool)))
                    counter += 1
                r = client.post("/v1/predict", json={"lut": lut, "archs": archs})
                if r.status_code != 200:
                    raise SystemExit(f"predict: HTTP {r.status_code}: {r.text[:300]}")

            t0 = time.perf_counter()
            for _ in range(args.warmup):
                one()
            base_mb = rss_mb(proc.pid)
            print(f"{args.space}: pool of {len(pool)} archs, {args.archs} distinct strings per request, "
                  f"server pid {proc.pid}; cpus {os.cpu_count()}")
            print(f"after {args.warmup} warm-up requests: RSS {base_mb:.1f} MB")
            step = max(1, args.requests // 10)
            for i in range(1, args.requests + 1):
                one()
                if i % step == 0 or i == args.requests:
                    mb = rss_mb(proc.pid)
                    print(f"  after {i:5d} requests ({counter:,} strings): RSS {mb:7.1f} MB "
                          f"({100 * (mb - base_mb) / base_mb:+.1f}%), {time.perf_counter() - t0:.0f} s", flush=True)
            end_mb = rss_mb(proc.pid)
            growth = 100 * (end_mb - base_mb) / base_mb
            print(f"RSS growth over {args.requests} requests: {growth:+.1f}% ({base_mb:.1f} -> {end_mb:.1f} MB); "
                  f"goal < 20%: {'met' if growth < 20 else 'NOT met'}")
            client.close()
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()


if __name__ == "__main__":
    assert ADMIN
    main()
