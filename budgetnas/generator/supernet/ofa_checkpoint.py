"""Once-for-All's published MobileNetV3 supernet (``ofa_mbv3_d234_e346_k357_w1.2``) as our supernet.

OFA's ``OFAMobileNetV3`` (width 1.2, kernels 3/5/7, expands 3/4/6, depths 2/3/4, 1000 classes) and
:class:`OFASupernet` of ``ofa-mbv3`` at width 1.2 run the same operations in the same order (same
channel rounding, centre-cropped kernels through the 7->5->3 transformation matrices, SE with
``make_divisible(C // 4)`` and h-sigmoid, first-``d``-layers elastic depth, the fixed stem, first
block and head), so importing its weights is a renaming of every tensor: :func:`ofa_name` says which
of OFA's tensors each of ours is. A file that does not hold exactly those tensors, in those shapes,
is refused with a :class:`DataFileError` naming what is wrong.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from budgetnas.core.errors import DataFileError
from budgetnas.generator.supernet import checkpoint
from budgetnas.generator.supernet.network import OFASupernet
from budgetnas.spaces.ofa_mbv3 import MAX_DEPTH, OFAMobileNetV3

OFA_NET = "ofa_mbv3_d234_e346_k357_w1.2"
OFA_WIDTH = 1.2
OFA_CLASSES = 1000
# What OFA's ImageNet pipeline feeds its networks: mean/std normalisation of a centre crop of
# 87.5% of the resized image (``Resize(ceil(r / 0.875))``, ``CenterCrop(r)``).
IMAGENET_PREPROCESS = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "crop": 0.875}

# Our fixed modules (profiler blocks in nn.Sequential) -> OFA's layers.
_FIXED = (
    ("stem.0.", "first_conv.conv."),
    ("stem.1.", "first_conv.bn."),
    ("first.depthwise.0.", "blocks.0.conv.depth_conv.conv."),
    ("first.depthwise.1.", "blocks.0.conv.depth_conv.bn."),
    ("first.project.0.", "blocks.0.conv.point_linear.conv."),
    ("first.project.1.", "blocks.0.conv.point_linear.bn."),
    ("head.0.0.", "final_expand_layer.conv."),
    ("head.0.1.", "final_expand_layer.bn."),
    ("head.2.0.", "feature_mix_layer.conv."),
    ("head.3.1.", "classifier.linear."),
)
# An ElasticMBConv's parts -> OFA's DynamicMBConvLayer's.
_LAYER = (
    ("expand_conv.", "inverted_bottleneck.conv.conv."),
    ("expand_bn.bn.", "inverted_bottleneck.bn.bn."),
    ("depthwise.weight", "depth_conv.conv.conv.weight"),
    ("depthwise_bn.bn.", "depth_conv.bn.bn."),
    ("se.reduce.", "depth_conv.se.fc.reduce."),
    ("se.expand.", "depth_conv.se.fc.expand."),
    ("project_conv.", "point_linear.conv.conv."),
    ("project_bn.bn.", "point_linear.bn.bn."),
)
_UNIT_KEY = re.compile(r"^units\.(\d+)\.(\d+)\.(.+)$")
_TRANSFORM = re.compile(r"^depthwise\.transform_(\d+)to(\d+)$")
# OFA's own load_state_dict accepts older spellings of its keys; so does the import (same rules).
_RENAMES = ((".bn.bn.", ".bn."), (".conv.conv.weight", ".conv.weight"), (".linear.linear.", ".linear."),
            (".linear.", ".linear.linear."), ("bn.", "bn.bn."), ("conv.weight", "conv.conv.weight"))


def ofa_name(key: str) -> str:
    """The name in OFA's ``OFAMobileNetV3.state_dict()`` of our supernet's tensor ``key``."""
    for ours, theirs in _FIXED:
        if key.startswith(ours):
            return theirs + key[len(ours):]
    m = _UNIT_KEY.match(key)
    if m is None:
        raise KeyError(key)
    block = f"blocks.{1 + int(m.group(1)) * MAX_DEPTH + int(m.group(2))}.conv."
    rest = m.group(3)
    t = _TRANSFORM.match(rest)
    if t is not None:
        return f"{block}depth_conv.conv.{t.group(1)}to{t.group(2)}_matrix"
    for ours, theirs in _LAYER:
        if rest.startswith(ours):
            return block + theirs + rest[len(ours):]
    raise KeyError(key)


def ofa_space(resolution: int = 224) -> OFAMobileNetV3:
    """The ``ofa-mbv3`` space OFA's published supernet covers, at one resolution."""
    return OFAMobileNetV3(OFA_WIDTH, resolution, num_classes=OFA_CLASSES)


def read_state(path: Path) -> dict[str, torch.Tensor]:
    """The state dict in an OFA checkpoint file: ``{"state_dict": ...}`` as OFA publishes it, or bare."""
    if not path.is_file():
        raise DataFileError(f"OFA checkpoint {path} does not exist")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises pickle, zip and runtime errors for foreign files
        raise DataFileError(f"{path} is not a readable PyTorch checkpoint ({type(exc).__name__}: "
                            f"{str(exc).splitlines()[0] if str(exc) else ''})") from None
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not obj or not all(
            isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()):
        raise DataFileError(f"{path} holds no state dict (a mapping of names to tensors, or one under 'state_dict')")
    return obj


def _canonical(key: str, wanted: dict[str, str]) -> str | None:
    k = key.replace(".mobile_inverted_conv.", ".conv.")
    if k in wanted:
        return k
    for old, new in _RENAMES:
        if old in k and k.replace(old, new) in wanted:
            return k.replace(old, new)
    return None


def _some(names: list[str]) -> str:
    return ", ".join(repr(n) for n in names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")


def map_state(state: dict[str, torch.Tensor], net: OFASupernet) -> dict[str, torch.Tensor]:
    """OFA's state dict renamed to ``net``'s; DataFileError (without the file name) if it does not fit.

    Every tensor must be present with its shape, except BatchNorm's ``num_batches_tracked``
    counters (PyTorch before 0.4.1 did not save them; they play no part in evaluation).
    """
    ours = net.state_dict()
    wanted = {ofa_name(k): k for k in ours}
    out: dict[str, torch.Tensor] = {}
    unexpected = []
    for key, tensor in state.items():
        name = _canonical(key, wanted)
        if name is None or wanted[name] in out:
            unexpected.append(key)
            continue
        target = ours[wanted[name]]
        if tuple(tensor.shape) != tuple(target.shape):
            raise DataFileError(f"a checkpoint from another network: {key!r} has shape {list(tensor.shape)}, "
                                f"{OFA_NET} has {list(target.shape)}")
        out[wanted[name]] = tensor.to(target.dtype)
    missing = [ofa_name(k) for k in ours if k not in out and not k.endswith("num_batches_tracked")]
    if unexpected or missing:
        parts = ([f"{len(unexpected)} tensor(s) {OFA_NET} does not have ({_some(unexpected)})"] if unexpected else []) \
            + ([f"{len(missing)} of its tensor(s) missing ({_some(missing)})"] if missing else [])
        raise DataFileError(f"a checkpoint from another network: {'; '.join(parts)}")
    for k, v in ours.items():  # the counters a file may lack keep their value
        out.setdefault(k, v)
    return out


def import_ofa(path: Path, resolution: int = 224) -> OFASupernet:
    """Our supernet holding the weights of OFA's checkpoint file ``path`` (see :func:`read_state`)."""
    space = ofa_space(resolution)  # checks the resolution before reading the file
    state = read_state(path)
    net = OFASupernet(space)
    try:
        net.load_state_dict(map_state(state, net))
    except DataFileError as exc:
        raise DataFileError(f"{path}: {exc}") from None
    return net.eval()


def as_checkpoint(net: OFASupernet, source: Path) -> dict[str, Any]:
    """A ``budgetnas-supernet/1`` checkpoint of an imported supernet, for ``supernet eval``.

    It names no dataset (``supernet eval --dataset`` does) and records how OFA preprocesses images.
    """
    space = net.space
    return {"format": checkpoint.FORMAT, "space": space.describe(), "dataset": None, "dataset_name": "imagenet",
            "input_size": space.resolution, "classes": None, "preprocess": dict(IMAGENET_PREPROCESS),
            "config": {"imported": OFA_NET, "source": source.name, "sha256": checkpoint.sha256_of(source)},
            "phase": 0, "epoch": 0, "complete": True, "history": [], "train_seconds": 0.0,
            "state": {k: v.detach().cpu() for k, v in net.state_dict().items()}}
