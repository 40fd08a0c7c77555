"""Elastic layers of the Once-for-All MobileNetV3 supernet.

Each elastic layer holds the weights of its largest setting and computes the active setting from
slices of them. The op sequence mirrors the profiler's standalone modules (``budgetnas.profiler.blocks``)
exactly, so an extracted sub-network (weights copied from the same slices) computes the same
numbers as the supernet for that architecture.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from budgetnas.profiler.blocks import MBConv
from budgetnas.spaces.ofa_mbv3 import make_divisible, se_mid


class DynamicBatchNorm2d(nn.Module):
    """A BatchNorm2d of the largest width, applied to the first ``C`` channels of its input.

    Wraps a real :class:`nn.BatchNorm2d` so generic code (``reset_running_stats``, ``momentum=None``
    for cumulative recalibration) treats supernet and extracted models alike.
    """

    def __init__(self, max_channels: int) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(max_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bn, c = self.bn, x.shape[1]
        assert bn.running_mean is not None and bn.running_var is not None
        # Same momentum rule as _BatchNorm.forward, so cumulative recalibration matches exactly.
        factor = 0.0
        if bn.training and bn.track_running_stats:
            assert bn.num_batches_tracked is not None
            bn.num_batches_tracked.add_(1)
            factor = 1.0 / float(bn.num_batches_tracked) if bn.momentum is None else bn.momentum
        return F.batch_norm(x, bn.running_mean[:c], bn.running_var[:c], bn.weight[:c], bn.bias[:c],
                            bn.training, factor, bn.eps)

    @torch.no_grad()
    def copy_to(self, target: nn.BatchNorm2d) -> None:
        c = target.num_features
        src = self.bn
        assert src.running_mean is not None and src.running_var is not None and target.running_mean is not None
        assert target.running_var is not None and target.num_batches_tracked is not None
        assert src.num_batches_tracked is not None
        target.weight.copy_(src.weight[:c])
        target.bias.copy_(src.bias[:c])
        target.running_mean.copy_(src.running_mean[:c])
        target.running_var.copy_(src.running_var[:c])
        target.num_batches_tracked.copy_(src.num_batches_tracked)

    @torch.no_grad()
    def permute_(self, idx: torch.Tensor) -> None:
        """Reorder the channels (OFA's ``adjust_bn_according_to_idx``)."""
        bn = self.bn
        for t in (bn.weight, bn.bias, bn.running_mean, bn.running_var):
            assert t is not None
            t.copy_(t[idx])


def _sub_filter(max_k: int, k: int) -> slice:
    start = (max_k - k) // 2
    return slice(start, start + k)


class ElasticDepthwise(nn.Module):
    """Depthwise kxk conv with elastic kernel: centre crop of the 7x7 weight passed through OFA's
    per-size kernel transformation matrices (7->5, 5->3), initialised to the identity."""

    def __init__(self, max_channels: int, kernels: tuple[int, ...], stride: int) -> None:
        super().__init__()
        self.kernels = tuple(sorted(kernels))
        self.max_k = self.kernels[-1]
        self.stride = stride
        self.weight = nn.Parameter(torch.empty(max_channels, 1, self.max_k, self.max_k))
        nn.init.kaiming_normal_(self.weight, mode="fan_out")
        for src, dst in zip(self.kernels[:0:-1], self.kernels[-2::-1], strict=True):
            self.register_parameter(f"transform_{src}to{dst}", nn.Parameter(torch.eye(dst * dst)))

    def active_weight(self, channels: int, kernel: int) -> torch.Tensor:
        w = self.weight[:channels]
        for src, dst in zip(self.kernels[:0:-1], self.kernels[-2::-1], strict=True):
            if src <= kernel:
                break
            crop = w[:, :, _sub_filter(src, dst), _sub_filter(src, dst)].contiguous()
            matrix = getattr(self, f"transform_{src}to{dst}")
            w = F.linear(crop.view(-1, dst * dst), matrix).view(channels, 1, dst, dst)
        return w.contiguous()

    def forward(self, x: torch.Tensor, kernel: int) -> torch.Tensor:
        c = x.shape[1]
        return F.conv2d(x, self.active_weight(c, kernel), None, self.stride, kernel // 2, 1, c)


class ElasticPointwise(nn.Module):
    """1x1 conv of the largest size, sliced to (out, in) channels."""

    def __init__(self, cin: int, cout: int, bias: bool = False) -> None:
        super().__init__()
        conv = nn.Conv2d(cin, cout, 1, bias=bias)  # reuse PyTorch's default init
        self.weight = conv.weight
        self.bias = conv.bias

    def active(self, cout: int, cin: int) -> tuple[torch.Tensor, torch.Tensor | None]:
        w = self.weight[:cout, :cin].contiguous()
        b = self.bias[:cout].contiguous() if self.bias is not None else None
        return w, b

    def forward(self, x: torch.Tensor, cout: int) -> torch.Tensor:
        w, b = self.active(cout, x.shape[1])
        return F.conv2d(x, w, b)


class ElasticSE(nn.Module):
    """Squeeze-excite over the active channels; its middle width follows ``se_mid(active)``."""

    def __init__(self, max_channels: int) -> None:
        super().__init__()
        mid = se_mid(max_channels)
        self.reduce = ElasticPointwise(max_channels, mid, bias=True)
        self.expand = ElasticPointwise(mid, max_channels, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        c = x.shape[1]
        y = x.mean((2, 3), keepdim=True)
        y = F.relu(self.reduce(y, se_mid(c)))
        return x * F.hardsigmoid(self.expand(y, c))


class ElasticMBConv(nn.Module):
    """OFA's DynamicMBConvLayer: elastic expand ratio and kernel over one layer position."""

    def __init__(self, cin: int, cout: int, kernels: tuple[int, ...], expands: tuple[int, ...], stride: int,
                 se: bool, hswish: bool, idskip: bool) -> None:
        super().__init__()
        self.cin, self.cout, self.stride = cin, cout, stride
        self.use_se, self.hswish, self.idskip = se, hswish, idskip
        self.max_mid = make_divisible(cin * max(expands))
        self.expand_conv = ElasticPointwise(cin, self.max_mid)
        self.expand_bn = DynamicBatchNorm2d(self.max_mid)
        self.depthwise = ElasticDepthwise(self.max_mid, kernels, stride)
        self.depthwise_bn = DynamicBatchNorm2d(self.max_mid)
        self.se = ElasticSE(self.max_mid) if se else None
        self.project_conv = ElasticPointwise(self.max_mid, cout)
        self.project_bn = DynamicBatchNorm2d(cout)
        self.active_kernel, self.active_expand = max(kernels), max(expands)

    def mid(self, expand: int) -> int:
        return make_divisible(self.cin * expand)

    def _act(self, x: torch.Tensor) -> torch.Tensor:
        return F.hardswish(x) if self.hswish else F.relu(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mid = self.mid(self.active_expand)
        assert mid != self.cin  # every expand ratio of the space widens, so the 1x1 expand always exists
        y = self._act(self.expand_bn(self.expand_conv(x, mid)))
        y = self._act(self.depthwise_bn(self.depthwise(y, self.active_kernel)))
        if self.se is not None:
            y = self.se(y)
        y = self.project_bn(self.project_conv(y, self.cout))
        return x + y if self.idskip else y

    @torch.no_grad()
    def copy_to(self, block: MBConv, kernel: int, expand: int) -> None:
        """Write the active weights into the profiler's standalone block for (kernel, expand)."""
        mid = self.mid(expand)
        assert block.expand is not None
        _conv(block.expand).weight.copy_(self.expand_conv.active(mid, self.cin)[0])
        self.expand_bn.copy_to(_bn(block.expand))
        _conv(block.depthwise).weight.copy_(self.depthwise.active_weight(mid, kernel))
        self.depthwise_bn.copy_to(_bn(block.depthwise))
        if self.se is not None:
            assert block.se is not None
            smid = se_mid(mid)
            for src, dst, cout, cin in ((self.se.reduce, block.se.reduce, smid, mid),
                                        (self.se.expand, block.se.expand, mid, smid)):
                w, b = src.active(cout, cin)
                assert b is not None and dst.bias is not None
                dst.weight.copy_(w)
                dst.bias.copy_(b)
        _conv(block.project).weight.copy_(self.project_conv.active(self.cout, mid)[0])
        self.project_bn.copy_to(_bn(block.project))

    @torch.no_grad()
    def sort_channels(self) -> None:
        """OFA's ``re_organize_middle_weights``: most important middle channels first, so the
        slices of every smaller expand ratio keep them. Importance = L1 norm of the project weights
        reading the channel. The permutation leaves the largest setting's function unchanged."""
        importance = self.project_conv.weight.abs().sum(dim=(0, 2, 3))
        idx = torch.argsort(importance, descending=True)
        self.project_conv.weight.copy_(self.project_conv.weight[:, idx])
        self.depthwise.weight.copy_(self.depthwise.weight[idx])
        self.depthwise_bn.permute_(idx)
        if self.se is not None:
            se = self.se
            assert se.expand.bias is not None and se.reduce.bias is not None
            se.expand.weight.copy_(se.expand.weight[idx])
            se.expand.bias.copy_(se.expand.bias[idx])
            se.reduce.weight.copy_(se.reduce.weight[:, idx])
            se_idx = torch.argsort(se.expand.weight.abs().sum(dim=(0, 2, 3)), descending=True)
            se.expand.weight.copy_(se.expand.weight[:, se_idx])
            se.reduce.weight.copy_(se.reduce.weight[se_idx])
            se.reduce.bias.copy_(se.reduce.bias[se_idx])
        self.expand_conv.weight.copy_(self.expand_conv.weight[idx])
        self.expand_bn.permute_(idx)


def _conv(seq: nn.Sequential) -> nn.Conv2d:
    conv = seq[0]
    assert isinstance(conv, nn.Conv2d)
    return conv


def _bn(seq: nn.Sequential) -> nn.BatchNorm2d:
    bn = seq[1]
    assert isinstance(bn, nn.BatchNorm2d)
    return bn
