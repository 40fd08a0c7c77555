"""NAS-Bench-201 dead edges: the LUT charges exactly what the exported model executes.

An edge that ``none`` edges cut off from the cell's input or output does not contribute to the
output; the built model skips it, and every "LUT -> latency of an arch" path (the walk behind
LUTPredictor and the server's Prepared, and the vectorised TokenCostModel behind GeneratorBundle)
charges only live edges. The exported ONNX graph, after onnxruntime's own optimiser at the level the
ort-cpu runner uses, is the referee.
"""

from __future__ import annotations

import itertools
from collections import Counter
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from budgetnas.luts.lut import LUT, LatencyStats, LUTMeta, LUTPredictor
from budgetnas.luts.token_cost import TokenCostModel, cost_model_from_lut
from budgetnas.profiler.export import export_onnx
from budgetnas.profiler.models import NB201Cell, NB201Network, build_model
from budgetnas.profiler.runners.ort import OrtCpuRunner
from budgetnas.spaces.nb201 import EDGES, OPS, NASBench201, NB201Arch, live_edges

SP = NASBench201()
# the four paths from the cell input (node 0) to its output (node 3)
PATHS = ((0, 3), (0, 1, 3), (0, 2, 3), (0, 1, 2, 3))


def _arch(text: str) -> NB201Arch:
    return SP.parse(text)


def _on_a_full_path(ops: tuple[str, ...]) -> tuple[bool, ...]:
    """Independent definition: an edge is live iff some input-to-output path of non-none edges uses it."""
    on = {edge: op != "none" for edge, op in zip(EDGES, ops, strict=True)}
    live = set()
    for path in PATHS:
        edges = [(b, a) for a, b in itertools.pairwise(path)]
        if all(on[e] for e in edges):
            live.update(edges)
    return tuple(e in live for e in EDGES)


def test_live_edges_equal_the_path_definition_on_every_arch() -> None:
    n_dead = 0
    for tokens in itertools.product(range(len(OPS)), repeat=len(EDGES)):
        ops = tuple(OPS[t] for t in tokens)
        live = live_edges(ops)
        assert live == _on_a_full_path(ops), ops
        n_dead += live != tuple(op != "none" for op in ops)
    assert n_dead == 6180  # 40% of NB201's 15,625 archs have at least one dead edge


@pytest.mark.parametrize(("text", "live"), [
    # 1<-0 feeds node 1, which nothing reads (2<-1 and 3<-1 are none): dead
    ("|nor_conv_3x3~0|+|none~0|none~1|+|skip_connect~0|none~1|none~2|", (False,) * 3 + (True, False, False)),
    # 3<-2 reads node 2, which nothing feeds: it would convolve zeros (a constant)
    ("|none~0|+|none~0|none~1|+|nor_conv_1x1~0|none~1|nor_conv_3x3~2|", (False,) * 3 + (True, False, False)),
    # the long path 0->1->2->3 keeps all three of its edges live
    ("|nor_conv_1x1~0|+|none~0|avg_pool_3x3~1|+|none~0|none~1|nor_conv_3x3~2|",
     (True, False, True, False, False, True)),
    # no path at all: the cell has no live edge
    ("|nor_conv_3x3~0|+|nor_conv_3x3~0|none~1|+|none~0|none~1|none~2|", (False,) * 6),
])
def test_live_edges_examples(text: str, live: tuple[bool, ...]) -> None:
    assert live_edges(_arch(text).ops) == live


def test_blocks_charge_live_edges_only_while_flops_and_params_keep_nb201s_convention() -> None:
    dead = _arch("|nor_conv_3x3~0|+|none~0|none~1|+|skip_connect~0|none~1|none~2|")
    ops = [k.split("-")[0] for k in SP.block_keys(dead)]
    assert Counter(ops) == {"stem": 1, "resblock": 2, "head": 1}  # the live skip passes x on: it runs nothing
    # NB201's API counts the dead conv in its FLOPs/params tables (test_spaces checks all 15,625 rows)
    alive = _arch("|none~0|+|none~0|none~1|+|skip_connect~0|none~1|none~2|")
    assert SP.flops(dead) > SP.flops(alive) and SP.params(dead) > SP.params(alive)
    assert SP.block_keys(dead) == SP.block_keys(alive)


def _random_lut(seed: int) -> LUT:
    rng = np.random.default_rng(seed)
    entries = {k: LatencyStats(count=3, mean_ms=float(rng.uniform(0.1, 2)), std_ms=0.01,
                               median_ms=float(rng.uniform(0.1, 2))) for k in SP.all_block_keys()}
    return LUT(LUTMeta(space=SP.describe(), device="t", backend="b"), entries)


def test_every_lut_sum_equals_the_walk_on_every_arch() -> None:
    """LUTPredictor, the server's Prepared, the vectorised TokenCostModel (CostModelOracle) and the
    plain arrays a GeneratorBundle loads it from agree on all 15,625 archs."""
    from budgetnas.lut_server.predictor import Prepared

    lut = _random_lut(4)
    archs = [SP.from_tokens(t) for t in itertools.product(range(len(OPS)), repeat=len(EDGES))]
    want = LUTPredictor(lut, SP).raw(archs)
    np.testing.assert_allclose(want, [sum(lut.entries[k].value("median") for k in SP.block_keys(a)) for a in archs],
                               rtol=1e-12)
    served = Prepared.build(lut, 0).predict([SP.format(a) for a in archs], calibrated=False)
    np.testing.assert_allclose([p["raw_ms"] for p in served], want, rtol=1e-12)
    model = cost_model_from_lut(SP, lut, calibrated=False)
    np.testing.assert_allclose(model.raw(SP.token_matrix(archs)), want, rtol=1e-12)
    bundled = TokenCostModel.from_arrays(*model.to_arrays("lat_term"), "lat_term")
    np.testing.assert_allclose(bundled(SP.token_matrix(archs)), want, rtol=1e-12)
    # and a dead edge is worth nothing: dropping it does not change the sum
    dead = _arch("|nor_conv_3x3~0|+|none~0|none~1|+|skip_connect~0|none~1|none~2|")
    alive = _arch("|none~0|+|none~0|none~1|+|skip_connect~0|none~1|none~2|")
    assert LUTPredictor(lut, SP).raw([dead])[0] == LUTPredictor(lut, SP).raw([alive])[0]


def test_model_skips_dead_edges_and_a_dead_cell_outputs_zeros() -> None:
    arch = _arch("|nor_conv_3x3~0|+|nor_conv_3x3~0|none~1|+|none~0|none~1|none~2|")  # no live edge
    model = build_model(SP, arch)
    assert isinstance(model, NB201Network)
    assert [m.block_key for m in model.block_modules()] == SP.block_keys(arch)
    assert sum(p.numel() for p in model.parameters()) == sum(b.params for b in SP.blocks(arch))
    with torch.no_grad():
        cell = model.body[0]
        assert isinstance(cell, NB201Cell)
        x = torch.randn(1, SP.channels, 32, 32)
        assert len(cell.ops) == 0 and torch.equal(cell(x), torch.zeros_like(x))


# ---- the exported graph is the referee -----------------------------------------------------------
def _executed_ops(path: Path, tmp: Path) -> Counter[str]:
    """Dense convs (by kernel size), pools, ReLUs, additions and products of the graph onnxruntime
    runs, after the ort-cpu runner's own optimisation (fusions and NCHWc layouts keep one node per conv
    and per pool; an addition that became a conv's fused sum input is a ``sum``, a ReLU folded into a
    conv is gone). Grouped convs are left out: they are BatchNorms the optimiser could not fold into a
    conv (the head's)."""
    import onnxruntime as ort

    so = OrtCpuRunner(threads=1).session_options()
    so.optimized_model_filepath = str(tmp / "optimised.onnx")
    ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    graph = onnx.load(so.optimized_model_filepath).graph
    weights = {i.name: list(i.dims) for i in graph.initializer}
    out: Counter[str] = Counter()
    for node in graph.node:
        if node.op_type in ("Conv", "FusedConv"):
            if next((a.i for a in node.attribute if a.name == "group"), 1) == 1:
                kh, kw = weights[node.input[1]][2:]
                out[f"conv{kh}x{kw}"] += 1
            out["sum"] += len(node.input) > 3 and bool(node.input[3])  # NCHWc's fused sum: the addition
        elif node.op_type in ("AveragePool", "GlobalAveragePool", "ReduceMean", "Add", "Mul", "Relu"):
            out[node.op_type] += 1
    return out


def _charged_ops(arch: NB201Arch) -> Counter[str]:
    """The nodes the charged block keys stand for (budgetnas.profiler.blocks' modules), in their fusion
    contexts (budgetnas.spaces.nb201.fusion): a conv edge runs its ReLU unless it is ``_fused``, an
    ``add_fused`` is a conv's sum. A reduction's input feeds its ReLU and its shortcut's pool, so its
    ReLU runs; its second conv takes its first's ReLU and its shortcut conv its sum."""
    per_block = {"stem": ["conv3x3"], "nor_conv_3x3": ["conv3x3", "Relu"], "nor_conv_1x1": ["conv1x1", "Relu"],
                 "nor_conv_3x3_fused": ["conv3x3"], "nor_conv_1x1_fused": ["conv1x1"],
                 "avg_pool_3x3": ["AveragePool"], "skip_connect": [], "add": ["Add"], "add_fused": ["sum"],
                 "zeros": ["Mul"], "resblock": ["conv3x3", "conv3x3", "conv1x1", "AveragePool", "sum", "Relu"],
                 "head": ["ReduceMean"]}
    return Counter(op for k in SP.block_keys(arch) for op in per_block[k.split("-")[0]])


@pytest.mark.parametrize("text", [
    "|nor_conv_3x3~0|+|none~0|none~1|+|skip_connect~0|none~1|none~2|",  # unused output: 1<-0
    "|none~0|+|none~0|none~1|+|nor_conv_1x1~0|none~1|nor_conv_3x3~2|",  # zero input: 3<-2
    "|avg_pool_3x3~0|+|nor_conv_1x1~0|none~1|+|none~0|none~1|nor_conv_3x3~2|",  # 1<-0 unused, 2<-0 live
    "|nor_conv_3x3~0|+|nor_conv_3x3~0|none~1|+|none~0|none~1|none~2|",  # no live edge: the next cells run
    "|nor_conv_1x1~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|nor_conv_3x3~0|nor_conv_1x1~1|avg_pool_3x3~2|",  # all
    # one pool of node 0 feeds nodes 1, 2 and 3, one of node 1 feeds 2 and 3: 3 pools run per cell, not 6
    "|avg_pool_3x3~0|+|avg_pool_3x3~0|avg_pool_3x3~1|+|avg_pool_3x3~0|avg_pool_3x3~1|avg_pool_3x3~2|",
    # shared pools beside convs of the same node (convs have weights: never shared)
    "|avg_pool_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|avg_pool_3x3~0|avg_pool_3x3~1|nor_conv_3x3~2|",
    "|nor_conv_3x3~0|+|nor_conv_3x3~0|skip_connect~1|+|nor_conv_3x3~0|skip_connect~1|avg_pool_3x3~2|",
    # node 1 is skip(x0) = x0, so pool(x1) is pool(x0): one pool per cell (2<-0 is dead)
    "|skip_connect~0|+|nor_conv_1x1~0|none~1|+|avg_pool_3x3~0|avg_pool_3x3~1|none~2|",
    # nodes 1 and 2 both hold pool(x0): pool(x1) and pool(x2) are one
    "|avg_pool_3x3~0|+|avg_pool_3x3~0|none~1|+|nor_conv_1x1~0|avg_pool_3x3~1|avg_pool_3x3~2|",
    # fusion contexts: node 1 (a conv's) is read by a skip too, so its ReLU runs; node 2's by convs only
    "|nor_conv_1x1~0|+|nor_conv_1x1~0|nor_conv_1x1~1|+|nor_conv_1x1~0|skip_connect~1|nor_conv_3x3~2|",
    # node 1 is a pool's: its ReLU runs; node 3 = conv + skip + pool: one addition a conv absorbs, one not
    "|avg_pool_3x3~0|+|none~0|none~1|+|nor_conv_3x3~0|nor_conv_1x1~1|avg_pool_3x3~2|",
    "|none~0|+|nor_conv_1x1~0|avg_pool_3x3~1|+|nor_conv_3x3~0|skip_connect~1|avg_pool_3x3~2|",
    # the cell's output is a pool's, so the next cell's ReLU of its input runs (the first cell's folds)
    "|nor_conv_3x3~0|+|none~0|nor_conv_1x1~1|+|none~0|none~1|avg_pool_3x3~2|",
])
def test_charged_block_keys_are_the_ops_the_optimised_onnx_graph_runs(text: str, tmp_path: Path) -> None:
    arch = _arch(text)
    model = build_model(SP, arch)
    path = export_onnx(model, torch.randn(1, *SP.input_shape), tmp_path / "m.onnx")  # checked against torch
    got = _executed_ops(path, tmp_path)
    got["ReduceMean"] += got.pop("GlobalAveragePool", 0)  # the head's pooling, whichever way exported
    want = _charged_ops(arch)
    if not any(live_edges(arch.ops)):
        # cells of zeros: onnxruntime folds the first stage's chain of x * 0 into the stem conv's weights
        # (a product by a constant after a conv); the later stages' follow an addition and run
        want["Mul"] -= SP.cells
        # and the head's BatchNorm after a product is not made a conv, so its ReLU runs on its own
        want["Relu"] += 1
    assert +got == +want


@pytest.mark.parametrize(("text", "adds", "zeros"), [
    # node 1 one term, node 2 two, node 3 three: 0 + 1 + 2 additions
    ("|nor_conv_3x3~0|+|nor_conv_3x3~0|skip_connect~1|+|nor_conv_3x3~0|skip_connect~1|avg_pool_3x3~2|", 3, False),
    # node 1 is x0 (a skip alone adds nothing); pool(x0) + pool(x1) is one pool, still one addition
    ("|skip_connect~0|+|avg_pool_3x3~0|avg_pool_3x3~1|+|none~0|none~1|nor_conv_1x1~2|", 1, False),
    # node 3's first partial sum pool(x0) + pool(x1) is node 2's: 0 + 1 + 1 additions, as CSE runs them
    ("|avg_pool_3x3~0|+|avg_pool_3x3~0|avg_pool_3x3~1|+|avg_pool_3x3~0|avg_pool_3x3~1|avg_pool_3x3~2|", 2, False),
    # dead edges add nothing: only 3<-0 is live
    ("|nor_conv_3x3~0|+|none~0|none~1|+|skip_connect~0|none~1|none~2|", 0, False),
    ("|nor_conv_3x3~0|+|nor_conv_3x3~0|none~1|+|none~0|none~1|none~2|", 0, True),  # no live edge: x * 0
])
def test_a_cell_charges_its_additions_and_its_zero_output(text: str, adds: int, zeros: bool) -> None:
    arch = _arch(text)
    ops = Counter(k.split("-")[0] for k in SP.block_keys(arch))
    assert (ops["add"] + ops["add_fused"], ops["zeros"]) == (3 * SP.cells * adds, 3 * SP.cells * zeros)
    model = build_model(SP, arch)
    assert [m.block_key for m in model.block_modules()] == SP.block_keys(arch)


def test_sgnas_expected_latency_is_exact_for_the_six_edge_table() -> None:
    """SGNAS differentiates the LUT model's expectation under independent per-edge choices: with one
    term over six positions it must still be the exact expectation over all 15,625 archs."""
    from budgetnas.generator.sgnas import expected_cost

    model = cost_model_from_lut(SP, _random_lut(5), calibrated=False)
    probs = [torch.softmax(torch.randn(3, len(OPS), generator=torch.Generator().manual_seed(e)), 1)
             for e in range(len(EDGES))]
    grid = np.asarray(list(itertools.product(range(len(OPS)), repeat=len(EDGES))))
    weight = np.prod([p.double().numpy()[:, grid[:, e]] for e, p in enumerate(probs)], axis=0)  # (3, 15625)
    np.testing.assert_allclose(expected_cost(model, probs).double().numpy(), weight @ model.raw(grid), rtol=1e-5)


def test_a_parameter_free_op_on_one_node_is_charged_and_run_once() -> None:
    """Two edges applying avg_pool_3x3 to the cell input are one computation: one block, one module,
    and the cell's output is still NB201's (each edge's op applied to its source, summed)."""
    arch = _arch("|avg_pool_3x3~0|+|avg_pool_3x3~0|nor_conv_1x1~1|+|avg_pool_3x3~0|avg_pool_3x3~1|skip_connect~2|")
    per_cell = Counter(k.split("-")[0] for k in SP.block_keys(arch)[1:1 + 3])  # the edges' (the skip runs nothing)
    assert per_cell == {"avg_pool_3x3": 2, "nor_conv_1x1": 1}  # pool(x0), pool(x1): not 4
    ops = Counter(k.split("-")[0] for k in SP.block_keys(arch))
    assert ops["avg_pool_3x3"] == 2 * 3 * SP.cells and ops["nor_conv_1x1"] == 3 * SP.cells
    model = build_model(SP, arch)
    assert [m.block_key for m in model.block_modules()] == SP.block_keys(arch)
    cell = model.body[0]
    assert isinstance(cell, NB201Cell)
    x = torch.randn(1, SP.channels, 32, 32)
    with torch.no_grad():
        pool, conv = torch.nn.functional.avg_pool2d(x, 3, 1, 1, count_include_pad=False), cell.ops[1]
        n1 = pool
        n2 = pool + conv(n1)
        want = pool + torch.nn.functional.avg_pool2d(n1, 3, 1, 1, count_include_pad=False) + n2
        torch.testing.assert_close(cell(x), want)


def test_a_cell_refuses_fused_additions_it_cannot_charge() -> None:
    import dataclasses

    from budgetnas.core.errors import InvalidArgumentError
    from budgetnas.spaces.base import Cell

    arch = _arch("|nor_conv_3x3~0|+|nor_conv_3x3~0|skip_connect~1|+|nor_conv_3x3~0|skip_connect~1|avg_pool_3x3~2|")
    cell = next(p for p in SP.graph(arch) if isinstance(p, Cell))
    assert cell.additions() == 3 and 0 < cell.fused_adds <= 3
    with pytest.raises(InvalidArgumentError, match="add_fused block"):
        dataclasses.replace(cell, add_fused=None)
    for bad in (4, -1):
        with pytest.raises(InvalidArgumentError, match="among its 3 additions"):
            dataclasses.replace(cell, fused_adds=bad)
    with pytest.raises(InvalidArgumentError, match="among its"):
        dataclasses.replace(cell, add=None)  # no add block: no addition is charged, fused or not
