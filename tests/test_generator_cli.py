"""``budgetnas train | generate | search`` end to end on a small synthetic nb201 table, and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from budgetnas.cli.main import run
from budgetnas.spaces import get_space

SP = get_space("nb201")
COST = np.array([0.0, 0.2, 1.0, 3.0, 0.4])
GAIN = np.array([-5.0, 1.0, 2.0, 3.0, 0.5])


def write_synthetic(path: Path, n: int = 5**6) -> Path:
    """Every nb201 arch (or the first n) with an additive latency and an accuracy with interactions."""
    idx = np.arange(n)
    tok = np.stack([(idx // 5 ** (5 - i)) % 5 for i in range(6)], 1)
    lat = 1.0 + COST[tok].sum(1)
    acc = 80.0 + GAIN[tok].sum(1) + 0.3 * (tok[:, 0] == tok[:, 5])
    lines = ["arch_str,lat,acc"] + [f"{SP.format(SP.from_tokens(t.tolist()))},{a:.4f},{b:.4f}"
                                    for t, a, b in zip(tok, lat, acc, strict=True)]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("gen")
    csv = write_synthetic(d / "t.csv")
    out = d / "gen.ckpt"
    code = run(["train", "--space", "nb201", "--latency-table", f"{csv}:lat", "--accuracy-table", f"{csv}:acc",
                "--max-queries", "40", "--iterations", "3", "--budgets", "3", "--out", str(out)])
    assert code == 0
    return csv, out


def test_train_writes_checkpoint_and_bundle(trained: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    _, out = trained
    assert out.exists() and out.with_suffix(".bundle").exists()
    for path in (out, out.with_suffix(".bundle")):  # both files answer the same
        assert run(["generate", "--checkpoint", str(path), "--budget", "8", "--json", "--samples", "20",
                    "--seed", "1"]) == 0
        res = json.loads(capsys.readouterr().out)
        assert set(res) == {"arch", "latency_ms", "accuracy", "samples"} and len(res["samples"]) == 20
        tok = np.asarray(SP.to_tokens(SP.parse(res["arch"])))
        assert res["latency_ms"] == pytest.approx(1.0 + COST[tok].sum()) and res["latency_ms"] <= 8


def test_generate_budget_rule(trained: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    _, out = trained
    assert run(["generate", "--checkpoint", str(out), "--budget", "0.5"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: budget 0.5 ms is below the cheapest architecture (1 ms)") and "1..19" in err
    assert run(["generate", "--checkpoint", str(out), "--budget", "-3"]) == 2
    assert "positive number" in capsys.readouterr().err
    assert run(["generate", "--checkpoint", str(out), "--budget", "100", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert "above the dearest architecture (19 ms)" in res["warning"]


def test_search_methods_answer_within_budget(trained: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    csv, _ = trained
    for method in ("random", "evolution", "sgnas", "mnas"):
        code = run(["search", "--method", method, "--latency-table", f"{csv}:lat", "--accuracy-table",
                    f"{csv}:acc", "--max-queries", "40", "--iterations", "3", "--generations", "2",
                    "--budget", "6", "--budget", "12", "--json"])
        assert code == 0, method
        rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        assert [r["budget_ms"] for r in rows] == [6, 12]
        assert all(r["latency_ms"] <= r["budget_ms"] for r in rows), method


def test_train_from_a_lut_file(tmp_path: Path, trained: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    from budgetnas.luts.lut import LUT, LatencyStats, LUTMeta, LUTPredictor

    csv, _ = trained
    entries = {k: LatencyStats(count=1, mean_ms=0.5, std_ms=0.0, median_ms=0.1 + 0.01 * i)
               for i, k in enumerate(SP.all_block_keys())}
    lut = LUT(LUTMeta(space=SP.describe(), device="d", backend="b"), entries)
    lut.save(tmp_path / "lut.json")
    out = tmp_path / "g.ckpt"
    assert run(["train", "--lut", str(tmp_path / "lut.json"), "--accuracy-table", f"{csv}:acc", "--max-queries", "30",
                "--iterations", "2", "--out", str(out)]) == 0
    capsys.readouterr()
    assert run(["generate", "--checkpoint", str(out), "--budget", "1000", "--json"]) == 0
    res = json.loads(capsys.readouterr().out)
    assert res["latency_ms"] == pytest.approx(LUTPredictor(lut, SP).predict([SP.parse(res["arch"])])[0].latency_ms)
    assert "warning" in res


def test_bad_inputs_exit_2(tmp_path: Path, trained: tuple[Path, Path], capsys: pytest.CaptureFixture[str]) -> None:
    csv, ckpt = trained
    from tests.server_support import rewritten_bundle

    data = ckpt.with_suffix(".bundle").read_bytes()
    old, alien = tmp_path / "old.bundle", tmp_path / "alien.bundle"
    old.write_bytes(rewritten_bundle(data, version=1))
    alien.write_bytes(rewritten_bundle(data, space={"space": "nope"}))
    base = ["--accuracy-table", f"{csv}:acc", "--max-queries", "40", "--iterations", "1", "--out", str(tmp_path / "g")]
    dup = tmp_path / "dup.csv"
    lines = csv.read_text().splitlines()
    dup.write_text("\n".join([*lines[:4], lines[2], lines[5].replace(",", ",x", 1)[:0] + lines[5]]) + "\n")
    bad = tmp_path / "bad.csv"
    bad.write_text("\n".join([lines[0], lines[1], lines[2].rsplit(",", 2)[0] + ",slow,1"]) + "\n")
    cases = [
        (["train", "--latency-table", f"{dup}:lat", *base], "rows 4 repeat an architecture"),
        (["train", "--latency-table", f"{bad}:lat", *base], "rows 2 have a non-numeric 'lat'"),
        (["train", "--latency-table", f"{tmp_path}/none.csv:lat", *base], "cannot read table"),
        (["train", "--latency-table", f"{csv}:nope", *base], "no column 'nope'"),
        (["train", *base], "give exactly one latency source"),
        (["train", "--latency-table", f"{csv}:lat", "--lut", "x.json", *base], "give exactly one latency source"),
        (["train", "--lut", "7", "--db", f"sqlite:///{tmp_path}/x.db", *base], "no database at"),
        (["train", "--lut", "7", "--db", f"sqlite:///{csv}", *base], "cannot read LUT 7"),
        (["train", "--space", "nope", "--latency-table", f"{csv}:lat", *base], "unknown search space"),
        (["search", "--method", "nope", "--latency-table", f"{csv}:lat", "--accuracy-table", f"{csv}:acc"],
         "unknown search method 'nope'"),
        (["generate", "--checkpoint", str(csv), "--budget", "3"], "neither a generator bundle nor a checkpoint"),
        (["search", "--method", "random", "--latency-table", f"{csv}:lat", "--accuracy-table", f"{csv}:acc",
          "--max-queries", "20", "--budget", "0.5"], "below the cheapest architecture (1 ms)"),
        (["generate", "--checkpoint", str(tmp_path / "absent.ckpt"), "--budget", "3"], "cannot read checkpoint"),
        (["generate", "--checkpoint", str(ckpt), "--budget", "nan"], "budget must be a positive number of ms"),
        (["generate", "--checkpoint", str(ckpt), "--budget", "inf"], "budget must be a positive number of ms"),
        (["generate", "--checkpoint", str(old), "--budget", "3"], "not a budgetnas-generator v2/v3 bundle"),
        (["generate", "--checkpoint", str(alien), "--budget", "3"], "unknown search space 'nope'"),
        (["search", "--method", "random", "--latency-table", f"{csv}:lat", "--accuracy-table", f"{csv}:acc",
          "--max-queries", "20", "--budget", "nan"], "budget must be a positive number of ms"),
        (["train", "--method", "random", "--latency-table", f"{csv}:lat", *base], "unknown generator method 'random'"),
    ]
    for argv, needle in cases:
        assert run(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("error: ") and needle in err and err.count("\n") == 1, (argv, err)


def test_cli_protocol_defaults_are_the_libraries() -> None:
    from budgetnas.cli import generator as cli_generator
    from budgetnas.generator.accuracy import EXPLORE_SHARE
    from budgetnas.generator.search import SearchOptions

    assert (EXPLORE_SHARE, SearchOptions().rounds) == (cli_generator.EXPLORE_SHARE, cli_generator.ROUNDS)
