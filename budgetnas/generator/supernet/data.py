"""Datasets for supernet training, without torchvision, through a registry keyed by name.

A dataset spec is ``NAME`` or ``NAME:ARGUMENT``: ``digits`` (scikit-learn's bundled 8x8 digits,
upscaled) or ``imagefolder:PATH`` (``PATH/<class>/<image>``, or ``PATH/train/...`` and
``PATH/val/...``, read with Pillow). Every dataset yields 3xRxR float tensors normalised by a
:class:`Preprocess` (ours: to about [-1, 1]; an imported checkpoint's: the one it was trained with)
and has fixed train / validation splits that do not depend on the training seed, so two
runs evaluate on the same images. Training may read the train split through the dataset's random
distortion (``DataSplits.train_augmented``); validation and BN-calibration images are never distorted.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from budgetnas.core.errors import DataFileError, InvalidArgumentError, UnknownNameError

SPLIT_SEED = 20240601  # fixed: the validation split must not move with the training seed
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"})


@dataclass(frozen=True)
class Preprocess:
    """How images become network inputs: ``(pixel - mean) / std`` per channel, pixels in [0, 1];
    image files are resized so that the centred RxR crop keeps ``crop`` of the shorter side
    (OFA's ImageNet evaluation: 0.875). The default is what ``supernet train`` trains with."""

    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    crop: float = 1.0

    @classmethod
    def from_dict(cls, d: object) -> Preprocess:
        """From a checkpoint's ``preprocess`` entry (absent: the default)."""
        if d is None:
            return cls()
        bad = DataFileError(f"preprocess {d!r}: expected {{'mean': [3 numbers], 'std': [3 numbers > 0], "
                            "'crop': a fraction in (0, 1]}}")
        if not isinstance(d, dict):
            raise bad
        try:
            mean, std = tuple(float(v) for v in d["mean"]), tuple(float(v) for v in d["std"])
            crop = float(d.get("crop", 1.0))
        except (KeyError, TypeError, ValueError):
            raise bad from None
        if not (len(mean) == len(std) == 3 and min(std) > 0 and 0 < crop <= 1):
            raise bad
        return cls(mean, std, crop)  # type: ignore[arg-type]

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        """A 3xHxW image of [0, 1] pixels as network input."""
        mean = torch.tensor(self.mean, dtype=x.dtype)[:, None, None]
        std = torch.tensor(self.std, dtype=x.dtype)[:, None, None]
        return ((x - mean) / std).contiguous()


@dataclass
class DataSplits:
    """Train and validation sets of one dataset at one resolution."""

    name: str  # the dataset name recorded with accuracies, e.g. "digits" or "imagefolder:flowers"
    train: Dataset[tuple[torch.Tensor, int]]
    val: Dataset[tuple[torch.Tensor, int]]
    classes: list[str]
    # Random label-preserving distortion of one training image (None: the dataset has none).
    augment: Augment | None = None

    def train_augmented(self) -> Dataset[tuple[torch.Tensor, int]]:
        """The training images, each freshly distorted by ``augment`` every time it is read."""
        return self.train if self.augment is None else Augmented(self.train, self.augment)

    @property
    def num_classes(self) -> int:
        return len(self.classes)


Augment = Callable[[torch.Tensor], torch.Tensor]
DatasetFactory = Callable[[str | None, int, Preprocess], DataSplits]
DATASETS: dict[str, DatasetFactory] = {}


def register(name: str) -> Callable[[DatasetFactory], DatasetFactory]:
    def deco(fn: DatasetFactory) -> DatasetFactory:
        DATASETS[name] = fn
        return fn
    return deco


def load_dataset(spec: str, resolution: int, preprocess: Preprocess | None = None) -> DataSplits:
    """Build the dataset named by ``spec`` (``digits``, ``imagefolder:PATH``) at ``resolution``."""
    name, sep, arg = spec.partition(":")
    try:
        factory = DATASETS[name]
    except KeyError:
        raise UnknownNameError("dataset", name, [f"{n}:PATH" if n == "imagefolder" else n for n in DATASETS]) from None
    return factory(arg if sep else None, resolution, preprocess or Preprocess())


def _split(n: int, val_fraction: float) -> tuple[np.ndarray, np.ndarray]:
    perm = np.random.default_rng(SPLIT_SEED).permutation(n)
    n_val = max(1, round(n * val_fraction))
    return np.sort(perm[n_val:]), np.sort(perm[:n_val])


# ---- augmentation ---------------------------------------------------------------------------
@dataclass(frozen=True)
class RandomAffine:
    """Random rotation, zoom and shift (and optionally a horizontal flip) of one CxHxW image.

    Draws from torch's global generator, which ``train`` seeds: a run is repeatable. Shifts are
    fractions of the half-width (affine_grid's coordinates span [-1, 1]).
    """

    degrees: float
    scale: float  # zoom factor drawn from [1 - scale, 1 + scale]
    shift: float
    flip: bool = False

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        u = torch.rand(5) * 2 - 1
        angle = math.radians(self.degrees) * float(u[0])
        zoom = 1 + self.scale * float(u[1])
        sx = -1.0 if self.flip and float(u[4]) < 0 else 1.0
        cos, sin = math.cos(angle) / zoom, math.sin(angle) / zoom
        theta = torch.tensor([[[cos * sx, -sin, self.shift * float(u[2])],
                               [sin * sx, cos, self.shift * float(u[3])]]], dtype=x.dtype)
        grid = F.affine_grid(theta, [1, *x.shape], align_corners=False)
        # Border padding repeats the background instead of inventing a black frame.
        return F.grid_sample(x[None], grid, padding_mode="border", align_corners=False)[0]


class Augmented(Dataset[tuple[torch.Tensor, int]]):
    def __init__(self, base: Dataset[tuple[torch.Tensor, int]], augment: Augment) -> None:
        self.base, self.augment = base, augment

    def __len__(self) -> int:
        return len(self.base)  # type: ignore[arg-type]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        x, y = self.base[i]
        return self.augment(x), y


# ---- digits ---------------------------------------------------------------------------------
class TensorImages(Dataset[tuple[torch.Tensor, int]]):
    """Small single-channel images kept at native size, upscaled per item (cheap, saves memory)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, resolution: int,
                 preprocess: Preprocess | None = None) -> None:
        self.images, self.labels, self.resolution = images, labels, resolution
        self.preprocess = preprocess or Preprocess()

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        x = F.interpolate(self.images[i][None, None], size=(self.resolution, self.resolution), mode="bilinear",
                          align_corners=False)[0]
        return self.preprocess.normalise(x.expand(3, -1, -1)), int(self.labels[i])


@register("digits")
def _digits(arg: str | None, resolution: int, preprocess: Preprocess) -> DataSplits:
    if arg:
        raise InvalidArgumentError(f"dataset 'digits' takes no argument (got 'digits:{arg}')")
    from sklearn.datasets import load_digits  # bundled with scikit-learn: no download

    d = load_digits()
    images = torch.from_numpy(d.images.astype(np.float32) / 16.0)
    labels = torch.from_numpy(d.target.astype(np.int64))
    tr, va = _split(len(labels), 0.2)
    # Handwriting varies in slant, size and position, never in mirror image: no flip.
    return DataSplits("digits", TensorImages(images[tr], labels[tr], resolution, preprocess),
                      TensorImages(images[va], labels[va], resolution, preprocess), [str(c) for c in d.target_names],
                      RandomAffine(degrees=15, scale=0.1, shift=0.2))


# ---- image folders --------------------------------------------------------------------------
class ImageFiles(Dataset[tuple[torch.Tensor, int]]):
    """Images read lazily with Pillow: RGB, shorter side resized to R / crop, centre crop RxR."""

    def __init__(self, files: Sequence[Path], labels: Sequence[int], resolution: int,
                 preprocess: Preprocess | None = None) -> None:
        self.files, self.labels, self.resolution = list(files), list(labels), resolution
        self.preprocess = preprocess or Preprocess()

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return read_image(self.files[i], self.resolution, self.preprocess), self.labels[i]


def read_image(path: Path, resolution: int, preprocess: Preprocess | None = None) -> torch.Tensor:
    from PIL import Image

    try:
        with Image.open(path) as im:
            img = im.convert("RGB")
    except (OSError, ValueError) as exc:
        raise DataFileError(f"cannot read image {path}: {exc}") from None
    pre = preprocess or Preprocess()
    w, h = img.size
    side = math.ceil(resolution / pre.crop)  # torchvision's Resize(ceil(R / 0.875)) in OFA's evaluation
    scale = side / min(w, h)
    img = img.resize((max(side, round(w * scale)), max(side, round(h * scale))), Image.Resampling.BILINEAR)
    w, h = img.size
    left, top = (w - resolution) // 2, (h - resolution) // 2
    img = img.crop((left, top, left + resolution, top + resolution))
    arr = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1)
    return pre.normalise(arr)


def _scan(root: Path, classes: list[str] | None = None) -> tuple[list[Path], list[int], list[str]]:
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    names = classes if classes is not None else [p.name for p in class_dirs]
    unknown = [p.name for p in class_dirs if p.name not in names]
    if unknown:
        raise DataFileError(f"{root}: class folder(s) {unknown} do not exist in the training folder")
    files: list[Path] = []
    labels: list[int] = []
    for p in class_dirs:
        for f in sorted(p.rglob("*")):
            if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES:
                files.append(f)
                labels.append(names.index(p.name))
    return files, labels, names


def _check_images(files: Sequence[Path]) -> None:
    """Fail before training on any image Pillow cannot decode (not halfway through an epoch)."""
    from PIL import Image

    for f in files:
        try:
            with Image.open(f) as im:
                im.verify()
        except Exception as exc:  # Pillow raises many types for corrupt files
            raise DataFileError(f"unreadable image {f}: {exc}") from None


@register("imagefolder")
def _imagefolder(arg: str | None, resolution: int, preprocess: Preprocess) -> DataSplits:
    if not arg:
        raise InvalidArgumentError("dataset 'imagefolder' needs a path: imagefolder:PATH")
    root = Path(arg).expanduser()
    if not root.is_dir():
        raise DataFileError(f"imagefolder: {root} is not a directory")
    if (root / "train").is_dir() and (root / "val").is_dir():
        tr_files, tr_labels, classes = _scan(root / "train")
        va_files, va_labels, _ = _scan(root / "val", classes)
    else:
        files, labels, classes = _scan(root)
        tr, va = _split(len(files), 0.2) if len(files) > 1 else (np.arange(len(files)), np.arange(0))
        tr_files, tr_labels = [files[i] for i in tr], [labels[i] for i in tr]
        va_files, va_labels = [files[i] for i in va], [labels[i] for i in va]
    if len(classes) < 2:
        raise DataFileError(f"imagefolder: {root} needs at least 2 class folders with images, found {classes}")
    if not tr_files or not va_files:
        raise DataFileError(f"imagefolder: {root} holds no images ({', '.join(sorted(IMAGE_SUFFIXES))}) "
                            "for training and validation")
    _check_images(tr_files + va_files)
    return DataSplits(f"imagefolder:{root.resolve().name}", ImageFiles(tr_files, tr_labels, resolution, preprocess),
                      ImageFiles(va_files, va_labels, resolution, preprocess), classes,
                      RandomAffine(degrees=0, scale=0.15, shift=0.15, flip=True))


def calibration_subset(train: Dataset[tuple[torch.Tensor, int]], n: int) -> list[int]:
    """Fixed training indices for BN recalibration (the same for every sub-network and run)."""
    size = len(train)  # type: ignore[arg-type]
    perm = np.random.default_rng(SPLIT_SEED + 1).permutation(size)
    return sorted(int(i) for i in perm[: min(n, size)])
