"""Sub-network evaluation: extract, recalibrate BatchNorm on fixed training images, measure top-1.

BN statistics collected while training the supernet mix many sub-networks and do not fit any one
of them; without recalibration accuracy collapses (OFA's ``set_running_statistics``). Running
stats are reset and re-estimated as a cumulative average (``momentum=None``) over the same
calibration batches for every sub-network.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm import tqdm

from budgetnas.generator.supernet.data import DataSplits, calibration_subset
from budgetnas.generator.supernet.network import OFASupernet
from budgetnas.spaces import OFAArch

# OFA recalibrates on 2000 training images. Fewer are noisy: on two digits supernets (2026-11-24),
# recalibrating on two disjoint sets of 256 images ranked the same 32 sub-networks with Kendall tau
# of only 0.48-0.64 by top-1 and 0.71-0.82 by loss.
CALIB_IMAGES = 2000


@torch.no_grad()
def recalibrate_bn(model: nn.Module, batches: Sequence[torch.Tensor]) -> None:
    """Replace every BatchNorm's running statistics by their cumulative average over ``batches``."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [(m, m.momentum) for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    was_training = model.training
    model.train()
    try:
        for x in batches:
            model(x)
    finally:
        for m, mom in saved:
            m.momentum = mom
        model.train(was_training)


@dataclass(frozen=True)
class Scores:
    """A sub-network on the validation set: top-1 (the record) and mean cross-entropy.

    The loss is continuous: on a small validation set, where top-1 moves in steps of one image,
    it separates sub-networks that top-1 ties or orders by chance.
    """

    top1: float
    loss: float


@torch.no_grad()
def scores(model: nn.Module, loader: DataLoader[Any], device: torch.device) -> Scores:
    model.eval()
    correct = total = 0
    loss = 0.0
    for x, y in loader:
        logits = model(x.to(device)).cpu()
        correct += int((logits.argmax(1) == y).sum())
        loss += float(nn.functional.cross_entropy(logits, y, reduction="sum"))
        total += len(y)
    return Scores(correct / max(total, 1), loss / max(total, 1))


@dataclass
class EvalData:
    """Calibration batches and the validation loader, loaded once and shared by all sub-networks."""

    calib: list[torch.Tensor]
    val: DataLoader[Any]


def eval_data(data: DataSplits, device: torch.device, calib_images: int = CALIB_IMAGES, batch_size: int = 64,
              val_limit: int | None = None) -> EvalData:
    idx = calibration_subset(data.train, calib_images)
    calib_loader = DataLoader(Subset(data.train, idx), batch_size=batch_size, shuffle=False)
    calib = [x.to(device) for x, _ in calib_loader]
    val: Dataset[Any] = data.val
    if val_limit is not None:
        val = Subset(val, list(range(min(val_limit, len(data.val)))))  # type: ignore[arg-type]
    # Validation batches are materialised once: every sub-network reads the same tensors.
    batches = [(x.to(device), y) for x, y in DataLoader(val, batch_size=batch_size, shuffle=False)]
    return EvalData(calib, DataLoader(batches, batch_size=None))  # type: ignore[arg-type]


def recalibrated(net: OFASupernet, arch: OFAArch, ed: EvalData, device: torch.device) -> nn.Module:
    """The extracted sub-network with its BatchNorm statistics re-estimated on the calibration batches."""
    model = net.extract(arch).to(device)
    recalibrate_bn(model, ed.calib)
    return model


def evaluate_arch(net: OFASupernet, arch: OFAArch, ed: EvalData, device: torch.device) -> Scores:
    """Top-1 and loss of the extracted sub-network after BN recalibration."""
    return scores(recalibrated(net, arch, ed, device), ed.val, device)


def evaluate_archs(net: OFASupernet, archs: Sequence[OFAArch], ed: EvalData, device: torch.device,
                   progress: bool = True) -> list[Scores]:
    out = []
    for a in tqdm(archs, desc="sub-networks", file=sys.stderr, disable=not progress, dynamic_ncols=True):
        out.append(evaluate_arch(net, a, ed, device))
    return out
