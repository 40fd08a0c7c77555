"""Shared fixtures: the reference data beside the repository, skipped cleanly when absent."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def shared_file(*parts: str) -> Path:
    """A file under ../shared/data, or skip the test when the reference data is not there."""
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"reference data not available: {path}")
    return path


@pytest.fixture
def nb201_csv() -> Path:
    return shared_file("nb201", "nb201_bench.csv")


@pytest.fixture
def ofa_lut_dir() -> Path:
    return shared_file("ofa_note10_lut")
