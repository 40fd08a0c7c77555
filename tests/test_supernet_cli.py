"""``budgetnas supernet train/eval`` end to end on tiny settings, resume, bad input, DDP, the real server."""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from budgetnas.cli.main import run
from budgetnas.generator.supernet import checkpoint
from budgetnas.generator.supernet.train import TrainConfig, train
from tests.server_support import *  # noqa: F403
from tests.server_support import ADMIN

# Tiny: 32 px inputs (block keys stay r128's), one step of 4 images per phase.
TINY = ["--threads", "1", "--input-size", "32", "--epochs", "1", "--max-batches", "1", "--batch-size", "4", "--n-random", "1",
        "--quiet"]
SMALLEST = "w1.0_r128|" + "|".join(["k3e3,k3e3"] * 5)


def one_error_line(capsys: pytest.CaptureFixture[str], *needles: str) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: "), err
    for n in needles:
        assert n in err[0], err[0]
    return err[0]


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sn") / "sn.ckpt"
    assert run(["supernet", "train", "--out", str(path), "--phases", "full,expand", *TINY]) == 0
    return path


def test_train_writes_a_complete_checkpoint(ckpt: Path) -> None:
    c = checkpoint.load(ckpt)
    assert c["complete"] and c["dataset_name"] == "digits@32px" and c["input_size"] == 32
    assert [h["phase"] for h in c["history"]] == ["full", "expand"]
    assert c["space"] == {"space": "ofa-mbv3", "width": 1.0, "resolution": 128, "num_classes": 10}
    assert not list(ckpt.parent.glob(".*.tmp"))  # atomic writes leave no temp files


def test_eval_writes_csv(ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "acc.csv"
    assert run(["supernet", "eval", "--checkpoint", str(ckpt), "--archs", "2", "--arch", SMALLEST,
                "--calib-images", "16", "--out", str(out), "--quiet", "--threads", "1"]) == 0
    rows = list(csv.DictReader(out.open()))
    assert list(rows[0]) == ["arch_str", "accuracy"]
    assert rows[0]["arch_str"] == SMALLEST and len(rows) == 3
    assert all(0.0 <= float(r["accuracy"]) <= 1.0 for r in rows)
    assert "wrote" in capsys.readouterr().out


def test_existing_out_needs_resume_and_same_settings(ckpt: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = ckpt.read_bytes()
    assert run(["supernet", "train", "--out", str(ckpt), "--phases", "full,expand", *TINY]) == 2
    one_error_line(capsys, "--resume")
    assert run(["supernet", "train", "--out", str(ckpt), "--phases", "full,expand", "--resume", *TINY[:-5],
                "--batch-size", "8", "--n-random", "1", "--quiet"]) == 2
    one_error_line(capsys, "batch_size")
    assert ckpt.read_bytes() == before


def test_resume_after_interruption_matches_an_uninterrupted_run(tmp_path: Path) -> None:
    cfg = TrainConfig(input_size=32, phases=("full", "kernel"), epochs=1, max_batches=1, batch_size=4, n_random=0,
                      threads=1)
    whole = train(cfg, tmp_path / "whole.ckpt", progress=False, log=lambda s: None)

    def stop(_: str) -> None:
        raise KeyboardInterrupt  # after the first epoch's checkpoint is on disk

    part = tmp_path / "part.ckpt"
    with pytest.raises(KeyboardInterrupt):
        train(cfg, part, progress=False, log=stop)
    saved = checkpoint.load(part)
    assert not saved["complete"] and saved["phase"] == 1 and len(saved["history"]) == 1
    resumed = train(cfg, part, resume=True, progress=False, log=lambda s: None)
    assert resumed["complete"] and [h["phase"] for h in resumed["history"]] == ["full", "kernel"]
    for k, v in whole["state"].items():
        assert torch.equal(v, resumed["state"][k]), k


def test_imagefolder_dataset_trains(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from PIL import Image

    root = tmp_path / "imgs"
    for c, colour in (("red", (255, 0, 0)), ("blue", (0, 0, 255))):
        (root / c).mkdir(parents=True)
        for i in range(5):
            Image.new("RGB", (40 + i, 30), colour).save(root / c / f"{i}.png")
    out = tmp_path / "if.ckpt"
    assert run(["supernet", "train", "--dataset", f"imagefolder:{root}", "--out", str(out), "--phases", "full",
                *TINY[:8], "--batch-size", "2", "--quiet"]) == 0
    c = checkpoint.load(out)
    assert c["classes"] == ["blue", "red"] and c["space"]["num_classes"] == 2


@pytest.mark.parametrize("case", ["missing", "empty", "unreadable", "unknown", "one-class"])
def test_bad_dataset_is_one_error_and_writes_nothing(case: str, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "data"
    spec = f"imagefolder:{root}"
    if case == "empty":
        (root / "a").mkdir(parents=True)
        (root / "b").mkdir()
    elif case in ("unreadable", "one-class"):
        from PIL import Image

        for c in ("a", "b") if case == "unreadable" else ("a",):
            (root / c).mkdir(parents=True)
            for i in range(3):
                Image.new("RGB", (8, 8)).save(root / c / f"{i}.png")
        if case == "unreadable":
            (root / "b" / "broken.png").write_bytes(b"not a png at all")
    elif case == "unknown":
        spec = "cifar10"
    out = tmp_path / "x.ckpt"
    assert run(["supernet", "train", "--dataset", spec, "--out", str(out), *TINY]) == 2
    needle = {"missing": "not a directory", "empty": "no images", "unreadable": "broken.png",
              "unknown": "unknown dataset", "one-class": "at least 2 class"}[case]
    one_error_line(capsys, needle)
    assert not out.exists() and list(tmp_path.glob("*.ckpt")) == []


@pytest.mark.parametrize("arch", [
    "w1.0_r128|k9e3,k3e3|k3e3,k3e3|k3e3,k3e3|k3e3,k3e3|k3e3,k3e3",  # kernel outside the space
    "w1.0_r128|k3e3|k3e3,k3e3|k3e3,k3e3|k3e3,k3e3|k3e3,k3e3",  # depth 1
    "w1.0_r160|k3e3,k3e3|k3e3,k3e3|k3e3,k3e3|k3e3,k3e3|k3e3,k3e3",  # not this supernet's resolution
    "|edge~0|",
])
def test_eval_arch_outside_the_space(arch: str, ckpt: Path, tmp_path: Path,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "acc.csv"
    assert run(["supernet", "eval", "--checkpoint", str(ckpt), "--arch", arch, "--out", str(out)]) == 2
    one_error_line(capsys)
    assert not out.exists()


def test_eval_rejects_foreign_checkpoints(ckpt: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    other = checkpoint.load(ckpt)
    other["space"] = {"space": "nb201"}
    nb = tmp_path / "nb.ckpt"
    torch.save(other, nb)
    junk = tmp_path / "junk.ckpt"
    junk.write_text("hello")
    out = tmp_path / "acc.csv"
    for path, needle in ((nb, "'nb201'"), (junk, "not a readable supernet checkpoint"),
                         (tmp_path / "none.ckpt", "does not exist")):
        assert run(["supernet", "eval", "--checkpoint", str(path), "--archs", "1", "--out", str(out)]) == 2
        one_error_line(capsys, needle)
    assert not out.exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-CUDA message")
def test_cuda_without_cuda_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "x.ckpt"
    assert run(["supernet", "train", "--device", "cuda", "--out", str(out), *TINY]) == 2
    one_error_line(capsys, "CUDA is not available")
    assert not out.exists()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs an NVIDIA GPU")
def test_cuda_train_and_eval(tmp_path: Path) -> None:
    out = tmp_path / "gpu.ckpt"
    assert run(["supernet", "train", "--device", "cuda", "--out", str(out), *TINY]) == 0
    acc = tmp_path / "acc.csv"
    assert run(["supernet", "eval", "--device", "cuda", "--checkpoint", str(out), "--archs", "2",
                "--calib-images", "16", "--out", str(acc), "--quiet"]) == 0


def test_torchrun_two_processes_gloo(tmp_path: Path) -> None:
    torchrun = Path(sys.executable).with_name("torchrun")
    if not torchrun.exists():
        torchrun = Path(shutil.which("torchrun") or "torchrun")
    out = tmp_path / "ddp.ckpt"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([str(torchrun), "--standalone", "--nproc_per_node", "2", "-m", "budgetnas",
                           "supernet", "train", "--out", str(out), "--phases", "full,depth", *TINY],
                          capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    c = checkpoint.load(out)
    assert c["complete"] and len(c["history"]) == 2


def test_eval_posts_records_to_the_lut_server(ckpt: Path, tmp_path: Path, live) -> None:
    import httpx

    out = tmp_path / "acc.csv"
    assert run(["supernet", "eval", "--checkpoint", str(ckpt), "--archs", "2", "--calib-images", "16",
                "--out", str(out), "--server", live.url, "--token", ADMIN, "--quiet"]) == 0
    rows = list(csv.DictReader(out.open()))
    source = f"supernet:{checkpoint.sha256_of(ckpt)[:12]}"
    got = httpx.get(f"{live.url}/v1/accuracy", params={"space": "ofa-mbv3", "source": source}).json()
    assert got["total"] == 2
    stored = {r["arch"]: r for r in got["records"]}
    for row in rows:
        rec = stored[row["arch_str"]]
        assert rec["dataset"] == "digits@32px" and rec["metric"] == "top1"
        assert rec["value"] == pytest.approx(float(row["accuracy"]), abs=1e-6)
    # posting again updates instead of duplicating (upsert on space+arch+dataset+metric+source)
    assert run(["supernet", "eval", "--checkpoint", str(ckpt), "--archs", "2", "--calib-images", "16",
                "--out", str(out), "--server", live.url, "--token", ADMIN, "--quiet"]) == 0
    assert httpx.get(f"{live.url}/v1/accuracy", params={"source": source}).json()["total"] == 2


def test_eval_server_errors(ckpt: Path, tmp_path: Path, live, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "acc.csv"
    assert run(["supernet", "eval", "--checkpoint", str(ckpt), "--archs", "1", "--calib-images", "8",
                "--out", str(out), "--server", live.url, "--token", "wrong", "--quiet"]) == 2
    one_error_line(capsys, "HTTP 401")
    # the evaluation is kept (a complete file) even though the records were refused
    assert len(list(csv.DictReader(out.open()))) == 1
    out.unlink()
    assert run(["supernet", "eval", "--checkpoint", str(ckpt), "--archs", "1", "--out", str(out),
                "--server", "http://127.0.0.1:9", "--token", ADMIN, "--quiet"]) == 2
    one_error_line(capsys, "127.0.0.1:9")
    assert not out.exists()  # unreachable server: checked before any evaluation
