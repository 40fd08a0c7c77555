"""``budgetnas supernet ...``: train an ofa-mbv3 weight-sharing supernet, evaluate its sub-networks."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from budgetnas.core.errors import DataFileError, InvalidArgumentError

app = typer.Typer(help="Once-for-All supernet for ofa-mbv3: progressive-shrinking training and "
                       "sub-network accuracy (BN-recalibrated) for the generator's accuracy records.",
                  no_args_is_help=True)

Device = Annotated[str, typer.Option("--device", help="cpu or cuda")]
Threads = Annotated[int | None, typer.Option("--threads", min=1, help="torch CPU threads (1 is fastest on a "
                                                                      "machine shared with other jobs)")]


@app.command("train")
def train_cmd(
    out: Annotated[Path, typer.Option("--out", help="checkpoint file (written atomically after every epoch)")],
    dataset: Annotated[str, typer.Option("--dataset", help="digits | imagefolder:PATH")] = "digits",
    epochs: Annotated[int, typer.Option("--epochs", help="epochs per phase")] = 1,
    device: Device = "cpu",
    threads: Threads = None,
    width: Annotated[float, typer.Option("--width", help="ofa-mbv3 width: 1.0 or 1.2")] = 1.0,
    resolution: Annotated[int, typer.Option("--resolution", help="input resolution, 128..224 step 4")] = 128,
    input_size: Annotated[int | None, typer.Option(
        "--input-size", help="pixels fed to the net (default: the resolution); block keys stay the resolution's, "
                             "the accuracy records' dataset becomes NAME@<size>px")] = None,
    phases: Annotated[str, typer.Option("--phases", help="comma-separated, in order")] = "full,kernel,depth,expand",
    batch_size: Annotated[int, typer.Option("--batch-size", help="images per step and process")] = 32,
    max_batches: Annotated[int | None, typer.Option("--max-batches", help="cap on steps per epoch")] = None,
    lr: Annotated[float, typer.Option("--lr", help="base learning rate (SGD, cosine per phase)")] = 0.05,
    use_sandwich: Annotated[bool, typer.Option("--sandwich/--no-sandwich",
                                               help="largest + smallest + random sub-networks per step")] = True,
    n_random: Annotated[int, typer.Option("--n-random", help="random sub-networks per sandwich step")] = 2,
    distill: Annotated[bool, typer.Option("--distill/--no-distill",
                                          help="in-place distillation from the largest sub-network")] = True,
    augment: Annotated[bool, typer.Option("--augment/--no-augment",
                                          help="random distortions of training images (digits: rotate, zoom, "
                                               "shift; image folders: also mirror)")] = True,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    resume: Annotated[bool, typer.Option("--resume", help="continue the run saved in --out")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", help="no progress bars")] = False,
) -> None:
    """Train with progressive shrinking (full -> kernel -> depth -> expand). Under
    ``torchrun --nproc_per_node N -m budgetnas supernet train ...`` it trains with DDP."""
    from budgetnas.generator.supernet.train import TrainConfig, train

    cfg = TrainConfig(dataset=dataset, width=width, resolution=resolution, input_size=input_size,
                      phases=tuple(p.strip() for p in phases.split(",") if p.strip()), epochs=epochs,
                      batch_size=batch_size, max_batches=max_batches, lr=lr, sandwich=use_sandwich,
                      n_random=n_random, distill=distill, augment=augment, seed=seed, device=device,
                      threads=threads)
    ckpt = train(cfg, out, resume=resume, progress=not quiet)
    typer.echo(f"wrote {out} ({ckpt['dataset_name']}, {len(ckpt['history'])} epochs, "
               f"{ckpt['train_seconds']:.1f}s training)")


@app.command("import-ofa")
def import_ofa_cmd(
    path: Annotated[Path, typer.Argument(help="OFA's ofa_mbv3_d234_e346_k357_w1.2 checkpoint (.pth, as OFA "
                                              "publishes it: a state dict, bare or under 'state_dict')")],
    out: Annotated[Path, typer.Option("--out", help="our supernet checkpoint, for `supernet eval --checkpoint`")],
    resolution: Annotated[int, typer.Option("--resolution", help="input resolution of the sub-networks, "
                                                                 "128..224 step 4")] = 224,
) -> None:
    """Import Once-for-All's published ImageNet supernet (width 1.2): its sub-networks without training."""
    from budgetnas.generator.supernet import checkpoint as ck
    from budgetnas.generator.supernet.ofa_checkpoint import OFA_NET, as_checkpoint, import_ofa

    if out.exists():
        raise DataFileError(f"{out} exists: choose another --out")
    net = import_ofa(path, resolution)
    ck.save(out, as_checkpoint(net, path))
    typer.echo(f"wrote {out} ({OFA_NET} from {path}, resolution {resolution}; evaluate with "
               f"`supernet eval --checkpoint {out} --dataset imagefolder:PATH`)")


@app.command("eval")
def eval_cmd(
    checkpoint: Annotated[Path, typer.Option("--checkpoint", help="a `supernet train` or `supernet import-ofa` "
                                                                  "checkpoint")],
    out: Annotated[Path, typer.Option("--out", help="CSV with columns arch_str,accuracy")],
    archs: Annotated[int, typer.Option("--archs", help="how many uniformly sampled sub-networks")] = 0,
    arch: Annotated[list[str] | None, typer.Option("--arch", help="an architecture to evaluate (repeatable)")] = None,
    seed: Annotated[int, typer.Option("--seed", help="sampling seed")] = 0,
    dataset: Annotated[str | None, typer.Option("--dataset", help="override the checkpoint's dataset spec "
                                                                  "(needed for an imported one)")] = None,
    device: Annotated[str, typer.Option("--device", help="cpu, cuda, or auto (cuda when there is a GPU)")] = "auto",
    threads: Threads = None,
    calib_images: Annotated[int, typer.Option(
        "--calib-images", help="training images for BN recalibration (all of them if fewer)")] = 2000,
    server: Annotated[str | None, typer.Option("--server", help="LUT server URL: POST /v1/accuracy")] = None,
    token: Annotated[str | None, typer.Option("--token", envvar="BUDGETNAS_ADMIN_TOKEN",
                                              help="admin token for --server")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", help="no progress bars")] = False,
) -> None:
    """Top-1 of sub-networks (extracted, BN-recalibrated) on the validation split."""
    import torch

    from budgetnas.generator.supernet import checkpoint as ck
    from budgetnas.generator.supernet.data import Preprocess, load_dataset
    from budgetnas.generator.supernet.evaluate import eval_data, evaluate_archs
    from budgetnas.generator.supernet.network import OFASupernet
    from budgetnas.generator.supernet.records import AccuracyClient, make_records, write_csv
    from budgetnas.generator.supernet.train import record_dataset_name, resolve_device

    if archs < 0 or (archs == 0 and not arch):
        raise InvalidArgumentError("give --archs N (N >= 1) and/or --arch ARCH")
    if calib_images < 1:
        raise InvalidArgumentError(f"--calib-images must be >= 1, got {calib_images}")
    dev = resolve_device(device)
    if threads is not None:
        torch.set_num_threads(threads)
    ckpt = ck.load(checkpoint)
    if dataset is None and ckpt.get("dataset") is None:
        raise InvalidArgumentError(f"{checkpoint} names no dataset (imported from {ckpt['config'].get('imported')}): "
                                   "give --dataset imagefolder:PATH")
    preprocess = Preprocess.from_dict(ckpt.get("preprocess"))
    space = ck.space_of(ckpt)
    net = OFASupernet(space)
    try:
        net.load_state_dict(ckpt["state"])
    except (RuntimeError, KeyError) as exc:
        raise DataFileError(f"{checkpoint}: weights do not fit the supernet of {space.describe()}: "
                               f"{str(exc).splitlines()[0]}") from None
    chosen = [net.check_arch(a) for a in (arch or [])] + space.sample_many(archs, seed)
    names = [space.format(a) for a in chosen]
    client = AccuracyClient(server, token) if server else None
    try:
        if client is not None:
            client.check()
        data = load_dataset(dataset or ckpt["dataset"], int(ckpt["input_size"]), preprocess)
        if data.num_classes != space.num_classes:
            raise DataFileError(f"dataset {data.name} has {data.num_classes} classes; the checkpoint "
                                   f"was trained for {space.num_classes}")
        if not ckpt.get("complete"):
            typer.echo(f"warning: {checkpoint} is from an unfinished run (phase {ckpt['phase']}, "
                       f"epoch {ckpt['epoch']})", err=True)
        net.to(dev)
        accs = [s.top1 for s in evaluate_archs(net, chosen, eval_data(data, dev, calib_images), dev,
                                                 progress=not quiet)]
        write_csv(out, names, accs)
        typer.echo(f"wrote {out}: {len(names)} sub-networks, top1 {min(accs):.4f}..{max(accs):.4f}")
        if client is not None:
            source = f"supernet:{ck.sha256_of(checkpoint)[:12]}"
            name = record_dataset_name(data.name, int(ckpt["input_size"]), space.resolution)
            res = client.post(space.name, make_records(names, accs, name, source))
            typer.echo(f"posted to {server}: {res['inserted']} inserted, {res['updated']} updated "
                       f"(dataset {name}, source {source})")
    finally:
        if client is not None:
            client.close()
