"""OFA's published supernet checkpoint imported into ours, against Once-for-All's own code.

The reference is the ``ofa`` package (pinned in requirements/ofa-ref.txt), installed by
``make install-ofa-ref`` without its dependencies into ``<venv>/ofa-ref``, outside site-packages
(``BUDGETNAS_OFA_REF`` names another folder). It imports torchvision at import time, which has no
build beside our torch, for its data loaders only: the fixture puts a stand-in in ``sys.modules``
for the import alone. Its network classes build with random weights; we save them as OFA publishes
a checkpoint and compare the two networks' outputs sub-network by sub-network.
"""

from __future__ import annotations

import csv
import os
import random
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from budgetnas.cli.main import run
from budgetnas.core.errors import DataFileError
from budgetnas.generator.supernet import checkpoint
from budgetnas.generator.supernet.data import Preprocess, read_image
from budgetnas.generator.supernet.network import OFASupernet
from budgetnas.generator.supernet.ofa_checkpoint import OFA_NET, import_ofa, map_state, ofa_name, ofa_space
from tests.test_supernet_cli import one_error_line

OFA_REF = Path(os.environ.get("BUDGETNAS_OFA_REF") or Path(sys.prefix) / "ofa-ref")
RESOLUTIONS = (128, 144, 160, 192, 224)


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    n = torch.get_num_threads()
    torch.set_num_threads(1)  # a shared, oversubscribed CPU: one thread is fastest
    yield
    torch.set_num_threads(n)


def _torchvision_standin() -> dict[str, types.ModuleType]:
    """What OFA touches of torchvision at import: ``transforms.RandomResizedCrop`` as a base class
    (ofa/utils/my_dataloader/my_random_resize_crop.py) and the ``transforms.functional`` module."""
    tv = types.ModuleType("torchvision")
    tr = types.ModuleType("torchvision.transforms")
    fn = types.ModuleType("torchvision.transforms.functional")
    tr.RandomResizedCrop = type("RandomResizedCrop", (), {})  # type: ignore[attr-defined]
    tr.functional = fn  # type: ignore[attr-defined]
    tv.transforms = tr  # type: ignore[attr-defined]
    return {"torchvision": tv, "torchvision.transforms": tr, "torchvision.transforms.functional": fn}


@pytest.fixture(scope="module")
def ofa_cls() -> Any:
    if not (OFA_REF / "ofa").is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"OFA's reference code is not in {OFA_REF}: CI runs `make install-ofa-ref` first")
        pytest.skip(f"OFA's reference code is not in {OFA_REF} (`make install-ofa-ref`)")
    stand_in = _torchvision_standin()
    before = {name: sys.modules.get(name) for name in stand_in}
    sys.modules.update(stand_in)
    sys.path.insert(0, str(OFA_REF))
    try:
        from ofa.imagenet_classification.elastic_nn.networks import OFAMobileNetV3
    finally:
        sys.path.remove(str(OFA_REF))
        for name, mod in before.items():  # the stand-in stays out of every other test
            if mod is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = mod
    return OFAMobileNetV3


@torch.no_grad()
def _random_ofa(ofa_cls: Any) -> Any:
    """OFA's supernet with random weights that carry the input through: variance-preserving convs,
    BN statistics estimated on random images then perturbed, kernel matrices off the identity."""
    from ofa.utils import init_models

    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)
    net = ofa_cls(width_mult=1.2, ks_list=[3, 5, 7], expand_ratio_list=[3, 4, 6], depth_list=[2, 3, 4])
    init_models(net, "he_fin")
    for name, p in net.named_parameters():
        if name.endswith("_matrix"):
            p.add_(torch.randn(p.shape, generator=g) * 0.1)
    bns = [m for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    for m in bns:
        m.momentum = None
    net.set_max_net()
    net.train()
    for _ in range(2):
        net(torch.randn(4, 3, 160, 160, generator=g))
    for m in bns:
        c = m.num_features
        m.momentum = 0.1
        m.running_mean.add_(torch.randn(c, generator=g) * 0.1)
        m.running_var.mul_(torch.rand(c, generator=g) * 0.5 + 0.75)
        m.weight.copy_(torch.rand(c, generator=g) * 0.5 + 0.75)
        m.bias.copy_(torch.randn(c, generator=g) * 0.1)
    return net.eval()


@pytest.fixture(scope="module")
def ofa_net(ofa_cls: Any) -> Any:
    return _random_ofa(ofa_cls)


@pytest.fixture(scope="module")
def ofa_file(ofa_net: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("ofa") / OFA_NET
    torch.save({"state_dict": ofa_net.state_dict()}, path)  # as OFA publishes its checkpoints
    return path


def test_every_tensor_has_one_ofa_name(ofa_net: Any) -> None:
    ours = OFASupernet(ofa_space())
    names = [ofa_name(k) for k in ours.state_dict()]
    assert sorted(names) == sorted(ofa_net.state_dict())


@torch.no_grad()
def test_outputs_equal_ofa_on_20_random_subnetworks(ofa_net: Any, ofa_file: Path) -> None:
    # float64: in float32 the two differ by rounding alone (up to ~4e-5 on logits of ~40, from
    # h-swish and pooling written differently), which would hide nothing but blur the bound.
    ofa64 = ofa_net.double()
    nets: dict[int, OFASupernet] = {}
    rnd = random.Random(0)
    g = torch.Generator().manual_seed(1)
    worst = 0.0
    try:
        for i in range(20):
            random.seed(i)
            cfg = ofa64.sample_active_subnet()  # OFA's own sampler and encoding: ks, e per layer, d per stage
            r = RESOLUTIONS[i % len(RESOLUTIONS)] if i < len(RESOLUTIONS) else rnd.choice(RESOLUTIONS[:3])
            if r not in nets:
                nets[r] = import_ofa(ofa_file, r).double()
            ours = nets[r]
            arch = ours.space.parse({"ks": cfg["ks"], "e": cfg["e"], "d": cfg["d"], "r": r})
            assert ours.space.to_ofa_dict(arch)["d"] == cfg["d"]
            ours.set_active(arch)
            x = torch.randn(2, 3, r, r, generator=g, dtype=torch.float64)
            want, got = ofa64(x), ours(x)
            assert (want[0] - want[1]).abs().max() > 0.1  # the outputs depend on the input: not a vacuous match
            worst = max(worst, float((want - got).abs().max()))
            assert worst < 1e-5, (i, ours.space.format(arch), worst)
    finally:
        ofa_net.float()
    assert worst < 1e-5


def test_our_arch_strings_convert_to_ofa_and_back(ofa_net: Any) -> None:
    space = ofa_space(160)
    random.seed(3)
    for _ in range(10):
        cfg = ofa_net.sample_active_subnet()
        arch = space.parse({**cfg, "r": 160})
        back = space.to_ofa_dict(arch)
        assert back["d"] == cfg["d"]
        for u, d in enumerate(cfg["d"]):  # entries past a stage's depth are unused in both
            layers = slice(u * 4, u * 4 + d)
            assert back["ks"][layers] == cfg["ks"][layers] and back["e"][layers] == cfg["e"][layers]
        assert space.parse(space.format(arch)) == arch


def test_older_spellings_of_ofa_keys_load(ofa_net: Any) -> None:
    """OFA's load_state_dict takes its older key names (``mobile_inverted_conv``, single ``.bn.``)."""
    old = {k.replace(".conv.", ".mobile_inverted_conv.", 1).replace(".bn.bn.", ".bn.") if k.startswith("blocks.")
           else k: v for k, v in ofa_net.state_dict().items()}
    net = OFASupernet(ofa_space())
    mapped = map_state(old, net)
    assert torch.equal(mapped["units.2.1.depthwise_bn.bn.running_var"],
                       ofa_net.state_dict()["blocks.10.conv.depth_conv.bn.bn.running_var"])


# ---- the CLI and bad input ------------------------------------------------------------------
def test_import_ofa_writes_our_checkpoint(ofa_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "ofa.ckpt"
    assert run(["supernet", "import-ofa", str(ofa_file), "--out", str(out), "--resolution", "160"]) == 0
    assert "wrote" in capsys.readouterr().out
    ck = checkpoint.load(out)
    assert ck["space"] == {"space": "ofa-mbv3", "width": 1.2, "resolution": 160, "num_classes": 1000}
    assert ck["complete"] and ck["input_size"] == 160 and ck["dataset"] is None
    net = OFASupernet(checkpoint.space_of(ck))
    net.load_state_dict(ck["state"])
    assert run(["supernet", "import-ofa", str(ofa_file), "--out", str(out)]) == 2
    one_error_line(capsys, "exists")
    assert run(["supernet", "import-ofa", str(ofa_file), "--out", str(tmp_path / "r.ckpt"), "--resolution", "100"]) == 2
    one_error_line(capsys, "resolution 100")


def _imagenet_like(root: Path) -> Path:
    """ImageNet's layout in miniature: 1000 class folders under train/ (two with an image), two under val/."""
    from PIL import Image

    for split, names in (("train", [f"n{i:08d}" for i in range(1000)]), ("val", ["n00000003", "n00000997"])):
        for i, name in enumerate(names):
            (root / split / name).mkdir(parents=True)
            if split == "val" or name in ("n00000003", "n00000997"):
                Image.new("RGB", (40, 30), (40 * i % 256, 90, 200)).save(root / split / name / "a.png")
    return root


def test_eval_runs_the_imported_supernet_on_an_image_folder(ofa_file: Path, tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    ckpt = tmp_path / "ofa.ckpt"
    assert run(["supernet", "import-ofa", str(ofa_file), "--out", str(ckpt), "--resolution", "128"]) == 0
    out = tmp_path / "acc.csv"
    smallest = "w1.2_r128|" + "|".join(["k3e3,k3e3"] * 5)
    args = ["supernet", "eval", "--checkpoint", str(ckpt), "--arch", smallest, "--calib-images", "2",
            "--out", str(out), "--quiet", "--threads", "1"]
    assert run(args) == 2  # an imported checkpoint names no dataset
    one_error_line(capsys, "names no dataset", "--dataset imagefolder:PATH")
    root = _imagenet_like(tmp_path / "imagenet")
    assert run([*args, "--dataset", f"imagefolder:{root}"]) == 0
    rows = list(csv.DictReader(out.open()))
    assert [r["arch_str"] for r in rows] == [smallest] and 0.0 <= float(rows[0]["accuracy"]) <= 1.0


def test_imagenet_preprocess_crops_and_normalises_like_ofa(tmp_path: Path) -> None:
    from PIL import Image

    # 64x48 image, a 2-pixel red frame: OFA's Resize(ceil(32 / 0.875) = 37) + CenterCrop(32) cuts it off.
    img = Image.new("RGB", (64, 48), (255, 0, 0))
    img.paste((0, 128, 255), (2, 2, 62, 46))
    img.save(tmp_path / "a.png")
    pre = Preprocess.from_dict({"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225], "crop": 0.875})
    x = read_image(tmp_path / "a.png", 32, pre)
    want = (torch.tensor([0, 128 / 255, 1.0]) - torch.tensor(pre.mean)) / torch.tensor(pre.std)
    assert x.shape == (3, 32, 32)
    assert torch.allclose(x[:, 0, 0], want, atol=1e-5) and torch.allclose(x[:, -1, -1], want, atol=1e-5)
    ours = read_image(tmp_path / "a.png", 32)  # what supernet train feeds: [-1, 1], shorter side = R
    assert torch.allclose(ours[:, 16, 16], torch.tensor([-1.0, 128 / 255 * 2 - 1, 1.0]), atol=1e-5)
    assert Preprocess.from_dict(None) == Preprocess()
    for bad in ({"mean": [0.5], "std": [1, 1, 1]}, {"mean": [0, 0, 0], "std": [1, 0, 1]}, "imagenet",
                {"mean": [0, 0, 0], "std": [1, 1, 1], "crop": 1.5}):
        with pytest.raises(DataFileError, match="preprocess"):
            Preprocess.from_dict(bad)


def _bad(path: Path, state: Any) -> Path:
    torch.save(state, path)
    return path


@pytest.mark.parametrize("case", ["other-net", "w1.0", "not-a-state-dict", "garbage", "missing"])
def test_a_checkpoint_from_another_network_is_one_error(case: str, ofa_net: Any, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    sd = ofa_net.state_dict()
    path = tmp_path / "bad.pth"
    needles: tuple[str, ...]
    if case == "other-net":  # e.g. a ResNet: names OFA's net does not have
        _bad(path, {"state_dict": {"conv1.weight": torch.zeros(64, 3, 7, 7), "fc.weight": torch.zeros(1000, 2048)}})
        needles = ("another network", "'conv1.weight'", "missing")
    elif case == "w1.0":  # OFA's width-1.0 supernet: same names, other shapes
        _bad(path, {"state_dict": {**sd, "first_conv.conv.weight": torch.zeros(16, 3, 3, 3)}})
        needles = ("another network", "first_conv.conv.weight", "[16, 3, 3, 3]", "[24, 3, 3, 3]")
    elif case == "not-a-state-dict":
        _bad(path, {"epoch": 3})
        needles = ("no state dict",)
    elif case == "garbage":
        path.write_bytes(b"not a checkpoint")
        needles = ("not a readable PyTorch checkpoint",)
    else:
        needles = ("does not exist",)
    assert run(["supernet", "import-ofa", str(path), "--out", str(tmp_path / "x.ckpt")]) == 2
    one_error_line(capsys, *needles)
    assert not (tmp_path / "x.ckpt").exists()


def test_missing_tensors_are_named(ofa_net: Any) -> None:
    sd = dict(ofa_net.state_dict())
    del sd["blocks.20.conv.depth_conv.se.fc.expand.bias"]
    with pytest.raises(DataFileError, match=r"1 of its tensor\(s\) missing .*blocks\.20\.conv\.depth_conv\.se"):
        map_state(sd, OFASupernet(ofa_space()))
    counters = {k: v for k, v in ofa_net.state_dict().items() if not k.endswith("num_batches_tracked")}
    map_state(counters, OFASupernet(ofa_space()))  # PyTorch < 0.4.1 saved no BN counters: fine
