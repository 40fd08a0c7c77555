"""The elastic supernet: exact sub-network extraction, channel sorting, kernel transformation."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import torch

from budgetnas.core.errors import InvalidArchitectureError
from budgetnas.generator.supernet.data import load_dataset
from budgetnas.generator.supernet.evaluate import recalibrate_bn
from budgetnas.generator.supernet.network import OFASupernet, phase_choices, sandwich
from budgetnas.profiler.models import build_model
from budgetnas.spaces import OFAMobileNetV3


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    # OpenMP threads spin-wait on a shared, oversubscribed CPU; one thread is several times faster here.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def space() -> OFAMobileNetV3:
    return OFAMobileNetV3(1.0, 128, num_classes=10)


@pytest.fixture(scope="module")
def batches() -> list[torch.Tensor]:
    data = load_dataset("digits", 32)  # small inputs keep the test fast; exactness does not depend on size
    xs = torch.stack([data.train[i][0] for i in range(12)])
    return [xs[:4], xs[4:8], xs[8:12]]


@pytest.fixture(scope="module")
def trained(space: OFAMobileNetV3, batches: list[torch.Tensor]) -> OFASupernet:
    """A supernet moved off its initialisation (two SGD steps per phase, channels sorted)."""
    torch.manual_seed(0)
    net = OFASupernet(space).train()
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    y = torch.arange(4) % 10
    rng = np.random.default_rng(0)
    for phase in ("kernel", "expand"):
        if phase == "expand":
            net.sort_channels()
        for x in batches[:2]:
            for arch in sandwich(net, phase_choices(phase), rng, 1):
                net.set_active(arch)
                torch.nn.functional.cross_entropy(net(x), y).backward()
            opt.step()
            opt.zero_grad()
    return net


def test_extracted_subnets_reproduce_supernet_outputs_exactly(space: OFAMobileNetV3, trained: OFASupernet,
                                                              batches: list[torch.Tensor]) -> None:
    # Both run the same ops on the same weight values (the supernet's slices are made contiguous
    # like the copies), so CPU results are bitwise equal: torch.equal, not a tolerance.
    archs = [trained.largest(), trained.smallest(phase_choices("expand")), *space.sample_many(3, seed=5)]
    outputs = []
    for arch in archs:
        sub = trained.extract(arch)
        assert [m.block_key for m in sub.block_modules()] == space.block_keys(arch)
        build_model(space, arch).load_state_dict(sub.state_dict(), strict=True)  # same layout as the profiler's
        assert sum(p.numel() for p in sub.parameters()) == space.params(arch)
        trained.set_active(arch)
        recalibrate_bn(trained, batches[:2])
        recalibrate_bn(sub, batches[:2])
        trained.eval()
        sub.eval()
        with torch.no_grad():
            y_super, y_sub = trained(batches[2]), sub(batches[2])
        trained.train()
        assert torch.equal(y_super, y_sub), (space.format(arch), (y_super - y_sub).abs().max())
        outputs.append(y_sub)
    # the elastic dimensions are live: different sub-networks compute different functions
    assert all(not torch.equal(outputs[0], o) for o in outputs[1:])


def test_recalibration_replaces_statistics(space: OFAMobileNetV3, trained: OFASupernet,
                                           batches: list[torch.Tensor]) -> None:
    arch = space.sample_many(1, seed=9)[0]
    sub = trained.extract(arch)
    before = sub.state_dict()["2.expand.1.running_mean"].clone()
    recalibrate_bn(sub, batches[:1])
    bn = sub[2].expand[1]
    after = bn.running_mean
    assert not torch.equal(before, after)
    assert bn.momentum == 0.1  # restored after the cumulative pass
    with torch.no_grad():  # with one batch the cumulative average is that batch's channel mean
        x = sub[1](sub[0](batches[0]))
        expected = sub[2].expand[0](x).mean((0, 2, 3))
    torch.testing.assert_close(after, expected, rtol=1e-5, atol=1e-6)


def test_channel_sorting_keeps_the_largest_network_and_orders_importance(space: OFAMobileNetV3,
                                                                         batches: list[torch.Tensor]) -> None:
    torch.manual_seed(1)
    net = OFASupernet(space).eval()
    net.set_active(net.largest())
    with torch.no_grad():
        before = net(batches[0])
        net.sort_channels()
        after = net(batches[0])
    # a permutation of the middle channels: same function up to summation order
    torch.testing.assert_close(before, after, rtol=1e-4, atol=1e-5)
    for u in range(5):
        for layer in net.unit_layers(u):
            imp = layer.project_conv.weight.abs().sum(dim=(0, 2, 3))
            assert torch.all(imp[:-1] >= imp[1:])


def test_elastic_kernel_is_transformed_centre_crop(space: OFAMobileNetV3) -> None:
    torch.manual_seed(2)
    layer = OFASupernet(space).unit_layers(0)[0].depthwise
    w = layer.weight.detach()
    # matrices start as the identity: the 5x5 and 3x3 kernels are centre crops of the 7x7 one
    torch.testing.assert_close(layer.active_weight(8, 5), w[:8, :, 1:6, 1:6])
    torch.testing.assert_close(layer.active_weight(8, 3), w[:8, :, 2:5, 2:5])
    assert torch.equal(layer.active_weight(8, 7), w[:8])
    with torch.no_grad():
        layer.transform_7to5.mul_(0.5)
    torch.testing.assert_close(layer.active_weight(8, 5), 0.5 * w[:8, :, 1:6, 1:6])
    torch.testing.assert_close(layer.active_weight(8, 3), 0.5 * w[:8, :, 2:5, 2:5])


def test_sandwich_and_phases(space: OFAMobileNetV3) -> None:
    net = OFASupernet(space)
    rng = np.random.default_rng(0)
    assert sandwich(net, phase_choices("full"), rng, 2) == [net.largest()]
    archs = sandwich(net, phase_choices("depth"), rng, 2)
    assert len(archs) == 4 and archs[0] == net.largest()
    assert archs[1].depths == (2,) * 5 and {layer for u in archs[1].units for layer in u} == {(3, 6)}
    assert all(e == 6 for a in archs for u in a.units for _, e in u)  # expand is not elastic before its phase
    small = sandwich(net, phase_choices("expand"), rng, 0)[1]
    assert space.format(small) == "w1.0_r128|" + "|".join(["k3e3,k3e3"] * 5)


def test_arch_outside_the_supernet_is_rejected(space: OFAMobileNetV3) -> None:
    net = OFASupernet(space)
    with pytest.raises(InvalidArchitectureError, match="resolution 128"):
        net.set_active("w1.0_r160|k3e3,k3e3|k3e3,k3e3|k3e3,k3e3|k3e3,k3e3|k3e3,k3e3")
    with pytest.raises(InvalidArchitectureError, match=r"width 1\.0"):
        net.extract("w1.2_r128|k3e3,k3e3|k3e3,k3e3|k3e3,k3e3|k3e3,k3e3|k3e3,k3e3")
    with pytest.raises(InvalidArchitectureError):
        net.set_active("w1.0_r128|k9e3,k3e3|k3e3,k3e3|k3e3,k3e3|k3e3,k3e3|k3e3,k3e3")
