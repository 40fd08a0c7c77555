"""Resumable benchmark sweeps: finished runs are JSON lines, appended as each one ends, so an
interrupted sweep picks up where it stopped (shared by the frontier benchmarks)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

Run = dict[str, Any]


def load_runs(path: Path) -> list[Run]:
    return [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.exists() else []


def run_pending(todo: list[Run], run_task: Callable[[Run], Run], path: Path, done: list[Run],
                workers: int = 1) -> None:
    """Run ``todo`` (in ``workers`` spawned processes when > 1), appending each result to ``path``
    and to ``done`` as it finishes."""
    with path.open("a") as fh:
        def keep(r: Run) -> None:
            fh.write(json.dumps(r) + "\n")
            fh.flush()
            done.append(r)

        if workers > 1:
            from multiprocessing import get_context

            with get_context("spawn").Pool(workers) as pool:
                for r in pool.imap_unordered(run_task, todo):
                    keep(r)
        else:
            for t in todo:
                keep(run_task(t))
