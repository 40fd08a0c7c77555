"""Once-for-All's published accuracy predictor as an accuracy source: its README's check values,
query counting, the CLI end to end on the Note10 LUT, and bad files / spaces."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest

from budgetnas.cli.main import run
from budgetnas.core.errors import DataFileError, InvalidArgumentError, UnknownNameError
from budgetnas.generator.accuracy import CountingAccuracy, QueryBudgetExceeded
from budgetnas.generator.ofa_accuracy import N_FEATURES, OFAPredictorAccuracy, ofa_features
from budgetnas.generator.sources import accuracy_source
from budgetnas.spaces import get_space
from tests.conftest import shared_file


@pytest.fixture
def npz() -> Path:
    return shared_file("ofa_acc_predictor", "ofa_acc_predictor.npz")


# the README's check table: (OFA arch dict, top-1 as a fraction)
CHECKS = [
    ({"ks": [3] * 20, "e": [3] * 20, "d": [2] * 5, "r": 160}, 0.753119),
    ({"ks": [3] * 20, "e": [3] * 20, "d": [2] * 5, "r": 224}, 0.777386),
    ({"ks": [7] * 20, "e": [6] * 20, "d": [4] * 5, "r": 224}, 0.835928),
    ({"ks": [3, 5, 7, 3] * 5, "e": [6, 4, 3, 6] * 5, "d": [4, 3, 2, 3, 4], "r": 192}, 0.806176),
]


@pytest.mark.parametrize(("arch", "top1"), CHECKS)
def test_the_readme_check_values(npz: Path, arch: dict, top1: float) -> None:
    sp = get_space("ofa-mbv3", width=1.2, resolution=arch["r"])
    tok = np.asarray([sp.to_tokens(sp.parse(arch))])
    assert OFAPredictorAccuracy(sp, npz).lookup(tok)[0] == pytest.approx(100 * top1, abs=5e-4)


def test_inactive_slots_are_zero_and_every_active_slot_one_hot() -> None:
    sp = get_space("ofa-mbv3", width=1.2, resolution=176)
    arch = sp.parse({"ks": [3, 5, 7, 5] * 5, "e": [6, 4, 3, 4] * 5, "d": [2, 3, 4, 2, 3]})
    f = ofa_features(sp, np.asarray([sp.to_tokens(arch)]), 176)[0]
    assert f.shape == (N_FEATURES,)
    live = sum(arch.depths)
    assert f[:60].sum() == f[60:120].sum() == live
    assert f[120:].tolist() == [0, 0, 0, 0, 1, 0, 0, 0]  # (176 - 112) // 16 = 4
    # the tokens of unused slots (padding) never change the encoding
    tok = np.asarray(sp.to_tokens(arch))
    other = tok.copy()
    other[1 + 2 * 2 + 0] = 2  # unit 1 has depth 2: its layer 3 kernel is padding
    np.testing.assert_array_equal(ofa_features(sp, other[None], 176)[0], f)


def test_answers_count_against_max_queries(npz: Path) -> None:
    sp = get_space("ofa-mbv3", width=1.2, resolution=224)
    counter = CountingAccuracy(sp, OFAPredictorAccuracy(sp, npz), max_queries=3)
    tok = np.asarray([sp.to_tokens(a) for a in sp.sample_many(4, seed=1)])
    first = counter.query(tok[:3])
    assert counter.used == 3 and np.all((first > 50) & (first < 100))
    np.testing.assert_array_equal(counter.query(tok[:2]), first[:2])  # records already read cost nothing
    with pytest.raises(QueryBudgetExceeded):
        counter.query(tok[3:])


def test_search_on_the_note10_lut_end_to_end(npz: Path, ofa_lut_dir: Path, tmp_path: Path,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["lut", "import", str(ofa_lut_dir / "224_lookup_table.yaml"), "--out", str(tmp_path / "lut.json"),
                "--device", "note10", "--backend", "tflite"]) == 0
    capsys.readouterr()
    code = run(["search", "--method", "random", "--space", "ofa-mbv3", "--width", "1.2", "--resolution", "224",
                "--lut", str(tmp_path / "lut.json"), "--accuracy-predictor", f"ofa:{npz}", "--max-queries", "30",
                "--budget", "30", "--budget", "60", "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    rows = [json.loads(line) for line in out.splitlines()]
    sp = get_space("ofa-mbv3", width=1.2, resolution=224)
    truth = OFAPredictorAccuracy(sp, npz)
    for row, budget in zip(rows, (30, 60), strict=True):
        assert row["latency_ms"] <= budget
        tok = np.asarray([sp.to_tokens(sp.parse(row["arch"]))])
        assert 70 < float(truth.lookup(tok)[0]) < 90
    assert "30 accuracy records read" in err
    code = run(["search", "--method", "random", "--space", "ofa-mbv3", "--lut", str(tmp_path / "lut.json"),
                "--accuracy-predictor", f"ofa:{tmp_path / 'absent.npz'}"])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error:") and "absent.npz" in err and "Traceback" not in err


def _write(path: Path, **arrays: np.ndarray) -> Path:
    np.savez(path, **arrays)
    return path


def _ofa_shaped(rng: np.random.Generator) -> dict[str, np.ndarray]:
    dims = [(400, 128), (400, 400), (400, 400), (1, 400)]
    out = {}
    for name, (o, i) in zip(("0", "2", "4", "6"), dims, strict=True):
        out[f"{name}_weight"] = rng.normal(size=(o, i)).astype(np.float32)
        out[f"{name}_bias"] = np.zeros(o, np.float32)
    return out


def test_bad_predictor_files_name_what_is_wrong(tmp_path: Path) -> None:
    sp = get_space("ofa-mbv3", width=1.2, resolution=224)
    rng = np.random.default_rng(0)
    with pytest.raises(DataFileError, match="no accuracy predictor file"):
        OFAPredictorAccuracy(sp, tmp_path / "absent.npz")
    (tmp_path / "text.npz").write_text("not numpy")
    with pytest.raises(DataFileError, match=r"not a numpy \.npz"):
        OFAPredictorAccuracy(sp, tmp_path / "text.npz")
    good = _ofa_shaped(rng)
    whole = _write(tmp_path / "whole.npz", **good).read_bytes()
    np.save(tmp_path / "one.npy", good["0_weight"])
    deflated = tmp_path / "deflated.npz"
    np.savez_compressed(deflated, **good)
    raw = bytearray(deflated.read_bytes())
    raw[200:4000] = bytes(3800)  # inside the first member's compressed data: a zlib error
    for name, content in [("empty.npz", b""), ("truncated.npz", whole[: len(whole) // 2]),
                          ("one.npy", None), ("corrupt.npz", bytes(raw)), ("dir.npz", "dir")]:
        path = tmp_path / name
        if content == "dir":
            path.mkdir()
        elif content is not None:
            path.write_bytes(content)
        with pytest.raises(DataFileError, match=rf"{re.escape(str(path))} is not a numpy \.npz"):
            OFAPredictorAccuracy(sp, path)
    missing = {k: v for k, v in good.items() if k != "4_bias"}
    with pytest.raises(DataFileError, match="missing 4_weight/4_bias"):
        OFAPredictorAccuracy(sp, _write(tmp_path / "m.npz", **missing))
    with pytest.raises(DataFileError, match=r"0_weight has shape \(400, 127\)"):
        OFAPredictorAccuracy(sp, _write(tmp_path / "s.npz", **{**good, "0_weight": good["0_weight"][:, :127]}))
    bad = good["2_weight"].copy()
    bad[0, 0] = np.nan
    with pytest.raises(DataFileError, match="2 holds NaN"):
        OFAPredictorAccuracy(sp, _write(tmp_path / "n.npz", **{**good, "2_weight": bad}))
    assert OFAPredictorAccuracy(sp, _write(tmp_path / "ok.npz", **good)).layers[0][0].shape == (400, 128)


def test_wrong_space_and_width_are_refused(tmp_path: Path) -> None:
    path = _write(tmp_path / "ok.npz", **_ofa_shaped(np.random.default_rng(0)))
    with pytest.raises(InvalidArgumentError, match=r"width 1\.2"):
        OFAPredictorAccuracy(get_space("ofa-mbv3", width=1.0, resolution=224), path)
    with pytest.raises(InvalidArgumentError, match="ofa-mbv3 space"):
        OFAPredictorAccuracy(get_space("nb201"), path)
    sp = get_space("ofa-mbv3", width=1.2, resolution=224)
    with pytest.raises(InvalidArgumentError, match=r"resolutions 112\.\.239"):
        ofa_features(sp, np.zeros((1, len(sp.decisions)), np.int64), 96)


@pytest.mark.parametrize(("spec", "error", "match"), [
    ("ofa", InvalidArgumentError, "must be KIND:PATH"),
    ("ofa:", InvalidArgumentError, "must be KIND:PATH"),
    ("tiny:x.npz", UnknownNameError, "accuracy predictor kind"),
])
def test_bad_predictor_specs(spec: str, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        accuracy_source(get_space("ofa-mbv3", width=1.2, resolution=224), accuracy_predictor=spec)


def test_one_accuracy_source_only() -> None:
    with pytest.raises(InvalidArgumentError, match="exactly one accuracy source"):
        accuracy_source(get_space("nb201"), accuracy_table="a.csv:acc", accuracy_predictor="ofa:x.npz")
    with pytest.raises(InvalidArgumentError, match="got none"):
        accuracy_source(get_space("nb201"))
