"""``budgetnas device adapt`` offline: plan, fit, a table ``train`` reads, and bad input (one error line, exit 2)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from budgetnas.cli.main import run
from budgetnas.generator.tables import read_table
from budgetnas.spaces import get_space

SP = get_space("nb201")


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = run(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def write_csv(path: Path, header: list[str], rows: list[list[object]]) -> Path:
    with path.open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)
    return path


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str], np.ndarray]:
    """400 nb201 archs on 4 synthetic devices (each its own per-op costs) and a 5th, the new one, whose op costs
    mix two of theirs (with 3% noise on its measurements)."""
    rng = np.random.default_rng(0)
    archs = sorted({SP.format(a) for a in SP.sample_many(400, 1)})
    feats = np.asarray([SP.features(SP.parse(a)) for a in archs], np.float64)
    costs = rng.lognormal(0.0, 0.7, size=(feats.shape[1], 4))
    costs = np.column_stack([costs, 0.5 * costs[:, 0] + 0.8 * costs[:, 2]])
    ms = 3.0 + feats @ costs
    ms[:, 4] *= np.exp(rng.normal(0.0, 0.03, len(ms)))
    path = write_csv(tmp_path_factory.mktemp("fleet") / "fleet.csv", ["arch_str", "a_ms", "b_ms", "c_ms", "d_ms"],
                     [[a, *(f"{v:.5f}" for v in row[:4])] for a, row in zip(archs, ms, strict=True)])
    return path, archs, ms[:, 4]


def test_plan_then_fit_then_train_reads_it(fleet: tuple[Path, list[str], np.ndarray], tmp_path: Path,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    path, archs, truth = fleet
    plan = tmp_path / "plan.csv"
    code, out, err = cli(capsys, "device", "adapt", "--device", "new", "--from", "a_ms,b_ms,c_ms,d_ms",
                         "--latency-table", str(path), "--measure", "8", "--out", str(plan))
    assert code == 0, err
    chosen = out.split()
    assert len(chosen) == 8 == len(set(chosen)) and set(chosen) <= set(archs)
    assert [r["arch_str"] for r in csv.DictReader(plan.open())] == chosen
    by_arch = dict(zip(archs, truth, strict=True))
    measured = write_csv(tmp_path / "m.csv", ["arch_str", "new"], [[a, by_arch[a]] for a in chosen])
    pred = tmp_path / "pred.csv"
    code, out, err = cli(capsys, "device", "adapt", "--device", "new", "--from", "a_ms,b_ms,c_ms,d_ms",
                         "--latency-table", str(path), "--measured", f"{measured}:new", "--out", str(pred), "--json")
    assert code == 0, err
    summary = json.loads(out)
    assert summary["transferred"] and summary["n_measured"] == 8 and summary["n_archs"] == len(archs)
    assert summary["measured_within_band"] >= 7  # the band is ~95%: the measured archs reproduce inside it
    table = read_table(f"{pred}:latency_ms", SP)  # what `budgetnas train --latency-table` reads
    assert len(table) == len(archs)
    rows = {r["arch_str"]: r for r in csv.DictReader(pred.open())}
    p = np.asarray([float(rows[a]["latency_ms"]) for a in archs])
    assert all(float(r["low_ms"]) <= float(r["latency_ms"]) <= float(r["high_ms"]) for r in rows.values())
    from budgetnas.luts.transfer import spearman

    assert spearman(p, truth) > 0.9


@pytest.mark.parametrize("extra, message", [
    (["--measure", "1"], "at least 2"),
    (["--from", "a_ms,zz_ms", "--measure", "4"], "no table has a column 'zz_ms'"),
    (["--from", "a_ms,new", "--measure", "4"], "cannot be its own source"),
    (["--method", "magic", "--measured", "M1"], "unknown transfer method"),
    (["--selection", "best", "--measure", "4"], "unknown arch selection"),
    (["--measured", "M1"], "at least 2 measured archs"),
    (["--measured", "M1", "--measure", "5"], "at least 2 measured archs"),
    ([], "--measure N"),
])
def test_bad_input_is_one_error_line(fleet: tuple[Path, list[str], np.ndarray], tmp_path: Path, extra: list[str],
                                     message: str, capsys: pytest.CaptureFixture[str]) -> None:
    path, archs, truth = fleet
    one = write_csv(tmp_path / "one.csv", ["arch_str", "new"], [[archs[0], truth[0]]])
    extra = [f"{one}:new" if e == "M1" else e for e in extra]
    args = ["device", "adapt", "--device", "new", "--latency-table", str(path)]
    if "--from" not in extra:
        args += ["--from", "a_ms,b_ms"]
    code, _, err = cli(capsys, *args, *extra)
    assert code == 2 and message in err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1


def test_sources_without_overlap(fleet: tuple[Path, list[str], np.ndarray], tmp_path: Path,
                                 capsys: pytest.CaptureFixture[str]) -> None:
    _, archs, _ = fleet
    a = write_csv(tmp_path / "a.csv", ["arch_str", "a_ms"], [[x, 1.0 + i] for i, x in enumerate(archs[:100])])
    b = write_csv(tmp_path / "b.csv", ["arch_str", "b_ms"], [[x, 2.0 + i] for i, x in enumerate(archs[100:200])])
    code, _, err = cli(capsys, "device", "adapt", "--device", "new", "--from", "a_ms,b_ms", "--latency-table", str(a),
                       "--latency-table", str(b), "--measure", "4")
    assert code == 2 and "no architecture in common" in err and len(err.strip().splitlines()) == 1


def test_a_source_of_another_space(fleet: tuple[Path, list[str], np.ndarray], tmp_path: Path,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    path, _, _ = fleet
    ofa = get_space("ofa-mbv3")
    other = write_csv(tmp_path / "ofa.csv", ["arch_str", "phone_ms"],
                      [[ofa.format(x), 10.0] for x in ofa.sample_many(5, 0)])
    code, _, err = cli(capsys, "device", "adapt", "--device", "new", "--from", "a_ms,phone_ms", "--latency-table",
                       str(path), "--latency-table", str(other), "--measure", "4")
    assert code == 2 and "invalid arch_str" in err and len(err.strip().splitlines()) == 1


def test_measured_arch_no_source_has(fleet: tuple[Path, list[str], np.ndarray], tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    path, archs, _ = fleet
    outside = next(SP.format(a) for a in SP.sample_many(2000, 9) if SP.format(a) not in set(archs))
    m = write_csv(tmp_path / "m.csv", ["arch_str", "new"], [[archs[0], 5.0], [archs[1], 6.0], [outside, 7.0]])
    code, _, err = cli(capsys, "device", "adapt", "--device", "new", "--from", "a_ms,b_ms", "--latency-table",
                       str(path), "--measured", f"{m}:new")
    assert code == 2 and "none of the sources has" in err
