"""Supernet checkpoint files: atomic writes, and loading that names what is wrong with a bad file."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from budgetnas.core.errors import DataFileError
from budgetnas.profiler.artifacts import sha256_file
from budgetnas.spaces import OFAMobileNetV3, space_from_description

FORMAT = "budgetnas-supernet/1"


def atomic_write_bytes(path: Path, write: Any) -> None:
    """Call ``write(file_object)`` on a temp file beside ``path``, then rename it into place, so a
    crash or an error never leaves a half-written file under the final name."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def save(path: Path, ckpt: dict[str, Any]) -> None:
    atomic_write_bytes(path, lambda f: torch.save(ckpt, f))


def load(path: Path) -> dict[str, Any]:
    """A supernet checkpoint, checked to be ours and for the ``ofa-mbv3`` space."""
    if not path.is_file():
        raise DataFileError(f"checkpoint {path} does not exist")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises pickle, zip and runtime errors for foreign files
        raise DataFileError(f"{path} is not a readable supernet checkpoint ({type(exc).__name__}: {exc})") from None
    if not isinstance(ckpt, dict) or ckpt.get("format") != FORMAT:
        raise DataFileError(f"{path} is not a supernet checkpoint (expected format {FORMAT!r})")
    space = ckpt.get("space", {})
    if not isinstance(space, dict) or space.get("space") != OFAMobileNetV3.name:
        raise DataFileError(f"{path} is a checkpoint for space {space.get('space')!r}, not {OFAMobileNetV3.name!r}")
    return ckpt


def space_of(ckpt: dict[str, Any]) -> OFAMobileNetV3:
    sp = space_from_description(ckpt["space"])
    assert isinstance(sp, OFAMobileNetV3)
    return sp


sha256_of = sha256_file  # the profiler's content hash, so artifacts and checkpoints name files alike
