"""ofa-mbv3 with resolution as a searched decision (Once-for-All searches {160,...,224}): the space's
tokens, a LUT family folded into one cost model, the bundle, `train`/`generate`, POST /v1/generate,
and bad families."""

from __future__ import annotations

import base64
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from budgetnas.cli.main import run
from budgetnas.core.errors import DataFileError, InvalidArchitectureError, InvalidArgumentError
from budgetnas.generator.accuracy import AccuracySource
from budgetnas.luts.lut import LUT, Calibration, LatencyStats, LUTMeta, LUTPredictor
from budgetnas.luts.token_cost import canonical_tokens, cost_model_from_lut, cost_model_from_lut_family, token_features
from budgetnas.spaces import OFAMobileNetV3, get_space, space_from_description
from tests.conftest import shared_file
from tests.server_support import *  # noqa: F403
from tests.server_support import ADMIN_H

RES = (160, 176, 192, 208, 224)
SP = OFAMobileNetV3(width=1.2, resolutions=RES)


def test_resolution_is_the_last_decision_and_round_trips() -> None:
    fixed = get_space("ofa-mbv3", width=1.2, resolution=224)
    assert len(SP.decisions) == len(fixed.decisions) + 1
    assert SP.decisions[-1].name == "resolution" and SP.decisions[-1].choices == RES
    assert SP.decisions[:-1] == fixed.decisions  # the unit layout is unchanged
    archs = SP.sample_many(200, seed=0)
    assert {a.resolution for a in archs} == set(RES)
    for a in archs:
        text = SP.format(a)
        assert text.startswith(f"w1.2_r{a.resolution}|")
        assert SP.parse(text) == a and SP.from_tokens(SP.to_tokens(a)) == a
        assert SP.parse(SP.to_ofa_dict(a)) == a
        assert SP.to_tokens(a)[-1] == RES.index(a.resolution)
        assert SP.block_keys(a) == fixed.block_keys(a)  # blocks walk the arch's own resolution
    assert space_from_description(SP.describe()).describe() == SP.describe()
    assert SP.describe() == {"space": "ofa-mbv3", "width": 1.2, "resolutions": list(RES), "num_classes": 1000}
    keys = set(SP.all_block_keys())
    assert keys == set().union(*(get_space("ofa-mbv3", width=1.2, resolution=r).all_block_keys() for r in RES))
    tok = SP.token_matrix(archs)
    # padding canonicalisation keeps the resolution; features carry it (token and arch forms agree)
    np.testing.assert_array_equal(canonical_tokens(SP, tok)[:, -1], tok[:, -1])
    feats = token_features(SP, tok)
    np.testing.assert_array_equal(feats, SP.features_many(archs))
    assert feats.shape[1] == fixed.feature_dim + len(RES)
    np.testing.assert_array_equal(feats[:, fixed.feature_dim:].argmax(1), tok[:, -1])
    np.testing.assert_array_equal(SP.token_resolutions(tok), [a.resolution for a in archs])


def test_archs_and_parameters_outside_the_searched_resolutions_are_refused() -> None:
    with pytest.raises(InvalidArchitectureError, match=r"resolution 168 is not one of the searched"):
        SP.parse("w1.2_r168|k3e3,k3e3|k3e3,k3e3|k3e3,k3e3|k3e3,k3e3|k3e3,k3e3")
    with pytest.raises(InvalidArchitectureError, match="token 5 out of range"):
        SP.from_tokens([0] * (len(SP.decisions) - 1) + [5])
    bad_params: list[tuple[object, str]] = [
        ((160, 160), r"\[160\] given more than once"), ((), "at least one"),
        ((160, 150), r"resolutions: resolution 150 is not in 128\.\.224"), ("160", "must be a list"),
        ((160, True), "must be an integer")]
    for bad, match in bad_params:
        with pytest.raises(InvalidArgumentError, match=match):
            get_space("ofa-mbv3", resolutions=bad)
    with pytest.raises(InvalidArgumentError, match="not both"):
        get_space("ofa-mbv3", resolution=224, resolutions=RES)


def _lut(res: int, rng: np.random.Generator, device: str = "phone", width: float = 1.2,
         calibration: Calibration | None = None) -> LUT:
    fixed = get_space("ofa-mbv3", width=width, resolution=res)
    entries = {k: LatencyStats.from_samples(rng.uniform(0.01, 2.0, 3))
               for k in fixed.all_block_keys()}
    return LUT(LUTMeta(space=fixed.describe(), device=device, backend="tflite"), entries, calibration)


def _family(seed: int = 0, **kw: object) -> list[tuple[str, LUT]]:
    rng = np.random.default_rng(seed)
    return [(f"{r}.json", _lut(r, rng, **kw)) for r in RES]  # type: ignore[arg-type]


def test_family_cost_model_equals_each_resolutions_lut_predictor() -> None:
    family = _family()
    cal = Calibration(slope=1.1, intercept=0.3, n_models=5, rel_residual_std=0.01)
    family[2] = (family[2][0], replace(family[2][1], calibration=cal))  # one calibrated LUT: folded in exactly
    model = cost_model_from_lut_family(SP, family)
    archs = SP.sample_many(400, seed=1)
    lat = model(SP.token_matrix(archs))
    for r, (_, lut) in zip(RES, family, strict=True):
        fixed = get_space("ofa-mbv3", width=1.2, resolution=r)
        rows = [i for i, a in enumerate(archs) if a.resolution == r]
        ref = [p.latency_ms for p in LUTPredictor(lut, fixed).predict([archs[i] for i in rows])]
        np.testing.assert_allclose(lat[rows], ref, rtol=1e-12)
        # and the fixed-resolution model of that LUT, bit for bit when uncalibrated
        own = cost_model_from_lut(fixed, lut)(np.asarray([fixed.to_tokens(archs[i]) for i in rows]))
        if lut.calibration is None:
            np.testing.assert_array_equal(lat[rows], own)
    lo, hi = model.bounds()
    cheap = model.cheapest_tokens(len(SP.decisions))
    assert float(model(cheap[None])[0]) == pytest.approx(lo)
    per_res = [cost_model_from_lut(get_space("ofa-mbv3", width=1.2, resolution=r), lut).bounds()
               for r, (_, lut) in zip(RES, family, strict=True)]
    assert lo == pytest.approx(min(b[0] for b in per_res)) and hi == pytest.approx(max(b[1] for b in per_res))
    assert lo <= lat.min() and lat.max() <= hi


def test_bad_families_name_what_is_wrong() -> None:
    family = _family()
    with pytest.raises(DataFileError, match=r"lacks resolution\(s\) \[192\]"):
        cost_model_from_lut_family(SP, [f for f in family if "192" not in f[0]])
    with pytest.raises(DataFileError, match=r"two LUTs for resolution 176: 176\.json and again\.json"):
        cost_model_from_lut_family(SP, [*family, ("again.json", family[1][1])])
    other = _family(device="pixel")
    with pytest.raises(DataFileError, match=r"different device: 160\.json has 'phone', 208\.json 'pixel'"):
        cost_model_from_lut_family(SP, [*family[:3], other[3], family[4]])
    narrow = _family(width=1.0)
    with pytest.raises(DataFileError, match=r"224\.json is for another space variant: width 1\.0 \(the space's: 1\.2\)"):
        cost_model_from_lut_family(SP, [*family[:4], narrow[4]])
    lacking = replace(family[0][1], entries=dict(list(family[0][1].entries.items())[1:]))
    with pytest.raises(DataFileError, match=r"160\.json \(resolution 160\): LUT lacks 1 block key"):
        cost_model_from_lut_family(SP, [("160.json", lacking), *family[1:]])
    with pytest.raises(InvalidArgumentError, match="searches resolution"):
        cost_model_from_lut_family(get_space("ofa-mbv3"), family)
    # a LUT of a resolution not searched is not used
    few = get_space("ofa-mbv3", width=1.2, resolutions=(160, 224))
    assert cost_model_from_lut_family(few, family).bounds()[0] > 0


class ResolutionAccuracy(AccuracySource):
    """Synthetic top-1: more channels and a larger input are better."""

    def lookup(self, tokens: np.ndarray) -> np.ndarray:
        return np.asarray(60.0 + 0.1 * tokens[:, :-1].sum(1) + 2.0 * tokens[:, -1], np.float64)


@pytest.fixture(scope="module")
def family_bundle() -> bytes:
    pytest.importorskip("torch")
    from budgetnas.generator.accuracy import prepare
    from budgetnas.generator.bundle import pack_bundle
    from budgetnas.generator.export import bundle_parts
    from budgetnas.generator.latency import CostModelOracle
    from budgetnas.generator.pnag import TrainConfig, train

    oracle = CostModelOracle(SP, cost_model_from_lut_family(SP, _family()))
    problem = prepare(SP, oracle, ResolutionAccuracy(), max_queries=60, seed=0, epochs=10)
    trained = train(problem, TrainConfig(iterations=3, budgets=3, rows=3, batch=4))
    return pack_bundle(*bundle_parts(problem, trained))


def test_a_bundle_of_a_family_answers_arch_and_resolution_that_fit(family_bundle: bytes) -> None:
    from budgetnas.generator.bundle import GeneratorBundle

    bundle = GeneratorBundle.from_bytes(family_bundle)
    assert bundle.space.describe() == SP.describe()
    family = dict(zip(RES, (lut for _, lut in _family()), strict=True))
    seen = set()
    for budget in np.linspace(bundle.cheapest * 1.05, bundle.dearest, 6):
        out = bundle.generate(float(budget), samples=20, seed=0)
        arch = SP.parse(out["arch"])
        seen.add(arch.resolution)
        fixed = get_space("ofa-mbv3", width=1.2, resolution=arch.resolution)
        truth = LUTPredictor(family[arch.resolution], fixed).predict([arch])[0].latency_ms
        assert out["latency_ms"] == pytest.approx(truth, rel=1e-12) and out["latency_ms"] <= budget
        for s in out["samples"]:
            a = SP.parse(s["arch"])
            ref = LUTPredictor(family[a.resolution], get_space("ofa-mbv3", width=1.2, resolution=a.resolution))
            assert s["latency_ms"] == pytest.approx(ref.predict([a])[0].latency_ms, rel=1e-12)
    assert len(seen) > 1  # the resolution is chosen per budget, not fixed
    at_floor = bundle.generate(bundle.cheapest, seed=0)  # only the cheapest arch fits: its resolution too
    assert at_floor["latency_ms"] == bundle.cheapest
    assert SP.to_tokens(SP.parse(at_floor["arch"]))[-1] == bundle.a["cheapest_tokens"][-1]


def test_generate_route_answers_what_the_family_bundle_answers(client, family_bundle: bytes) -> None:
    from budgetnas.generator.bundle import GeneratorBundle
    from tests.server_support import rewritten_bundle

    ref = GeneratorBundle.from_bytes(family_bundle)
    r = client.post("/v1/checkpoints", json={"name": "ofa-res", "bundle": base64.b64encode(family_bundle).decode()},
                    headers=ADMIN_H)
    assert r.status_code == 201, r.text
    assert r.json()["meta"]["space"]["resolutions"] == list(RES)
    budget = (ref.cheapest + ref.dearest) / 3
    r = client.post("/v1/generate", json={"checkpoint": "ofa-res", "budget": budget, "samples": 4, "seed": 1})
    assert r.status_code == 200, r.text
    assert r.json() == ref.generate(budget, samples=4, seed=1)
    assert SP.parse(r.json()["arch"]).resolution in RES
    bad = rewritten_bundle(family_bundle, space={**SP.describe(), "resolutions": [160, 160]})
    r = client.post("/v1/checkpoints", json={"name": "bad", "bundle": base64.b64encode(bad).decode()},
                    headers=ADMIN_H)
    assert r.status_code == 422 and "resolutions" in r.json()["detail"], r.text
    assert [c["name"] for c in client.get("/v1/checkpoints").json()["checkpoints"]] == ["ofa-res"]


def test_ofa_predictor_reads_each_rows_resolution(tmp_path: Path) -> None:
    from budgetnas.generator.ofa_accuracy import OFAPredictorAccuracy
    from tests.test_generator_ofa_accuracy import _ofa_shaped, _write

    path = _write(tmp_path / "p.npz", **_ofa_shaped(np.random.default_rng(0)))
    archs = SP.sample_many(50, seed=3)
    got = OFAPredictorAccuracy(SP, path).lookup(SP.token_matrix(archs))
    for a, v in zip(archs, got, strict=True):
        fixed = get_space("ofa-mbv3", width=1.2, resolution=a.resolution)
        assert v == pytest.approx(OFAPredictorAccuracy(fixed, path).lookup(np.asarray([fixed.to_tokens(a)]))[0])


@pytest.fixture(scope="module")
def note10_family(tmp_path_factory: pytest.TempPathFactory) -> Path:
    src = shared_file("ofa_note10_lut")
    out = tmp_path_factory.mktemp("note10")
    for r in RES:
        assert run(["lut", "import", str(src / f"{r}_lookup_table.yaml"), "--out", str(out / f"{r}.json"),
                    "--device", "note10", "--backend", "tflite"]) == 0
    return out


def test_train_and_generate_on_the_note10_family(note10_family: Path, tmp_path: Path,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("torch")
    npz = shared_file("ofa_acc_predictor", "ofa_acc_predictor.npz")
    ckpt = tmp_path / "gen.ckpt"
    capsys.readouterr()
    code = run(["train", "--out", str(ckpt), "--space", "ofa-mbv3", "--lut-family", str(note10_family),
                "--accuracy-predictor", f"ofa:{npz}", "--max-queries", "60", "--iterations", "3", "--budgets", "3",
                "--rounds", "0"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "budgets" in out and f"resolution searched over {list(RES)}" in out
    luts = {r: LUT.load(note10_family / f"{r}.json") for r in RES}
    for budget in (15, 25, 40):
        assert run(["generate", "--checkpoint", str(ckpt.with_suffix(".bundle")), "--budget", str(budget),
                    "--json"]) == 0
        ans = json.loads(capsys.readouterr().out)
        arch = SP.parse(ans["arch"])
        fixed = get_space("ofa-mbv3", width=1.2, resolution=arch.resolution)
        assert ans["latency_ms"] == pytest.approx(LUTPredictor(luts[arch.resolution], fixed).raw([arch])[0])
        assert ans["latency_ms"] <= budget
    # the checkpoint answers too, and the same
    assert run(["generate", "--checkpoint", str(ckpt), "--budget", "25", "--json", "--seed", "0"]) == 0
    a = capsys.readouterr().out
    assert run(["generate", "--checkpoint", str(ckpt.with_suffix(".bundle")), "--budget", "25", "--json",
                "--seed", "0"]) == 0
    assert capsys.readouterr().out == a


def _cli_error(args: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    capsys.readouterr()
    code = run(args)
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error:") and len(err.strip().splitlines()) == 1, err
    return err


def test_cli_refuses_bad_families(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for r, (_, lut) in zip(RES, _family(), strict=True):
        lut.save(tmp_path / f"{r}.json")
    (tmp_path / "other").mkdir()
    _lut(176, np.random.default_rng(1)).save(tmp_path / "other" / "176b.json")
    _lut(192, np.random.default_rng(1), device="pixel").save(tmp_path / "other" / "192p.json")
    _lut(208, np.random.default_rng(1), width=1.0).save(tmp_path / "other" / "208w.json")
    base = ["train", "--out", str(tmp_path / "g.ckpt"), "--space", "ofa-mbv3", "--accuracy-table", "x.csv:acc"]
    files = [str(tmp_path / f"{r}.json") for r in RES]
    err = _cli_error([*base, "--lut-family", ",".join(files[:2] + files[3:]), "--resolutions", ",".join(map(str, RES))],
                     capsys)
    assert "lacks resolution(s) [192]" in err
    err = _cli_error([*base, "--lut-family", ",".join([*files, str(tmp_path / "other" / "176b.json")])], capsys)
    assert "two LUTs for resolution 176" in err and "176b.json" in err
    err = _cli_error([*base, "--lut-family", ",".join([*files[:2], str(tmp_path / "other" / "192p.json")])], capsys)
    assert "different device" in err and "192p.json" in err
    err = _cli_error([*base, "--lut-family", ",".join([*files[:3], str(tmp_path / "other" / "208w.json")])], capsys)
    assert "208w.json is for another space variant: width 1.0" in err
    err = _cli_error([*base, "--lut-family", str(tmp_path / "absent")], capsys)
    assert "absent" in err
    err = _cli_error([*base, "--lut-family", ",".join(files), "--resolution", "224"], capsys)
    assert "--resolution" in err
    err = _cli_error([*base, "--lut-family", ",".join(files), "--lut", files[0]], capsys)
    assert "not both" in err
    err = _cli_error([*base, "--lut-family", ",".join(files), "--resolutions", "160,x"], capsys)
    assert "--resolutions" in err
    err = _cli_error([*base, "--space", "nb201", "--lut-family", ",".join(files)], capsys)
    assert "ofa-mbv3" in err
    err = _cli_error([*base, "--lut-family", str(tmp_path / "other" / "..") + "/nothing,"], capsys)
    assert "--lut-family" in err


def test_a_family_read_from_the_database(db_url: str) -> None:
    from budgetnas.db import repo
    from budgetnas.db.session import Database
    from budgetnas.generator.sources import load_lut_family

    family = _family(seed=4)
    database = Database(db_url)
    try:
        with database.session(write=True) as s:
            dev = repo.ensure_device(s, "phone")
            ids = []
            for _, lut in family:
                row = repo.create_lut(s, device=dev, backend="tflite", batch=1, threads=1,
                                      runtime_version=lut.meta.runtime_version, space=lut.meta.space,
                                      statistic="median", n_keys=len(lut.entries), meta={}, status="complete")
                repo.add_entries(s, row.id, {k: v.to_dict(samples=False) for k, v in lut.entries.items()})
                ids.append(row.id)
    finally:
        database.dispose()
    loaded = load_lut_family(",".join(map(str, reversed(ids))), db=db_url)  # any order: each LUT names its resolution
    tok = SP.token_matrix(SP.sample_many(100, seed=5))
    np.testing.assert_allclose(cost_model_from_lut_family(SP, loaded)(tok), cost_model_from_lut_family(SP, family)(tok),
                               rtol=1e-12)
    with pytest.raises(InvalidArgumentError, match="must be a LUT id"):
        load_lut_family("1,x", db=db_url)


def test_relaxed_features_of_one_hot_choices_are_the_features() -> None:
    torch = pytest.importorskip("torch")
    from budgetnas.generator.features import soft_features

    tok = SP.token_matrix(SP.sample_many(20, seed=6))
    probs = [torch.nn.functional.one_hot(torch.as_tensor(tok[:, i]), len(d.choices)).float()
             for i, d in enumerate(SP.decisions)]
    np.testing.assert_array_equal(soft_features(SP, probs).numpy(), token_features(SP, tok))
