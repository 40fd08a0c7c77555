"""Training-image augmentation: label-preserving, repeatable, never applied to validation images."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from budgetnas.cli.main import run
from budgetnas.core.errors import DataFileError
from budgetnas.generator.supernet import checkpoint
from budgetnas.generator.supernet.data import RandomAffine, load_dataset
from budgetnas.generator.supernet.train import TrainConfig, train


def test_zero_ranges_leave_the_image_unchanged() -> None:
    x = torch.rand(3, 16, 16)
    torch.testing.assert_close(RandomAffine(degrees=0, scale=0, shift=0)(x), x)


def test_flip_mirrors_half_the_time() -> None:
    x = torch.rand(3, 8, 8)
    flip = RandomAffine(degrees=0, scale=0, shift=0, flip=True)
    torch.manual_seed(0)
    outs = [flip(x) for _ in range(40)]
    mirrored = sum(torch.allclose(o, x.flip(-1)) for o in outs)
    same = sum(torch.allclose(o, x) for o in outs)
    assert mirrored + same == 40 and 5 < mirrored < 35


def test_distortion_is_random_repeatable_and_keeps_the_shape() -> None:
    x = torch.rand(3, 32, 32)
    aff = RandomAffine(degrees=15, scale=0.1, shift=0.2)
    torch.manual_seed(1)
    a, b = aff(x), aff(x)
    torch.manual_seed(1)
    assert torch.equal(aff(x), a)
    assert a.shape == x.shape and a.dtype == x.dtype
    assert not torch.allclose(a, b) and not torch.allclose(a, x)
    # Border padding: a shifted digit's background stays background, values stay in the input's range.
    assert x.min() - 1e-6 <= a.min() and a.max() <= x.max() + 1e-6


def test_digits_distorts_training_images_only() -> None:
    data = load_dataset("digits", 32)
    aug = data.train_augmented()
    assert len(aug) == len(data.train)  # type: ignore[arg-type]
    (x, y), (xa, ya) = data.train[0], aug[0]
    assert y == ya and xa.shape == x.shape and not torch.allclose(x, xa)
    # The validation split is the plain dataset, read the same way every time.
    assert torch.equal(data.val[0][0], data.val[0][0])


@pytest.mark.parametrize("augment", [True, False])
def test_augment_setting_is_recorded_and_a_resume_must_keep_it(augment: bool, tmp_path: Path) -> None:
    cfg = TrainConfig(input_size=32, phases=("full",), epochs=1, max_batches=1, batch_size=4, n_random=0,
                      threads=1, augment=augment)
    out = tmp_path / "sn.ckpt"
    ckpt = train(cfg, out, progress=False, log=lambda s: None)
    assert ckpt["config"]["augment"] is augment
    before = out.read_bytes()
    other = TrainConfig(**{**cfg.__dict__, "augment": not augment})
    with pytest.raises(DataFileError, match="augment"):
        train(other, out, resume=True, progress=False, log=lambda s: None)
    assert out.read_bytes() == before


def test_cli_no_augment(tmp_path: Path) -> None:
    out = tmp_path / "sn.ckpt"
    assert run(["supernet", "train", "--out", str(out), "--phases", "full", "--no-augment", "--input-size", "32",
                "--max-batches", "1", "--batch-size", "4", "--threads", "1", "--quiet"]) == 0
    assert checkpoint.load(out)["config"]["augment"] is False


def test_a_checkpoint_from_before_augmentation_resumes_without_it(tmp_path: Path) -> None:
    cfg = TrainConfig(input_size=32, phases=("full", "kernel"), epochs=1, max_batches=1, batch_size=4, n_random=0,
                      threads=1, augment=False)
    out = tmp_path / "old.ckpt"
    with pytest.raises(KeyboardInterrupt):
        train(cfg, out, progress=False, log=_interrupt)
    old = checkpoint.load(out)
    del old["config"]["augment"]  # as written before the setting existed
    checkpoint.save(out, old)
    with pytest.raises(DataFileError, match="augment"):
        train(TrainConfig(**{**cfg.__dict__, "augment": True}), out, resume=True, progress=False, log=lambda s: None)
    assert train(cfg, out, resume=True, progress=False, log=lambda s: None)["complete"]


def _interrupt(_: str) -> None:
    raise KeyboardInterrupt  # after the first epoch's checkpoint is on disk
