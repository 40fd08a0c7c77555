"""The numpy bundle reproduces the torch generator, and the server module never imports torch."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from budgetnas.core.errors import DataFileError, InvalidArgumentError
from budgetnas.generator.accuracy import prepare
from budgetnas.generator.bundle import GeneratorBundle, pack_bundle
from budgetnas.generator.export import bundle_parts
from budgetnas.generator.latency import CostModelOracle
from budgetnas.generator.pnag import TrainConfig, train
from budgetnas.generator.search import METHODS, SearchOptions, run_method
from budgetnas.luts.token_cost import CostTerm, TokenCostModel
from budgetnas.spaces import get_space
from tests.test_generator_accuracy import Synthetic

SP = get_space("nb201")
COST = np.array([0.0, 0.2, 1.0, 3.0, 0.4])


@pytest.fixture(scope="module")
def setup() -> tuple:
    oracle = CostModelOracle(SP, TokenCostModel(1.0, [CostTerm((e,), COST.copy()) for e in range(6)]))
    problem = prepare(SP, oracle, Synthetic(), max_queries=40, seed=0, epochs=30)
    trained = train(problem, TrainConfig(iterations=4, budgets=4, rows=4, batch=4))
    bundle = GeneratorBundle.from_bytes(pack_bundle(*bundle_parts(problem, trained)))
    return problem, trained, bundle


def test_numpy_logits_equal_torch_logits(setup: tuple) -> None:
    _, trained, bundle = setup
    gen = trained.generator
    budgets = np.linspace(0.5, 25, 40)  # inside, between and outside the anchors
    with torch.no_grad():
        tok, _, _ = gen.sample(torch.as_tensor(budgets, dtype=torch.float32), torch.Generator().manual_seed(0))
        ref = gen.logits(torch.as_tensor(budgets, dtype=torch.float32), tok)
    got = bundle.logits(budgets, tok.numpy())
    assert len(got) == len(ref) == 6
    for a, b in zip(got, ref, strict=True):
        np.testing.assert_allclose(a, b.numpy(), rtol=1e-4, atol=1e-5)


def test_bundle_answers_and_budget_rule(setup: tuple) -> None:
    problem, _, bundle = setup
    assert bundle.meta["accuracy"]["queries"] == problem.accuracy.used <= 40
    assert bundle.cheapest == pytest.approx(1.0) and bundle.dearest == pytest.approx(19.0)
    out = bundle.generate(7.0, samples=50, seed=3)
    tok = np.asarray(SP.to_tokens(SP.parse(out["arch"])))
    assert out["latency_ms"] == pytest.approx(1.0 + COST[tok].sum())
    assert out["latency_ms"] <= 7.0
    assert out == bundle.generate(7.0, samples=50, seed=3)  # seeded: reproducible
    assert len(out["samples"]) == 50 and all(s["latency_ms"] >= 1.0 for s in out["samples"])
    np.testing.assert_allclose(bundle.latency(problem.accuracy.records()[0]),
                               problem.latency(problem.accuracy.records()[0]))
    with pytest.raises(InvalidArgumentError, match=r"valid budgets are 1\.\.19 ms"):
        bundle.generate(0.9)
    with pytest.raises(InvalidArgumentError, match="positive number"):
        bundle.generate(float("nan"))
    assert "every architecture fits" in bundle.generate(50.0)["warning"]
    with pytest.raises(DataFileError, match="not a generator bundle"):
        GeneratorBundle.from_bytes(b"not a zip")


def test_generation_module_does_not_import_torch() -> None:
    code = "import sys, budgetnas.generator.bundle; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


@pytest.mark.parametrize("method", sorted(set(METHODS) - {"random", "evolution", "sgnas", "mnas"}))
def test_every_registered_method_answers_within_budget(setup: tuple, method: str) -> None:
    problem, _, _ = setup
    opts = SearchOptions(train=TrainConfig(iterations=2, budgets=3, rows=3, batch=2), evo_generations=2)
    res = run_method(method, problem, [4.0, 10.0], opts)
    assert [a.latency_ms <= b for a, b in zip(res.answers, [4.0, 10.0], strict=True)] == [True, True]


class OFASynthetic(Synthetic):
    """ofa-mbv3: accuracy grows with the sum of kernel and expand tokens of the active layers."""

    def lookup(self, tokens: np.ndarray) -> np.ndarray:
        self.looked_up += len(tokens)
        return 70.0 + 0.1 * tokens.sum(1)


def test_ofa_mbv3_on_the_note10_lut(ofa_lut_dir) -> None:
    from budgetnas.luts.lut import LUT, LUTMeta, LUTPredictor
    from budgetnas.luts.token_cost import cost_model_from_lut

    sp = get_space("ofa-mbv3", width=1.2, resolution=224)
    lut = LUT.from_ofa_yaml((ofa_lut_dir / "224_lookup_table.yaml").read_text(),
                            LUTMeta(space=sp.describe(), device="note10", backend="tflite"))
    oracle = CostModelOracle(sp, cost_model_from_lut(sp, lut))
    problem = prepare(sp, oracle, OFASynthetic(), max_queries=30, seed=0, epochs=10)
    trained = train(problem, TrainConfig(iterations=2, budgets=3, rows=3, batch=2))
    bundle = GeneratorBundle.from_bytes(pack_bundle(*bundle_parts(problem, trained)))
    lo, hi = bundle.cheapest, bundle.dearest
    budgets = np.linspace(lo, hi, 8)
    with torch.no_grad():
        tok, _, _ = trained.generator.sample(torch.as_tensor(budgets, dtype=torch.float32))
        ref = trained.generator.logits(torch.as_tensor(budgets, dtype=torch.float32), tok)
    for a, b in zip(bundle.logits(budgets, tok.numpy()), ref, strict=True):
        np.testing.assert_allclose(a, b.numpy(), rtol=1e-4, atol=1e-5)
    out = bundle.generate(float(budgets[4]), seed=0)
    pred = LUTPredictor(lut, sp).predict([sp.parse(out["arch"])])[0]
    assert out["latency_ms"] == pytest.approx(pred.latency_ms) and out["latency_ms"] <= budgets[4]
    # the cheapest arch reaches the bound exactly
    assert lo == pytest.approx(oracle.bounds()[0])


def test_an_answer_never_ranks_below_a_fitting_record(setup: tuple) -> None:
    """Whatever the generator samples (even nothing that fits), a known record that fits is a
    candidate: the answer's accuracy is at least the best fitting record's."""
    problem, _, bundle = setup
    tok, val = problem.accuracy.records()
    lat = problem.latency(tok)
    for b in np.linspace(bundle.cheapest, bundle.dearest, 12):
        out = bundle.generate(float(b), seed=0)
        fits = lat <= b
        if fits.any():
            assert out["accuracy"] >= val[fits].max() - 1e-9
    # a generator that samples nothing useful: its heads all point at the dearest op
    broken = GeneratorBundle(bundle.meta, {**bundle.a, **{f"gen_head_b{t}": np.array([0, 0, 0, 50, 0], np.float32)
                                                          for t in range(6)}})
    b = float(lat[np.argsort(lat)[len(lat) // 4]])
    out = broken.generate(b, seed=0)
    assert out["latency_ms"] <= b and out["accuracy"] >= val[lat <= b].max() - 1e-9


def test_the_pick_is_the_best_scored_fitting_arch_of_all_its_parts(setup: tuple) -> None:
    """The records are read as an array, not through the per-arch scorer: the answer is still the
    best-scored fitting arch among the samples, the archive candidates and the records, as one list."""
    _, _, bundle = setup
    rng = np.random.default_rng(0)
    for b in np.linspace(bundle.cheapest, bundle.dearest, 15):
        cand = bundle.sample(float(b), 64, rng)
        lat = bundle.latency(cand)
        for use_records in (True, False):
            parts = [cand, bundle._cand_tok, *([bundle._known_tok] if use_records else [])]
            every = np.concatenate(parts)
            every_lat = bundle.latency(every)
            acc = np.where(every_lat <= b, bundle.accuracy(every), -np.inf)
            got = bundle._pick(cand, lat, float(b), use_records)
            if not np.isfinite(acc).any():
                assert got is None
                continue
            # float32 predictions move by ~1e-6 with the batch they are computed in
            assert got is not None and got[2] == pytest.approx(acc.max(), abs=1e-5) and got[1] <= b


def test_bundle_of_another_version_is_refused(setup: tuple) -> None:
    problem, trained, _ = setup
    meta, arrays = bundle_parts(problem, trained)
    data = pack_bundle(meta, arrays)
    assert GeneratorBundle.from_bytes(data).to_bytes() == data
    with pytest.raises(DataFileError, match=r"not a budgetnas-generator v2/v3 bundle \(format 'budgetnas-generator', "
                                            r"version 1\)"):
        import io
        import json

        buf = io.BytesIO()
        m = {"format": "budgetnas-generator", "version": 1, **meta}
        np.savez_compressed(buf, meta=np.frombuffer(json.dumps(m).encode(), np.uint8), **arrays)  # type: ignore[arg-type]
        GeneratorBundle.from_bytes(buf.getvalue())
    arrays.pop("cand_tokens")
    with pytest.raises(DataFileError, match="lacks 'cand_tokens'"):
        GeneratorBundle.from_bytes(pack_bundle(meta, arrays))


def test_bundle_scores_as_the_problem_does(setup: tuple) -> None:
    """The bundle's ensemble (mean less the members' spread, less the bias) is the problem's score."""
    problem, _, bundle = setup
    assert bundle.meta["accuracy"]["members"] == len(problem.predictor.members) > 1
    tok = np.unique(np.random.default_rng(5).integers(0, 5, size=(300, 6)), axis=0)
    np.testing.assert_allclose(bundle.accuracy(tok), problem.score(tok), rtol=1e-4, atol=1e-3)
    from budgetnas.luts.token_cost import token_features

    members = np.stack([m.predict(token_features(SP, tok)) for m in problem.predictor.members])
    assert members.std(0).max() > 0.01  # the members disagree: the penalty is not a no-op


def test_version_2_bundle_with_one_mlp_is_still_read(setup: tuple) -> None:
    problem, trained, _ = setup
    meta, arrays = bundle_parts(problem, trained)
    first = problem.predictor.members[0]
    for i, (w, b) in enumerate(first.export()):
        arrays[f"acc_w{i}"], arrays[f"acc_b{i}"] = w.astype(np.float32), b.astype(np.float32)
    acc = {k: v for k, v in meta["accuracy"].items() if k not in ("members", "means", "stds", "penalty")}
    meta = {**meta, "accuracy": {**acc, "mean": first.mean, "std": first.std}}
    import io
    import json

    buf = io.BytesIO()
    m = {"format": "budgetnas-generator", "version": 2, **meta}
    np.savez_compressed(buf, meta=np.frombuffer(json.dumps(m).encode(), np.uint8), **arrays)  # type: ignore[arg-type]
    old = GeneratorBundle.from_bytes(buf.getvalue())
    tok = np.random.default_rng(6).integers(0, 5, size=(200, 6))
    from budgetnas.luts.token_cost import canonical_tokens, token_features

    tok = canonical_tokens(SP, tok)
    fresh = np.asarray([problem.known.get(r.tobytes()) is None for r in tok])
    want = first.predict(token_features(SP, tok[fresh])) - problem.bias
    np.testing.assert_allclose(old.accuracy(tok[fresh]), want, rtol=1e-4, atol=1e-3)


def test_malformed_ensemble_bundle_is_one_error(setup: tuple) -> None:
    problem, trained, _ = setup
    meta, arrays = bundle_parts(problem, trained)
    for bad in ({"means": "abc"}, {"means": [1.0]}, {"penalty": None}):
        m = {**meta, "accuracy": {**meta["accuracy"], **bad}}
        with pytest.raises(DataFileError, match="generator bundle is malformed"):
            GeneratorBundle.from_bytes(pack_bundle(m, arrays)).accuracy(np.zeros((3, 6), np.int64) + 1)


def test_the_sampler_calibration_makes_samples_fit_and_leaves_the_policy_alone(setup: tuple) -> None:
    _, _, bundle = setup
    cond = GeneratorBundle.from_bytes(bundle.conditioned(target=0.99, grid=8, n=400, seed=0).to_bytes())
    b, c = cond.a["cond_budget"], cond.a["cond_value"]
    assert np.all(c <= b + 1e-12) and np.all(np.diff(c) >= -1e-12)  # never above the budget, non-decreasing
    lo = float(bundle.meta["embedding_range"][0])
    budgets = np.linspace(0.5, 25, 12)
    tok = bundle.sample(9.0, 12, np.random.default_rng(0))
    for x, y in zip(bundle.logits(budgets, tok), cond.logits(budgets, tok), strict=True):
        np.testing.assert_array_equal(x, y)  # the policy itself is unchanged
    for bud, val in zip(b, c, strict=True):
        share = float(np.mean(cond.latency(cond.sample(float(bud), 2000, np.random.default_rng(7))) <= bud))
        plain = float(np.mean(bundle.latency(bundle.sample(float(bud), 2000, np.random.default_rng(7))) <= bud))
        # the target where some conditioning reaches it (sampling error allowed), else the lowest conditioning
        assert share >= 0.97 or val == pytest.approx(min(lo, bud), rel=0.02), (bud, val, share)
        assert share >= plain - 0.03
    assert cond.meta["conditioning"]["target"] == 0.99 and cond.condition(float(b[-1]) + 5.0) == float(c[-1])
    assert "cond_budget" not in bundle.a and bundle.condition(3.0) == 3.0  # a bundle without: unconditioned


@pytest.mark.parametrize("bad", [
    {"cond_budget": np.array([1.0, 2.0])},  # one without the other
    {"cond_budget": np.array([1.0, 2.0]), "cond_value": np.array([1.0])},
    {"cond_budget": np.array([2.0, 1.0]), "cond_value": np.array([1.0, 1.0])},  # not sorted
    {"cond_budget": np.array([1.0, np.nan]), "cond_value": np.array([1.0, 1.0])},
    {"cond_budget": np.zeros((2, 2)), "cond_value": np.zeros((2, 2))},
])
def test_a_malformed_sampler_calibration_is_refused_on_load(setup: tuple, bad: dict) -> None:
    _, _, bundle = setup
    arrays = {k: v for k, v in bundle.a.items() if not k.startswith("cond_")}
    meta = {k: v for k, v in bundle.meta.items() if k not in ("format", "version")}
    with pytest.raises(DataFileError, match=r"malformed.*cond_"):
        GeneratorBundle.from_bytes(pack_bundle(meta, {**arrays, **bad}))
