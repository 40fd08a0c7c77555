from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from budgetnas.core.errors import InvalidBlockKeyError, UnknownNameError
from budgetnas.profiler.blocks import block_input, build_block
from budgetnas.profiler.models import build_model
from budgetnas.spaces import get_space
from budgetnas.spaces.nb201 import live_edges


@pytest.mark.parametrize("resolution", [128, 164, 224])
def test_ofa_flops_match_torch_flop_counter(resolution: int) -> None:
    sp = get_space("ofa-mbv3", resolution=resolution)
    for arch in sp.sample_many(3, seed=resolution):
        model = build_model(sp, arch)
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            model(torch.randn(1, *sp.input_shape))
        # flop_counter counts 2 FLOPs per multiply-accumulate; our figure is MACs.
        assert counter.get_total_flops() == 2 * sp.flops(arch)
        assert sum(p.numel() for p in model.parameters()) == sp.params(arch)


@pytest.mark.parametrize("name", ["ofa-mbv3", "nb201"])
def test_model_output_shape_and_modules_match_block_keys(name: str) -> None:
    sp = get_space(name)
    for arch in sp.sample_many(4, seed=7):
        model = build_model(sp, arch)
        with torch.no_grad():
            out = model(torch.randn(2, *sp.input_shape))
        assert out.shape == (2, sp.num_classes)  # type: ignore[attr-defined]
        modules = model.block_modules()  # type: ignore[operator]
        assert [m.block_key for m in modules] == sp.block_keys(arch)
        # every parameter belongs to exactly one block module: nothing outside the blocks
        inside = sum(p.numel() for m in modules for p in m.parameters())
        assert inside == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", ["ofa-mbv3", "nb201"])
def test_every_block_key_builds_standalone_with_its_output_shape(name: str) -> None:
    sp = get_space(name, resolution=128 if name == "ofa-mbv3" else 32)
    for key in sp.all_block_keys():
        block = build_block(key)
        with torch.no_grad():
            y = block(block_input(key, batch=2))
        k = block.block_key
        out = tuple(y.shape[1:])
        expected = (k.split("output:")[1].split("-")[0]).split("x")
        if len(expected) == 3:
            assert out == (int(expected[2]), int(expected[0]), int(expected[1])), key
        else:
            assert out == (int(expected[0]),), key


def test_nb201_model_matches_analytic_counts() -> None:
    sp = get_space("nb201")
    for arch in sp.sample_many(8, seed=11):
        model = build_model(sp, arch)
        # the model runs the live edges only (its blocks); NB201's API also counts the dead ones
        blocks = sp.blocks(arch)
        assert sum(p.numel() for p in model.parameters()) == sum(b.params for b in blocks)
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            model(torch.randn(1, *sp.input_shape))
        # NB201's API adds the classifier bias to its FLOPs; flop_counter does not.
        assert counter.get_total_flops() == 2 * (sum(b.flops for b in blocks) - sp.num_classes)  # type: ignore[attr-defined]
        ops = arch.ops  # type: ignore[attr-defined]
        if live_edges(ops) == tuple(op != "none" for op in ops):  # no dead edge: both conventions agree
            assert sp.flops(arch) == sum(b.flops for b in blocks) and sp.params(arch) == sum(b.params for b in blocks)


def test_bad_block_keys() -> None:
    with pytest.raises(UnknownNameError, match="block operation 'Foo'"):
        build_block("Foo-input:1x1x1-output:1x1x1")
    with pytest.raises(InvalidBlockKeyError, match="idskip:1 needs"):
        build_block("expanded_conv-input:8x8x16-output:4x4x16-expand:48-kernel:3-stride:2-idskip:1-se:0-hs:0")
