"""PyTorch modules built from a block key alone, through a registry keyed by the key's operation.

Layouts follow Once-for-All (MobileNetV3 blocks) and NAS-Bench-201 (cell operations), so the
FLOPs and params the spaces compute analytically are those of these modules.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from budgetnas.core.errors import InvalidBlockKeyError, UnknownNameError
from budgetnas.spaces.blockkey import BlockKey, parse_block_key
from budgetnas.spaces.ofa_mbv3 import se_mid

BlockBuilder = Callable[[BlockKey], nn.Module]
BLOCK_BUILDERS: dict[str, BlockBuilder] = {}


def register(*ops: str) -> Callable[[BlockBuilder], BlockBuilder]:
    def deco(fn: BlockBuilder) -> BlockBuilder:
        for op in ops:
            BLOCK_BUILDERS[op] = fn
        return fn
    return deco


def build_block(key: BlockKey | str) -> nn.Module:
    """The module a LUT row measures; ``module.block_key`` holds the key string."""
    k = parse_block_key(key) if isinstance(key, str) else key
    try:
        builder = BLOCK_BUILDERS[k.op]
    except KeyError:
        raise UnknownNameError("block operation", k.op, sorted(BLOCK_BUILDERS)) from None
    module = builder(k)
    module.block_key = str(k)  # type: ignore[assignment]
    return module.eval()


def block_input(key: BlockKey | str, batch: int = 1, channels_last: bool = False) -> torch.Tensor:
    """A random input of the block's input shape (N, C, H, W), or (N, H, W, C) for channels_last."""
    k = parse_block_key(key) if isinstance(key, str) else key
    if len(k.input) != 3:
        raise InvalidBlockKeyError(f"block key {k}: input must be HxWxC")
    h, w, c = k.input
    shape = (batch, h, w, c) if channels_last else (batch, c, h, w)
    return torch.randn(*shape, generator=torch.Generator().manual_seed(0))


def _stride(key: BlockKey) -> int:
    return max(1, round(key.input[0] / key.output[0])) if len(key.output) == 3 else 1


def _conv_bn(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]


# ---- Once-for-All MobileNetV3 -------------------------------------------------------------
class SqueezeExcite(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        mid = se_mid(channels)
        self.reduce = nn.Conv2d(channels, mid, 1, bias=True)
        self.expand = nn.Conv2d(mid, channels, 1, bias=True)
        self.act, self.gate = nn.ReLU(inplace=True), nn.Hardsigmoid(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x.mean((2, 3), keepdim=True)
        return x * self.gate(self.expand(self.act(self.reduce(y))))


class MBConv(nn.Module):
    """OFA's MBConvLayer: [1x1 expand] -> kxk depthwise -> [SE] -> 1x1 project, residual if idskip."""

    def __init__(self, cin: int, cout: int, mid: int, kernel: int, stride: int, se: bool, hswish: bool,
                 idskip: bool) -> None:
        super().__init__()
        act: type[nn.Module] = nn.Hardswish if hswish else nn.ReLU
        self.expand = nn.Sequential(*_conv_bn(cin, mid, 1), act()) if mid != cin else None
        self.depthwise = nn.Sequential(*_conv_bn(mid, mid, kernel, stride, groups=mid), act())
        self.se = SqueezeExcite(mid) if se else None
        self.project = nn.Sequential(*_conv_bn(mid, cout, 1))
        self.idskip = idskip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.expand(x) if self.expand is not None else x
        y = self.depthwise(y)
        if self.se is not None:
            y = self.se(y)
        y = self.project(y)
        return x + y if self.idskip else y


@register("expanded_conv")
def _expanded_conv(key: BlockKey) -> nn.Module:
    cin, cout = key.input[2], key.output[2]
    idskip = bool(key.attr("idskip"))
    if idskip and (cin != cout or key.attr("stride") != 1):
        raise InvalidBlockKeyError(f"block key {key}: idskip:1 needs stride 1 and equal channels")
    return MBConv(cin, cout, key.attr("expand"), key.attr("kernel"), key.attr("stride"),
                  bool(key.attr("se")), bool(key.attr("hs")), idskip)


@register("Conv")
def _stem(key: BlockKey) -> nn.Module:
    return nn.Sequential(*_conv_bn(key.input[2], key.output[2], 3, _stride(key)), nn.Hardswish())


@register("Conv_1")
def _final_expand(key: BlockKey) -> nn.Module:
    return nn.Sequential(*_conv_bn(key.input[2], key.output[2], 1), nn.Hardswish())


class GlobalAvgPool(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean((2, 3), keepdim=True)


@register("AvgPool2D")
def _avgpool(key: BlockKey) -> nn.Module:
    return GlobalAvgPool()


@register("Conv_2")
def _feature_mix(key: BlockKey) -> nn.Module:
    return nn.Sequential(nn.Conv2d(key.input[2], key.output[2], 1, bias=False), nn.Hardswish())


@register("Logits")
def _logits(key: BlockKey) -> nn.Module:
    return nn.Sequential(nn.Flatten(1), nn.Linear(key.input[2], key.output[0]))


# ---- NAS-Bench-201 ----------------------------------------------------------------------------
class ReLUConvBN(nn.Sequential):
    def __init__(self, cin: int, cout: int, k: int, stride: int = 1) -> None:
        super().__init__(nn.ReLU(inplace=False), *_conv_bn(cin, cout, k, stride))


# a conv edge whose ReLU the whole model runs elsewhere (budgetnas.spaces.nb201.fusion) is the same module:
# its own op keeps it in a calibration group of its own, which learns what the context saves
@register("nor_conv_1x1", "nor_conv_3x3", "nor_conv_1x1_fused", "nor_conv_3x3_fused")
def _nor_conv(key: BlockKey) -> nn.Module:
    return ReLUConvBN(key.input[2], key.output[2], 1 if key.op.removesuffix("_fused").endswith("1x1") else 3)


@register("avg_pool_3x3")
def _avg_pool(key: BlockKey) -> nn.Module:
    return nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)


@register("skip_connect")
def _skip(key: BlockKey) -> nn.Module:
    return nn.Identity()


class Add(nn.Module):
    """One addition of a node's sum: ``x + y`` in a cell; alone (profiled from one input), ``x + x``."""

    def forward(self, x: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return x + (x if y is None else y)


@register("add", "add_fused")  # add_fused: an addition a conv can absorb, timed alike, grouped apart
def _add(key: BlockKey) -> nn.Module:
    return Add()


class Zeros(nn.Module):
    """The output of a cell no edge reaches: NB201's ``none``, ``x * 0``, which depends on ``x`` so that
    no graph optimiser folds the rest of the network into a constant (the next cells still run)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mul(0.0)


@register("zeros")
def _zeros(key: BlockKey) -> nn.Module:
    return Zeros()


@register("stem")
def _nb_stem(key: BlockKey) -> nn.Module:
    return nn.Sequential(*_conv_bn(key.input[2], key.output[2], 3))


class ResBlock(nn.Module):
    """NB201's ResNetBasicblock with stride 2: two ReLU-Conv-BN plus avgpool+1x1 shortcut."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv_a = ReLUConvBN(cin, cout, 3, 2)
        self.conv_b = ReLUConvBN(cout, cout, 3)
        self.downsample = nn.Sequential(nn.AvgPool2d(2, 2), nn.Conv2d(cin, cout, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.downsample(x) + self.conv_b(self.conv_a(x))


@register("resblock")
def _resblock(key: BlockKey) -> nn.Module:
    return ResBlock(key.input[2], key.output[2])


@register("head")
def _nb_head(key: BlockKey) -> nn.Module:
    c = key.input[2]
    return nn.Sequential(nn.BatchNorm2d(c), nn.ReLU(), GlobalAvgPool(), nn.Flatten(1), nn.Linear(c, key.output[0]))
