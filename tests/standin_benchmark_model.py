"""Stand-in for TFLite's ``benchmark_model``, run "on" the loopback phone.

It takes the real tool's flags, runs the ``--graph`` model with ai-edge-litert for real, and
prints the real tool's log (``INFO: ...`` lines, ``count=... avg=... std=...`` stats lines, the
``Inference timings in us: ...`` summary). Tests write it out with a ``#!<python>`` line as the
user's "binary" and the agent pushes it to /data/local/tmp like the real one.
"""

from __future__ import annotations

import math
import sys
import time


def _flags(argv: list[str]) -> dict[str, str]:
    out = {}
    for a in argv:
        if a.startswith("--") and "=" in a:
            k, v = a[2:].split("=", 1)
            out[k] = v
    return out


def _stat_line(us: list[float]) -> str:
    n = len(us)
    avg = sum(us) / n
    std = math.sqrt(sum((x - avg) ** 2 for x in us) / n)
    return (f"count={n} first={int(us[0])} curr={int(us[-1])} min={int(min(us))} max={int(max(us))} "
            f"avg={avg:.6g} std={round(std)}")


def _run(invoke, min_runs: int, min_secs: float, max_secs: float) -> list[float]:
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < min_runs or time.perf_counter() - start < min_secs:
        t0 = time.perf_counter_ns()
        invoke()
        times.append((time.perf_counter_ns() - t0) / 1000.0)
        if time.perf_counter() - start > max_secs:
            break
    return times


def main(argv: list[str]) -> int:
    f = _flags(argv)
    graph = f.get("graph", "")
    threads = int(f.get("num_threads", "-1"))
    warmup_runs, num_runs = int(f.get("warmup_runs", "1")), int(f.get("num_runs", "50"))
    warmup_secs, min_secs = float(f.get("warmup_min_secs", "0.5")), float(f.get("min_secs", "1"))
    max_secs = float(f.get("max_secs", "150"))
    print("INFO: STARTING!")
    print("INFO: Log parameter values verbosely: [0]")
    print(f"INFO: Min num runs: [{num_runs}]")
    print(f"INFO: Min runs duration (seconds): [{min_secs:g}]")
    print(f"INFO: Num threads: [{threads}]")
    print(f"INFO: Min warmup runs: [{warmup_runs}]")
    print(f"INFO: Graph: [{graph}]")
    print(f"INFO: #threads used for CPU inference: [{threads}]")
    sys.stdout.flush()
    t0 = time.perf_counter()
    try:
        import numpy as np
        from ai_edge_litert.interpreter import Interpreter

        interp = Interpreter(model_path=graph, num_threads=threads if threads > 0 else None)
        interp.allocate_tensors()
    except Exception as exc:  # the real tool prints why and exits 1
        print(f"ERROR: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}")
        print(f"ERROR: Failed to load model {graph}")
        print("ERROR: Benchmarking failed.")
        return 1
    print(f"INFO: Loaded model {graph}")
    print("INFO: Initialized TensorFlow Lite runtime.")
    print("INFO: Created TensorFlow Lite XNNPACK delegate for CPU.")
    init_us = (time.perf_counter() - t0) * 1e6
    import os

    print(f"INFO: The input model file size (MB): {os.path.getsize(graph) / 1e6:.6g}")
    print(f"INFO: Initialized session in {init_us / 1000:.6g}ms.")
    rng = np.random.default_rng(0)
    for d in interp.get_input_details():
        interp.set_tensor(d["index"], rng.standard_normal(d["shape"]).astype(d["dtype"]))
    print(f"INFO: Running benchmark for at least {warmup_runs} iterations and at least {warmup_secs:g} seconds "
          f"but terminate if exceeding {max_secs:g} seconds.")
    warm = _run(interp.invoke, max(warmup_runs, 1), warmup_secs, max_secs)
    print(f"INFO: {_stat_line(warm)}\n")
    print(f"INFO: Running benchmark for at least {num_runs} iterations and at least {min_secs:g} seconds "
          f"but terminate if exceeding {max_secs:g} seconds.")
    runs = _run(interp.invoke, num_runs, min_secs, max_secs)
    print(f"INFO: {_stat_line(runs)}\n")
    print(f"INFO: Inference timings in us: Init: {init_us:.6g}, First inference: {warm[0]:.6g}, "
          f"Warmup (avg): {sum(warm) / len(warm):.6g}, Inference (avg): {sum(runs) / len(runs):.6g}")
    print("INFO: Note: as the benchmark tool itself affects memory footprint, the following is only APPROXIMATE "
          "to the actual memory footprint of the model at runtime. Take the information at your discretion.")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
