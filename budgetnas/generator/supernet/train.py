"""Progressive-shrinking training of the supernet, single process or under ``torchrun`` (DDP).

Phases run in order (full -> kernel -> depth -> expand); each has its own SGD optimiser and cosine
schedule, as OFA trains each phase as a separate run. Channels are sorted by importance when the
expand phase starts. A step trains the sandwich (largest, smallest, ``n_random`` random
sub-networks) or one random sub-network; with in-place distillation the largest one's soft outputs
teach the others. A checkpoint is written atomically after every epoch and resumes at that epoch.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader
from torch.utils.data.distributed import DistributedSampler
from tqdm import tqdm

from budgetnas.core.errors import DataFileError, InvalidArgumentError
from budgetnas.generator.supernet import checkpoint
from budgetnas.generator.supernet.data import DataSplits, load_dataset
from budgetnas.generator.supernet.network import PHASES, OFASupernet, phase_choices, sandwich
from budgetnas.spaces import OFAMobileNetV3


@dataclass
class TrainConfig:
    dataset: str = "digits"
    width: float = 1.0
    resolution: int = 128
    # Pixels fed to the network; None = the space's resolution. Smaller inputs make CPU runs
    # feasible; block keys stay those of ``resolution`` (convolutions do not care), the recorded
    # dataset name then says which input size the accuracy was measured at.
    input_size: int | None = None
    phases: tuple[str, ...] = PHASES
    epochs: int = 1  # per phase
    batch_size: int = 32  # per process
    max_batches: int | None = None  # cap on batches per epoch (tests, quick runs)
    lr: float = 0.05
    phase_lr: dict[str, float] = field(default_factory=lambda: {"full": 1.0, "kernel": 0.6, "depth": 0.6,
                                                                  "expand": 0.6})
    momentum: float = 0.9
    weight_decay: float = 3e-5
    label_smoothing: float = 0.1
    augment: bool = True  # the dataset's random distortions of training images (digits: affine, no flip)
    sandwich: bool = True
    n_random: int = 2
    distill: bool = True
    seed: int = 0
    device: str = "cpu"
    threads: int | None = None  # torch CPU threads; 1 avoids OpenMP spin-waiting on oversubscribed machines

    def check(self) -> None:
        bad = [p for p in self.phases if p not in PHASES]
        if bad or not self.phases:
            raise InvalidArgumentError(f"phases {list(self.phases)}: choose from {list(PHASES)}")
        if [p for p in PHASES if p in self.phases] != list(self.phases):
            raise InvalidArgumentError(f"phases must keep the order {list(PHASES)}, got {list(self.phases)}")
        for name, v, lo in (("epochs", self.epochs, 1), ("batch_size", self.batch_size, 1),
                            ("n_random", self.n_random, 0)):
            if v < lo:
                raise InvalidArgumentError(f"{name} must be >= {lo}, got {v}")
        if self.max_batches is not None and self.max_batches < 1:
            raise InvalidArgumentError(f"max_batches must be >= 1, got {self.max_batches}")
        if self.input_size is not None and not 32 <= self.input_size <= self.resolution:
            raise InvalidArgumentError(f"input size must be in 32..{self.resolution} (the resolution), "
                                       f"got {self.input_size}")
        if self.lr <= 0:
            raise InvalidArgumentError(f"lr must be > 0, got {self.lr}")
        if self.threads is not None and self.threads < 1:
            raise InvalidArgumentError(f"threads must be >= 1, got {self.threads}")
        if self.device not in ("cpu", "cuda"):
            raise InvalidArgumentError(f"device must be cpu or cuda, got {self.device!r}")

    def same_run(self, other: dict[str, Any]) -> list[str]:
        """Fields that differ from a checkpoint's config (a resume must not change the run)."""
        mine = asdict(self)
        skip = {"device", "threads"}  # a run may move between machines
        theirs = {**ADDED_LATER, **other}
        return [k for k in mine if k not in skip and _jsonish(mine[k]) != _jsonish(theirs.get(k))]


# Settings added after checkpoints were first written, with the value older runs trained with.
ADDED_LATER: dict[str, Any] = {"augment": False}


def _jsonish(v: Any) -> Any:
    return list(v) if isinstance(v, tuple) else v


@dataclass
class Dist:
    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        return self.rank == 0


@contextmanager
def distributed(device: str) -> Iterator[Dist]:
    """Join the ``torchrun`` process group when WORLD_SIZE > 1 (gloo on CPU, nccl on CUDA)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        yield Dist()
        return
    dist.init_process_group("nccl" if device == "cuda" else "gloo")
    try:
        yield Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))
    finally:
        dist.destroy_process_group()


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``cpu``, ``cuda`` (refused without a GPU) or ``auto``: cuda when there is a GPU, else cpu."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise InvalidArgumentError(
                f"--device cuda: CUDA is not available (torch {torch.__version__}, "
                f"built with CUDA {torch.version.cuda or 'none'}, {torch.cuda.device_count()} GPU(s) visible)")
        torch.cuda.set_device(local_rank)
        return torch.device("cuda", local_rank)
    if name != "cpu":
        raise InvalidArgumentError(f"device must be cpu, cuda or auto, got {name!r}")
    return torch.device("cpu")


def new_checkpoint(cfg: TrainConfig, space: OFAMobileNetV3, data: DataSplits) -> dict[str, Any]:
    return {"format": checkpoint.FORMAT, "space": space.describe(), "dataset": cfg.dataset,
            "dataset_name": record_dataset_name(data.name, cfg.input_size, cfg.resolution),
            "input_size": cfg.input_size or cfg.resolution, "classes": data.classes, "config": asdict(cfg),
            "phase": 0, "epoch": 0, "complete": False, "history": [], "train_seconds": 0.0}


def record_dataset_name(name: str, input_size: int | None, resolution: int) -> str:
    """Accuracy measured at a smaller input than the arch's resolution is recorded as such."""
    return name if input_size in (None, resolution) else f"{name}@{input_size}px"


def soft_cross_entropy(logits: torch.Tensor, target_probs: torch.Tensor) -> torch.Tensor:
    return torch.sum(-target_probs * F.log_softmax(logits, dim=1), dim=1).mean()


def train(cfg: TrainConfig, out: Path, resume: bool = False, progress: bool = True,
          log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Train (or resume) a supernet and write it to ``out``; returns the final checkpoint dict."""
    cfg.check()
    if cfg.threads is not None:
        torch.set_num_threads(cfg.threads)
    space = OFAMobileNetV3(cfg.width, cfg.resolution, num_classes=2)  # checks width and resolution
    with distributed(cfg.device) as dd:
        device = resolve_device(cfg.device, dd.local_rank)
        prior: dict[str, Any] | None = None
        if out.exists():
            if not resume:
                raise DataFileError(f"{out} exists: pass --resume to continue it, or choose another --out")
            prior = checkpoint.load(out)
            diff = cfg.same_run(prior["config"])
            if diff:
                raise DataFileError(f"{out} was trained with other settings ({', '.join(diff)}); "
                                    "resume with the same settings or choose another --out")
        data = load_dataset(cfg.dataset, cfg.input_size or cfg.resolution)
        space = OFAMobileNetV3(cfg.width, cfg.resolution, num_classes=data.num_classes)
        torch.manual_seed(cfg.seed)
        net = OFASupernet(space)
        ckpt = new_checkpoint(cfg, space, data)
        if prior is not None:
            net.load_state_dict(prior["state"])
            ckpt.update({k: prior[k] for k in ("phase", "epoch", "complete", "history", "train_seconds")})
        net.to(device)
        model: nn.Module = net
        if dd.world > 1:
            # Sub-networks leave different parameters unused at every step.
            model = nn.parallel.DistributedDataParallel(
                net, device_ids=[dd.local_rank] if device.type == "cuda" else None, find_unused_parameters=True)
        say = log if log is not None else (lambda s: print(s, file=sys.stderr))
        for pi in range(ckpt["phase"], len(cfg.phases)):
            _train_phase(cfg, pi, net, model, data, device, dd, ckpt, out, prior, progress and dd.main, say)
            prior = None  # optimiser state only belongs to the phase it was saved in
        ckpt["complete"] = True
        if dd.main:
            _save(net, ckpt, out)
        return ckpt


def _save(net: OFASupernet, ckpt: dict[str, Any], out: Path) -> None:
    ckpt["state"] = {k: v.detach().cpu() for k, v in net.state_dict().items()}
    checkpoint.save(out, ckpt)


def _train_phase(cfg: TrainConfig, pi: int, net: OFASupernet, model: nn.Module, data: DataSplits,
                 device: torch.device, dd: Dist, ckpt: dict[str, Any], out: Path, prior: dict[str, Any] | None,
                 progress: bool, say: Callable[[str], None]) -> None:
    phase = cfg.phases[pi]
    start_epoch = ckpt["epoch"] if ckpt["phase"] == pi else 0
    if start_epoch >= cfg.epochs:
        return
    if phase == "expand" and start_epoch == 0:
        net.sort_channels()  # deterministic, so every rank sorts identically
    choices = phase_choices(phase)
    sampler: DistributedSampler[Any] = DistributedSampler(data.train, dd.world, dd.rank, shuffle=True,
                                                          seed=cfg.seed, drop_last=True)
    images = data.train_augmented() if cfg.augment else data.train
    loader = DataLoader(images, batch_size=cfg.batch_size, sampler=sampler, drop_last=True)
    steps = len(loader) if cfg.max_batches is None else min(len(loader), cfg.max_batches)
    if steps == 0:
        raise InvalidArgumentError(f"batch size {cfg.batch_size} x {dd.world} process(es) exceeds the "
                                   f"{len(data.train)} training images")  # type: ignore[arg-type]
    opt = torch.optim.SGD(net.parameters(), lr=cfg.lr * cfg.phase_lr.get(phase, 1.0), momentum=cfg.momentum,
                          nesterov=True, weight_decay=cfg.weight_decay)
    total = steps * cfg.epochs
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5 * (1 + math.cos(math.pi * min(s, total) / total)))
    if prior is not None and prior.get("optimizer") is not None and ckpt["phase"] == pi:
        opt.load_state_dict(prior["optimizer"])
        sched.load_state_dict(prior["scheduler"])
    net.train()
    for epoch in range(start_epoch, cfg.epochs):
        sampler.set_epoch(pi * 10_000 + epoch)
        # Augmentation draws from torch's global generator: seeding it per epoch makes a resumed run
        # distort the same images the same way as an uninterrupted one.
        torch.manual_seed(int(np.random.SeedSequence([cfg.seed, pi, epoch]).generate_state(1)[0]))
        t0 = time.perf_counter()
        loss_sum, correct, seen = 0.0, 0, 0
        bar = tqdm(total=steps, desc=f"{phase} {epoch + 1}/{cfg.epochs}", file=sys.stderr, disable=not progress,
                   leave=False, dynamic_ncols=True)
        for step, (x, y) in enumerate(loader):
            if step >= steps:
                break
            x, y = x.to(device), y.to(device)
            # Same sub-networks on every rank: the generator depends on the step, not the rank.
            rng = np.random.default_rng([cfg.seed, pi, epoch, step])
            archs = sandwich(net, choices, rng, cfg.n_random) if cfg.sandwich else [net.sample(choices, rng)]
            opt.zero_grad(set_to_none=True)
            teacher: torch.Tensor | None = None
            if cfg.distill and not cfg.sandwich:
                with torch.no_grad():
                    net.set_active(net.biggest(choices))
                    teacher = F.softmax(model(x), dim=1)
            for i, arch in enumerate(archs):
                net.set_active(arch)
                logits = model(x)
                if teacher is None or (i == 0 and cfg.sandwich):
                    loss = F.cross_entropy(logits, y, label_smoothing=cfg.label_smoothing)
                    if cfg.distill:
                        teacher = F.softmax(logits.detach(), dim=1)
                    correct += int((logits.argmax(1) == y).sum())
                    seen += len(y)
                else:
                    loss = soft_cross_entropy(logits, teacher)
                loss.backward()
                loss_sum += float(loss.detach())
            nn.utils.clip_grad_norm_(net.parameters(), 5.0)
            opt.step()
            sched.step()
            bar.update(1)
            bar.set_postfix(loss=f"{loss_sum / (step + 1) / len(archs):.3f}", acc=f"{correct / max(seen, 1):.3f}")
        bar.close()
        seconds = time.perf_counter() - t0
        ckpt["train_seconds"] += seconds
        entry = {"phase": phase, "epoch": epoch + 1, "loss": loss_sum / steps / max(1, len(archs)),
                 "train_top1_first_subnet": correct / max(seen, 1), "seconds": round(seconds, 2)}
        ckpt["history"].append(entry)
        ckpt["phase"], ckpt["epoch"] = (pi, epoch + 1) if epoch + 1 < cfg.epochs else (pi + 1, 0)
        ckpt["optimizer"] = opt.state_dict() if epoch + 1 < cfg.epochs else None
        ckpt["scheduler"] = sched.state_dict() if epoch + 1 < cfg.epochs else None
        if dd.main:
            _save(net, ckpt, out)
            say(f"{phase} epoch {epoch + 1}/{cfg.epochs}: loss {entry['loss']:.4f}, "
                f"train top1 {entry['train_top1_first_subnet']:.3f}, {seconds:.1f}s")
        if dd.world > 1:
            dist.barrier()
