"""The trainer reads the LUT and accuracy records straight from the LUT database (read-only)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from budgetnas.cli.main import run
from budgetnas.generator.accuracy import EXPLORE_SHARE
from budgetnas.generator.sources import DBAccuracy, lut_from_db
from budgetnas.luts.lut import LatencyStats, LUTPredictor
from budgetnas.spaces import get_space

SP = get_space("nb201")


@pytest.fixture
def db_url(tmp_path: Path) -> tuple[str, int]:
    from budgetnas.db import repo
    from budgetnas.db.session import Database, migrate

    url = f"sqlite:///{tmp_path / 'lut.db'}"
    migrate(url)
    database = Database(url)
    rng = np.random.default_rng(0)
    with database.session(write=True) as s:
        dev = repo.ensure_device(s, "phone")
        keys = SP.all_block_keys()
        lut = repo.create_lut(s, device=dev, backend="tflite", batch=1, threads=1, runtime_version="1",
                              space=SP.describe(), statistic="median", n_keys=len(keys), meta={}, status="complete")
        entries = {k: LatencyStats.from_samples(rng.uniform(0.1, 1.0, 5)).to_dict(samples=False) for k in keys}
        repo.add_entries(s, lut.id, entries)
        lut_id = lut.id
        archs = SP.sample_many(300, seed=1)
        recs = [{"arch": SP.format(a), "dataset": "cifar10", "value": 80.0 + float(np.sum(SP.to_tokens(a)))}
                for a in archs]
        recs += [{"arch": SP.format(a), "dataset": "cifar100", "value": 50.0} for a in archs[:5]]
        repo.upsert_accuracy(s, "nb201", recs)
    database.dispose()
    return url, lut_id


def test_lut_and_accuracy_read_from_the_database(db_url: tuple[str, int]) -> None:
    url, lut_id = db_url
    lut = lut_from_db(url, str(lut_id))
    archs = SP.sample_many(20, seed=4)
    assert len(LUTPredictor(lut, SP).raw(archs)) == 20
    src = DBAccuracy(SP, url, "cifar10")
    known = SP.sample_many(300, seed=1)[:3]
    got = src.lookup(SP.token_matrix(known))
    np.testing.assert_allclose(got, [80.0 + sum(SP.to_tokens(a)) for a in known])
    with pytest.raises(Exception, match="several accuracy records"):
        DBAccuracy(SP, url, None).lookup(SP.token_matrix(known))


def test_train_from_the_database(db_url: tuple[str, int], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url, lut_id = db_url
    out = tmp_path / "gen.ckpt"
    assert run(["train", "--space", "nb201", "--lut", str(lut_id), "--db", url, "--accuracy-db", url,
                "--dataset", "cifar10", "--max-queries", "30", "--iterations", "2", "--budgets", "2",
                "--out", str(out)]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    explored = max(10, round(30 * EXPLORE_SHARE))  # prepare() explores at least 10
    assert first.startswith("accuracy records read ") and f"/30 ({explored} spread over the latency range" in first
    assert explored < int(first.split()[3].split("/")[0]) <= 30
    assert run(["generate", "--checkpoint", str(out.with_suffix(".bundle")), "--budget", "1000", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    lut = lut_from_db(url, str(lut_id))
    assert res["latency_ms"] == pytest.approx(LUTPredictor(lut, SP).raw([SP.parse(res["arch"])])[0])
    assert run(["train", "--lut", "abc", "--db", url, "--accuracy-db", url, "--out", str(out)]) == 2
    assert "must be a LUT id" in capsys.readouterr().err
