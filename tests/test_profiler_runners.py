"""Runner registry and real runs of each CPU runtime; CUDA runners fail clearly without a GPU."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import onnxruntime as ort
import pytest
import torch

from budgetnas.core.errors import DeviceUnavailableError, InvalidArgumentError, UnknownNameError
from budgetnas.profiler.artifacts import ArtifactCache
from budgetnas.profiler.protocol import Protocol, measure
from budgetnas.profiler.runners import get_runner, list_runners

KEY = "nor_conv_3x3-input:16x16x16-output:16x16x16"
HAS_CUDA = torch.cuda.is_available()


@pytest.fixture(scope="module")
def cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ArtifactCache]:
    yield ArtifactCache(tmp_path_factory.getbasetemp() / "bn-cache")


def test_registry_names() -> None:
    assert set(list_runners()) == {"ort-cpu", "ort-cuda", "torch-cpu", "torch-cuda", "litert-cpu"}
    with pytest.raises(UnknownNameError, match=r"unknown backend 'tvm'.*ort-cpu"):
        get_runner("tvm")
    with pytest.raises(InvalidArgumentError, match="threads"):
        get_runner("ort-cpu", threads=0)
    with pytest.raises(InvalidArgumentError, match="batch"):
        get_runner("ort-cpu", batch=0)


@pytest.mark.parametrize("name", ["ort-cpu", "torch-cpu", "litert-cpu"])
@pytest.mark.parametrize("batch", [1, 3])
def test_cpu_runner_times_a_block(name: str, batch: int, cache: ArtifactCache) -> None:
    if name == "litert-cpu":
        pytest.importorskip("litert_torch")
    runner = get_runner(name, threads=1, batch=batch, cache=cache, exporter="torchscript")
    prepared = runner.prepare(KEY)
    ms = runner.time(prepared, 5)
    assert ms.shape == (5,) and np.all(ms > 0)
    env = runner.environment()
    assert env["backend"] == name and env["threads"] == 1 and env["batch"] == batch
    assert env["runtime_version"] == runner.runtime_version() and env["cpu_model"]


def test_ort_binding_runs_the_real_graph(cache: ArtifactCache) -> None:
    """The IOBinding call fills the bound output with the block's real result."""
    from budgetnas.profiler.targets import block_target

    runner = get_runner("ort-cpu", cache=cache, exporter="torchscript")
    prepared = runner.prepare(KEY)
    prepared.call()
    out = prepared.keep[3][0].numpy()
    t = block_target(KEY)
    with torch.inference_mode():
        want = t.build()(t.example()).numpy()
    np.testing.assert_allclose(out, want, rtol=1e-3, atol=1e-5)


def test_bigger_block_is_slower(cache: ArtifactCache) -> None:
    """Sanity of the measurement: 4x the spatial work of the same conv takes longer (ratio in one run)."""
    runner = get_runner("ort-cpu", cache=cache, exporter="torchscript")
    small = measure(runner, "nor_conv_3x3-input:8x8x32-output:8x8x32", Protocol.quick())
    big = measure(runner, "nor_conv_3x3-input:32x32x32-output:32x32x32", Protocol.quick())
    assert big.median_ms is not None and small.median_ms is not None
    assert big.median_ms > small.median_ms


@pytest.mark.skipif(HAS_CUDA, reason="checks the no-GPU error path")
def test_torch_cuda_without_gpu() -> None:
    with pytest.raises(DeviceUnavailableError, match="CUDA"):
        get_runner("torch-cuda")


@pytest.mark.skipif("CUDAExecutionProvider" in ort.get_available_providers(), reason="checks the no-GPU error path")
def test_ort_cuda_without_gpu() -> None:
    with pytest.raises(DeviceUnavailableError, match="onnxruntime-gpu"):
        get_runner("ort-cuda")


@pytest.mark.gpu
@pytest.mark.skipif(not HAS_CUDA, reason="needs an NVIDIA GPU")
def test_torch_cuda_measures_with_events(cache: ArtifactCache) -> None:
    runner = get_runner("torch-cuda", cache=cache)
    assert runner.batch == 64
    stats = measure(runner, KEY, Protocol.quick())
    assert stats.count >= 10 and stats.median_ms is not None and stats.median_ms > 0
    assert runner.environment()["gpu_model"]


@pytest.mark.gpu
@pytest.mark.skipif("CUDAExecutionProvider" not in ort.get_available_providers(), reason="needs onnxruntime-gpu")
def test_ort_cuda_measures(cache: ArtifactCache) -> None:
    runner = get_runner("ort-cuda", cache=cache, exporter="torchscript")
    stats = measure(runner, KEY, Protocol.quick())
    assert stats.median_ms is not None and stats.median_ms > 0
