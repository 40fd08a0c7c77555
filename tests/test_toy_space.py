"""A new search space is one module: a toy space defined here, registered with ``register_space``,
runs through the LUT predictor, the vectorised cost model, the generator (training, bundle) and the
server without any module outside ``budgetnas/spaces`` knowing it; and no module outside ``spaces``
reads ofa-mbv3's or nb201's internals (only OFA's own supernet and block builder may)."""

from __future__ import annotations

import ast
import base64
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from budgetnas.core.errors import InvalidArchitectureError, InvalidArgumentError
from budgetnas.generator.accuracy import AccuracySource
from budgetnas.lut_server.predictor import Prepared
from budgetnas.luts.lut import LUT, Calibration, LatencyStats, LUTMeta, LUTPredictor
from budgetnas.luts.token_cost import canonical_tokens, cost_model_from_lut, token_features
from budgetnas.spaces import SPACES, get_space, register_space, space_from_description
from budgetnas.spaces.base import Block, Cell, Decision, SearchSpace, int_param
from budgetnas.spaces.blockkey import BlockKey
from budgetnas.spaces.layout import CostTerm, Gate, KeyCost
from tests.server_support import *  # noqa: F403
from tests.server_support import ADMIN_H

TOY = "toy-chain"
OPS = ("skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")  # ops the profiler can build
ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class ToyArch:
    ops: tuple[str, ...]  # two ops, or three: the third is optional


class ToyChain(SearchSpace[ToyArch]):
    """stem, op1 at C channels, a reduction to 2C, op2, an optional op3 (the ``depth`` token
    switches it on), head. Tokens: op1, op2, depth (2 or 3), op3 (gated by depth)."""

    name = TOY

    def __init__(self, channels: int = 4) -> None:
        self.channels = int_param("channels", channels)
        self._decisions = (Decision("op1", OPS), Decision("op2", OPS), Decision("depth", (2, 3), in_features=False),
                           Decision("op3", OPS, Gate(2, 1)))

    def describe(self) -> dict[str, Any]:
        return {"space": self.name, "channels": self.channels}

    @property
    def decisions(self) -> tuple[Decision, ...]:
        return self._decisions

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (3, 8, 8)

    def to_tokens(self, arch: ToyArch) -> list[int]:
        third = OPS.index(arch.ops[2]) if len(arch.ops) == 3 else 0
        return [OPS.index(arch.ops[0]), OPS.index(arch.ops[1]), len(arch.ops) - 2, third]

    def from_tokens(self, tokens: Sequence[int]) -> ToyArch:
        self.check_tokens(tokens)
        t = [int(x) for x in tokens]
        return ToyArch((OPS[t[0]], OPS[t[1]], *((OPS[t[3]],) if t[2] else ())))

    def format(self, arch: ToyArch) -> str:
        return "+".join(arch.ops)

    def parse(self, text: str | dict[str, Any]) -> ToyArch:
        ops = tuple(text.strip().split("+")) if isinstance(text, str) else ()
        if len(ops) not in (2, 3) or any(o not in OPS for o in ops):
            raise InvalidArchitectureError(f"{self.name}: {text!r} must be 2 or 3 '+'-joined ops of {list(OPS)}")
        return ToyArch(ops)

    def blocks(self, arch: ToyArch) -> list[Block]:
        c = self.channels
        walk = [("stem", (8, 8, 3), (8, 8, c)), (arch.ops[0], (8, 8, c), (8, 8, c)),
                ("resblock", (8, 8, c), (4, 4, 2 * c)), *((op, (4, 4, 2 * c), (4, 4, 2 * c)) for op in arch.ops[1:]),
                ("head", (4, 4, 2 * c), (10,))]
        return [Block(BlockKey(op, i, o), 0, 0) for op, i, o in walk]

    def all_block_keys(self) -> list[str]:
        return sorted({k for op in OPS for k in self.block_keys(ToyArch((op, op, op)))})

    def cost_terms(self, cost: KeyCost) -> tuple[float, list[CostTerm]]:
        """The block key each (slot, choice) token costs: one table per op slot, op3's gated."""
        walks = [self.blocks(ToyArch((op, op, op))) for op in OPS]
        base = sum(cost(walks[0][i].key_str) for i in (0, 2, 5))  # stem, resblock, head
        gate = self.decisions[3].gate
        assert gate is not None
        table = [np.asarray([cost(w[slot].key_str) for w in walks]) for slot in (1, 3, 4)]
        return base, [CostTerm((0,), table[0]), CostTerm((1,), table[1]), CostTerm((3,), table[2], gate.pos, gate.min)]


class ToyAccuracy(AccuracySource):
    """Accuracy = 70 + a gain per token (the gated op3 counts only where it exists)."""

    GAIN = np.asarray([[0.0, 1.0, 3.0, 0.5], [0.0, 2.0, 4.0, 0.5], [0.0, 1.0, 0.0, 0.0], [0.0, 1.0, 2.0, 0.5]])

    def lookup(self, tokens: np.ndarray) -> np.ndarray:
        tok = np.asarray(tokens, np.int64)
        return 70.0 + self.GAIN[np.arange(4), tok].sum(1)


@pytest.fixture(scope="module")
def toy() -> Iterator[ToyChain]:
    register_space(TOY, ToyChain)
    try:
        sp = get_space(TOY, channels=4)
        assert isinstance(sp, ToyChain)
        yield sp
    finally:
        del SPACES[TOY]


def _lut(sp: SearchSpace[Any], calibration: Calibration | None = None, seed: int = 0) -> LUT:
    rng = np.random.default_rng(seed)
    entries = {k: LatencyStats(count=3, mean_ms=float(rng.uniform(0.1, 2)), std_ms=0.01,
                               median_ms=float(rng.uniform(0.1, 2))) for k in sp.all_block_keys()}
    return LUT(LUTMeta(space=sp.describe(), device="toy-device", backend="b"), entries, calibration)


def _every_token_row(sp: SearchSpace[Any]) -> np.ndarray:
    sizes = [len(d.choices) for d in sp.decisions]
    return np.indices(sizes).reshape(len(sizes), -1).T.astype(np.int64)


# ---- registration ---------------------------------------------------------------------------------
def test_registration_and_its_errors(toy: ToyChain) -> None:
    assert isinstance(space_from_description(toy.describe()), ToyChain)
    assert space_from_description({"space": TOY, "channels": 6}).describe()["channels"] == 6
    with pytest.raises(InvalidArgumentError, match="already registered"):
        register_space(TOY, ToyChain)
    with pytest.raises(InvalidArgumentError, match="named 'toy-chain'"):
        register_space("another-toy", ToyChain)
    for bad in ("", " toy", 3):
        with pytest.raises(InvalidArgumentError, match="non-empty string"):
            register_space(bad, ToyChain)  # type: ignore[arg-type]
    assert "another-toy" not in SPACES


# ---- the token layout: gates, canonical rows, features -----------------------------------------------
def test_gated_tokens_canonical_rows_and_features(toy: ToyChain) -> None:
    tok = _every_token_row(toy)
    canon = canonical_tokens(toy, tok)
    shallow = tok[:, 2] == 0
    assert (canon[shallow, 3] == 0).all() and (canon[~shallow] == tok[~shallow]).all()
    archs = [toy.from_tokens(t.tolist()) for t in tok]
    assert [toy.from_tokens(t.tolist()) for t in canon] == archs
    assert len(np.unique(canon, axis=0)) == len(set(archs)) == 4 * 4 * (1 + 4)
    feats = token_features(toy, tok)
    assert toy.feature_dim == feats.shape[1] == 3 * len(OPS)  # depth is not a feature: op3's slot says it
    np.testing.assert_array_equal(feats, toy.features_many(archs))
    np.testing.assert_array_equal(feats[shallow, 8:], 0.0)
    np.testing.assert_array_equal(feats.sum(1), np.where(shallow, 2.0, 3.0))
    np.testing.assert_array_equal(toy.token_resolutions(tok), 8)


def test_soft_features_on_one_hots_are_the_features(toy: ToyChain) -> None:
    torch = pytest.importorskip("torch")
    from budgetnas.generator.features import soft_features

    tok = _every_token_row(toy)
    probs = [torch.nn.functional.one_hot(torch.as_tensor(tok[:, i]), len(d.choices)).double()
             for i, d in enumerate(toy.decisions)]
    np.testing.assert_array_equal(soft_features(toy, probs).numpy(), token_features(toy, tok))
    half = [torch.full((1, len(d.choices)), 1.0 / len(d.choices), dtype=torch.float64) for d in toy.decisions]
    soft = soft_features(toy, half).numpy()[0]
    np.testing.assert_allclose(soft[8:], 0.5 / len(OPS))  # op3 exists with the depth token's probability 1/2


def test_gates_chain(toy: ToyChain) -> None:
    """A decision gated by a gated decision is used only where both gates are on."""
    class Chained(ToyChain):
        def __init__(self) -> None:
            super().__init__()
            self._decisions = (*self._decisions[:2], Decision("depth", (2, 3), Gate(1, 1), in_features=False),
                               self._decisions[3])

    sp = Chained()
    tok = _every_token_row(sp)
    used = (tok[:, 1] >= 1) & (tok[:, 2] >= 1)
    canon = sp.canonical_tokens(tok)
    assert (canon[~used, 3] == 0).all() and (canon[used, 3] == tok[used, 3]).all()
    assert (canon[:, 2] == np.where(tok[:, 1] >= 1, tok[:, 2], 0)).all()
    np.testing.assert_array_equal(sp.token_features(tok)[:, 8:].sum(1), used)
    torch = pytest.importorskip("torch")
    from budgetnas.generator.features import soft_features

    half = [torch.full((1, len(d.choices)), 1.0 / len(d.choices), dtype=torch.float64) for d in sp.decisions]
    np.testing.assert_allclose(soft_features(sp, half).numpy()[0, 8:], 0.75 * 0.5 / len(OPS))


def test_a_gate_must_point_back_at_a_token_that_can_switch_it_off(toy: ToyChain) -> None:
    class Forward(ToyChain):
        def __init__(self) -> None:
            super().__init__()
            self._decisions = (Decision("op1", OPS, Gate(2, 1)), *self._decisions[1:])

    class Never(ToyChain):
        def __init__(self) -> None:
            super().__init__()
            self._decisions = (*self._decisions[:3], Decision("op3", OPS, Gate(2, 0)))

    for bad in (Forward(), Never()):
        with pytest.raises(InvalidArgumentError, match="op"):
            bad.canonical_tokens(np.zeros((1, 4), np.int64))


def test_what_the_interface_refuses(toy: ToyChain) -> None:
    with pytest.raises(InvalidArgumentError, match="too many for one cost table"):
        SearchSpace.cost_terms(get_space("ofa-mbv3"), lambda key: 1.0)  # the default table is for small spaces
    with pytest.raises(InvalidArgumentError, match="does not search its resolution"):
        toy.at_resolution(8)
    assert toy.resolutions is None and toy.unit_grammar() is None


# ---- one latency, three ways: LUTPredictor, the cost tables, the numpy bundle ---------------------
@pytest.mark.parametrize("calibrated", [False, True])
def test_cost_tables_are_the_lut_predictor(toy: ToyChain, calibrated: bool) -> None:
    cal = Calibration(1.1, 0.3, 5, 0.01, {"input:8x8x4": 0.9}) if calibrated else None
    lut = _lut(toy, cal)
    tok = _every_token_row(toy)
    archs = [toy.from_tokens(t.tolist()) for t in tok]
    model = cost_model_from_lut(toy, lut)
    want = np.asarray([p.latency_ms for p in LUTPredictor(lut, toy).predict(archs)])
    np.testing.assert_allclose(model(tok), want, rtol=1e-12)
    # the space's per-slot tables and the interface's default (one table over every token row) agree
    costs = {k: s.value(lut.meta.statistic) for k, s in lut.entries.items()}
    base, terms = SearchSpace.cost_terms(toy, costs.__getitem__)
    assert base == 0.0 and len(terms) == 1 and terms[0].table.shape == (4, 4, 2, 4)
    dense = cost_model_from_lut(toy, lut, calibrated=False)
    np.testing.assert_allclose(terms[0].table[tuple(tok.T)], dense.raw(tok), rtol=1e-12)
    lo, hi = model.bounds()
    assert lo == pytest.approx(want.min()) and hi == pytest.approx(want.max())


def test_generator_trains_and_its_bundle_answers_the_same_latency(toy: ToyChain) -> None:
    pytest.importorskip("torch")
    from budgetnas.generator.accuracy import prepare
    from budgetnas.generator.bundle import GeneratorBundle, pack_bundle
    from budgetnas.generator.export import bundle_parts
    from budgetnas.generator.latency import CostModelOracle
    from budgetnas.generator.pnag import TrainConfig, train

    lut = _lut(toy, seed=1)
    oracle = CostModelOracle(toy, cost_model_from_lut(toy, lut))
    problem = prepare(toy, oracle, ToyAccuracy(), max_queries=20, seed=0, epochs=5)
    trained = train(problem, TrainConfig(iterations=2, budgets=4, rows=4, batch=4))
    bundle = GeneratorBundle.from_bytes(pack_bundle(*bundle_parts(problem, trained)))
    assert isinstance(bundle.space, ToyChain)
    tok = _every_token_row(toy)
    assert bundle.latency(tok).tolist() == oracle(tok).tolist()  # the same tables, exactly
    archs = [toy.from_tokens(t.tolist()) for t in tok]
    np.testing.assert_allclose(bundle.latency(tok), LUTPredictor(lut, toy).raw(archs), rtol=1e-12)
    lo, hi = bundle.meta["budget_range"]
    answer = bundle.generate((lo + hi) / 2, samples=3, seed=0)
    arch = toy.parse(answer["arch"])
    assert answer["latency_ms"] <= (lo + hi) / 2
    assert answer["latency_ms"] == pytest.approx(LUTPredictor(lut, toy).raw([arch])[0], rel=1e-12)


# ---- the server: a toy LUT predicts, a toy generator answers ------------------------------------------
def test_the_server_predicts_for_the_toy(toy: ToyChain, client) -> None:
    lut = _lut(toy, seed=2)
    r = client.post("/v1/luts/import", json={"format": "json", "content": json.dumps(lut.to_json_dict())},
                    headers=ADMIN_H)
    assert r.status_code == 201, r.text
    lut_id = int(r.json()["id"])
    archs = ["nor_conv_3x3+skip_connect", "avg_pool_3x3+nor_conv_1x1+nor_conv_3x3", " skip_connect+skip_connect"]
    r = client.post("/v1/predict", json={"lut": lut_id, "archs": archs})
    assert r.status_code == 200, r.text
    got = r.json()["predictions"]
    want = LUTPredictor(lut, toy).predict([toy.parse(a) for a in archs])
    assert [(p["arch"], p["raw_ms"]) for p in got] == [(w.arch, w.raw_ms) for w in want]
    assert got[2]["arch"] == "skip_connect+skip_connect"  # answered under its canonical string
    assert Prepared.build(lut, 0).fast is None  # no unit grammar: every arch goes through the space's parser
    r = client.post("/v1/predict", json={"lut": lut_id, "archs": ["skip_connect"]})
    assert r.status_code == 422 and "2 or 3" in r.text


def test_the_server_generates_for_the_toy(toy: ToyChain, client) -> None:
    pytest.importorskip("torch")
    from budgetnas.generator.accuracy import prepare
    from budgetnas.generator.bundle import GeneratorBundle, pack_bundle
    from budgetnas.generator.export import bundle_parts
    from budgetnas.generator.latency import CostModelOracle
    from budgetnas.generator.pnag import TrainConfig, train

    oracle = CostModelOracle(toy, cost_model_from_lut(toy, _lut(toy, seed=3)))
    problem = prepare(toy, oracle, ToyAccuracy(), max_queries=20, seed=1, epochs=5)
    data = pack_bundle(*bundle_parts(problem, train(problem, TrainConfig(iterations=2, budgets=4, rows=4, batch=4))))
    ref = GeneratorBundle.from_bytes(data)
    r = client.post("/v1/checkpoints", json={"name": "toy-gen", "bundle": base64.b64encode(data).decode()},
                    headers=ADMIN_H)
    assert r.status_code == 201, r.text
    budget = sum(ref.meta["budget_range"]) / 2
    r = client.post("/v1/generate", json={"checkpoint": "toy-gen", "budget": budget, "samples": 2, "seed": 5})
    assert r.status_code == 200, r.text
    assert r.json() == ref.generate(budget, samples=2, seed=5)


# ---- the profiler builds its model from the space's graph (a chain here) -------------------------------
def test_the_profiler_builds_the_toy_model(toy: ToyChain) -> None:
    torch = pytest.importorskip("torch")
    from budgetnas.profiler.models import BlockSequence, build_model

    arch = toy.parse("nor_conv_3x3+avg_pool_3x3+nor_conv_1x1")
    model = build_model(toy, arch)
    assert isinstance(model, BlockSequence)
    assert [m.block_key for m in model.block_modules()] == toy.block_keys(arch)
    with torch.no_grad():
        assert model(torch.randn(2, *toy.input_shape)).shape == (2, 10)

    class CellFirst(ToyChain):
        def graph(self, arch: ToyArch) -> list[Block | Cell]:
            blocks = self.blocks(arch)
            return [Cell(2, ((1, 0, blocks[1]),)), *blocks[2:]]

    with pytest.raises(InvalidArgumentError, match="start and end with a block"):
        build_model(CellFirst(), arch)


# ---- structure: nothing outside spaces/ knows a space's internals ------------------------------------------
# OFA's weight-sharing supernet is OFA's own network, and its MBConv block builder uses OFA's SE width rule
MAY_READ_SPACE_INTERNALS = ("budgetnas/generator/supernet/", "budgetnas/profiler/blocks.py")
SPACE_MODULES = ("budgetnas.spaces.nb201", "budgetnas.spaces.ofa_mbv3")
SPACE_CLASSES = {"NASBench201", "NB201Arch", "OFAArch", "OFAMobileNetV3"}


def _space_internals_read(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name in SPACE_MODULES]
        elif isinstance(node, ast.ImportFrom) and node.module in SPACE_MODULES:
            found += [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module == "budgetnas.spaces":
            found += [f"budgetnas.spaces.{a.name}" for a in node.names if a.name in SPACE_CLASSES]
    return found


def test_no_module_outside_spaces_reads_a_space_s_internals() -> None:
    modules = sorted(p for p in (ROOT / "budgetnas").rglob("*.py") if "budgetnas/spaces/" not in p.as_posix())
    assert len(modules) > 50
    readers = {str(p.relative_to(ROOT)): r for p in modules if (r := _space_internals_read(p))}
    assert all(k.startswith(MAY_READ_SPACE_INTERNALS) for k in readers), readers
    assert readers  # the scan finds the supernet's imports: it does look
    # and the toy space is named nowhere in the package: it is only registered, here
    assert not [p for p in (ROOT / "budgetnas").rglob("*.py") if TOY in p.read_text()]
