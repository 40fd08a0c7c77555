"""The agent's spool: finished results (and failures) written to a local JSONL file before posting.

Each record is appended and fsynced *before* it is sent, with its idempotency key, so a crash or an
unreachable server loses nothing and a resend after a restart cannot store twice (the server
answers ``stored: false`` to a repeated key). A ``{"sent": key}`` line marks a record delivered;
the file is compacted when nothing is pending.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from budgetnas.core.errors import DataFileError


class Spool:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.path.touch(exist_ok=True)
        except OSError as exc:
            raise DataFileError(f"cannot use spool file {self.path}: {exc.strerror}") from None

    def _append(self, rec: dict[str, Any]) -> None:
        with self._lock, self.path.open("a+b") as f:
            f.seek(0, os.SEEK_END)
            torn = False
            if f.tell():
                f.seek(-1, os.SEEK_END)
                torn = f.read(1) != b"\n"  # a crash mid-write: start on a fresh line
            f.write((("\n" if torn else "") + json.dumps(rec, sort_keys=True) + "\n").encode())
            f.flush()
            os.fsync(f.fileno())

    def add(self, kind: str, job_id: int, key: str, body: dict[str, Any]) -> None:
        """Persist one outgoing record (kind ``result`` or ``fail``) before it is posted."""
        self._append({"kind": kind, "job": job_id, "key": key, "body": body})

    def mark_sent(self, key: str) -> None:
        self._append({"sent": key})

    def pending(self) -> list[dict[str, Any]]:
        """Records not yet marked sent, oldest first (a torn last line from a crash is skipped)."""
        with self._lock:
            lines = self.path.read_text().splitlines()
        recs: dict[str, dict[str, Any]] = {}
        for rec in _parsed(lines):
            if "sent" in rec:
                recs.pop(rec["sent"], None)
            elif "key" in rec:
                recs[rec["key"]] = rec
        return list(recs.values())

    def compact(self) -> None:
        """Rewrite the file with only pending records (atomically)."""
        with self._lock:
            keep = []
            sent = set()
            for rec in _parsed(self.path.read_text().splitlines()):
                if "sent" in rec:
                    sent.add(rec["sent"])
                else:
                    keep.append(rec)
            tmp = self.path.with_suffix(self.path.suffix + ".tmp")
            tmp.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in keep if r.get("key") not in sent))
            os.replace(tmp, self.path)


def _parsed(lines: list[str]) -> Iterator[dict[str, Any]]:
    """The spool's records; a torn line (a crash mid-write) is skipped."""
    for line in lines:
        try:
            yield json.loads(line)
        except json.JSONDecodeError:
            continue
