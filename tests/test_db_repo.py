"""budgetnas/db/: the migrations build exactly the models' schema; the read functions the trainer uses."""

from __future__ import annotations

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.exc import IntegrityError

from budgetnas.core.errors import ConflictError, NotFoundError
from budgetnas.db import repo
from budgetnas.db.models import Base
from budgetnas.db.session import DB_DIR, Database, current_revision, migrate, table_names
from budgetnas.luts.lut import LUT, LatencyStats, LUTMeta, LUTPredictor
from budgetnas.spaces import get_space
from tests.server_support import *  # noqa: F403


def test_migrations_match_the_models(db_url) -> None:
    db = Database(db_url)
    try:
        migrate(db_url)  # idempotent
        assert current_revision(db.engine) == ScriptDirectory(str(DB_DIR / "migrations")).get_current_head()
        assert {t.name for t in Base.metadata.sorted_tables} <= set(table_names(db.engine))
        with db.engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn, opts={"compare_type": True}), Base.metadata)
        assert diff == []
    finally:
        db.dispose()


def _stored_lut(db: Database) -> tuple[int, LUT]:
    sp = get_space("nb201")
    lut = LUT(LUTMeta(space=sp.describe(), device="rpi", backend="ort-cpu", runtime_version="ort 1.2"),
              {k: LatencyStats.from_samples([1.0 + i / 10, 1.1 + i / 10, 1.3 + i / 10])
               for i, k in enumerate(sp.all_block_keys())})
    with db.session(write=True) as s:
        dev = repo.register_device(s, "rpi", {}, repo.token_hash("t"))
        row = repo.create_lut(s, device=dev, backend="ort-cpu", batch=1, threads=1, runtime_version="ort 1.2",
                              space=sp.describe(), statistic="median", n_keys=len(lut.entries), meta={},
                              status="complete")
        repo.add_entries(s, row.id, lut.to_json_dict()["entries"])
        return row.id, lut


def test_load_lut_is_the_lut_file_format(db_url) -> None:
    db = Database(db_url)
    try:
        lut_id, lut = _stored_lut(db)
        with db.session() as s:
            loaded = LUT.from_json_dict(repo.load_lut(s, lut_id))
            with_samples = LUT.from_json_dict(repo.load_lut(s, lut_id, samples=True))
        assert loaded.entries == lut.entries and loaded.meta.device == "rpi" and loaded.meta.statistic == "median"
        assert with_samples.entries[next(iter(lut.entries))].samples_ms == lut.entries[next(iter(lut.entries))].samples_ms
        sp = get_space("nb201")
        arch = sp.sample_many(1, seed=0)[0]
        assert LUTPredictor(loaded, sp).predict([arch])[0].latency_ms == LUTPredictor(lut, sp).predict([arch])[0].latency_ms
        with db.session() as s, pytest.raises(NotFoundError, match="lut"):
            repo.load_lut(s, 12345)
        with pytest.raises(ConflictError, match=f"id {lut_id}"), db.session(write=True) as s:
            repo.create_lut(s, device=repo.get_device(s, "rpi"), backend="ort-cpu", batch=1, threads=1,
                            runtime_version="ort 1.2", space=sp.describe(), statistic="median", n_keys=1, meta={})
        # one entry per (LUT, key), whatever the code path: the unique constraint is the last guard
        with pytest.raises(IntegrityError), db.session(write=True) as s:
            repo.add_entry(s, lut_id, next(iter(lut.entries)), {"count": 1, "mean_ms": 1.0, "std_ms": 0.0})
    finally:
        db.dispose()


def test_accuracy_records_filters_and_pages(db_url) -> None:
    db = Database(db_url)
    try:
        recs = [{"arch": f"a{i}", "dataset": "cifar10" if i % 2 else "cifar100", "metric": "top1",
                 "value": float(i), "source": "s"} for i in range(10)]
        with db.session(write=True) as s:
            assert repo.upsert_accuracy(s, "nb201", recs) == (10, 0)
            assert repo.upsert_accuracy(s, "nb201", [{**recs[1], "value": 99.0}]) == (0, 1)
        with db.session() as s:
            rows, total = repo.accuracy_records(s, "nb201", "cifar10")
            assert total == 5 and [r["arch"] for r in rows] == ["a1", "a3", "a5", "a7", "a9"] and rows[0]["value"] == 99
            page, total = repo.accuracy_records(s, "nb201", limit=3, offset=8)
            assert total == 10 and [r["arch"] for r in page] == ["a8", "a9"]
            assert set(page[0]) == {"space", "arch", "dataset", "metric", "value", "source"}
            assert repo.accuracy_records(s, "ofa-mbv3") == ([], 0)
    finally:
        db.dispose()
