"""Content-addressed on-disk cache of exported artifacts (``.onnx``, ``.tflite``).

Layout under the cache root (``$BUDGETNAS_CACHE`` or ``~/.cache/budgetnas``)::

    artifacts/objects/<sha256[:2]>/<sha256>.<ext>   the artifact, named by the sha256 of its bytes
    artifacts/recipes/<recipe sha256>.json          {"sha256": ..., "format": ..., "recipe": {...}}

A *recipe* is a JSON-able dict that fully determines an artifact (what was built, batch, layout,
opset, exporter, torch version, a digest of the builder sources...). ``get_or_create(recipe, ext,
create)`` returns the cached artifact for that recipe, or calls ``create(tmp_path)`` to write it,
then hashes and renames it into place. Writes are atomic (temp file + rename), so concurrent
processes at worst build the same artifact twice.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from budgetnas.core.errors import DataFileError


def default_cache_root() -> Path:
    env = os.environ.get("BUDGETNAS_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "budgetnas"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def recipe_digest(recipe: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(recipe, sort_keys=True, default=str).encode()).hexdigest()


@dataclass(frozen=True)
class Artifact:
    path: Path
    sha256: str
    format: str
    recipe: dict[str, Any]
    cached: bool  # True when it came from the cache, False when just built


class ArtifactCache:
    def __init__(self, root: str | Path | None = None) -> None:
        self.root = Path(root) if root is not None else default_cache_root()
        self.dir = self.root / "artifacts"

    def _recipe_path(self, recipe: dict[str, Any]) -> Path:
        return self.dir / "recipes" / f"{recipe_digest(recipe)}.json"

    def object_path(self, sha: str, ext: str) -> Path:
        return self.dir / "objects" / sha[:2] / f"{sha}.{ext}"

    def lookup(self, recipe: dict[str, Any]) -> Artifact | None:
        rp = self._recipe_path(recipe)
        try:
            rec = json.loads(rp.read_text())
            path = self.object_path(rec["sha256"], rec["format"])
        except (OSError, ValueError, KeyError):
            return None
        return Artifact(path, rec["sha256"], rec["format"], recipe, True) if path.exists() else None

    def get_or_create(self, recipe: dict[str, Any], ext: str, create: Callable[[Path], object]) -> Artifact:
        hit = self.lookup(recipe)
        if hit is not None:
            return hit
        try:
            (self.dir / "recipes").mkdir(parents=True, exist_ok=True)
            tmpdir = Path(tempfile.mkdtemp(prefix=".build-", dir=self.dir))
        except OSError as exc:
            raise DataFileError(f"cannot use artifact cache {self.dir}: {exc.strerror}") from None
        try:
            tmp = tmpdir / f"artifact.{ext}"
            create(tmp)
            sha = sha256_file(tmp)
            dest = self.object_path(sha, ext)
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, dest)
            rec_tmp = tmpdir / "recipe.json"
            rec_tmp.write_text(json.dumps({"sha256": sha, "format": ext, "recipe": recipe}, sort_keys=True,
                                          default=str))
            os.replace(rec_tmp, self._recipe_path(recipe))
        finally:
            for p in tmpdir.glob("*"):
                p.unlink(missing_ok=True)
            tmpdir.rmdir()
        return Artifact(dest, sha, ext, recipe, False)
