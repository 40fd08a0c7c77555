"""Agent pieces without a server: spool, fact parsers, backend registry, CLI bad input, GPU backends."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from budgetnas.cli.agent import parse_cores
from budgetnas.cli.main import run
from budgetnas.core.errors import InvalidArgumentError, UnknownNameError
from budgetnas.device_agents.backends import BackendOptions, JobSpec, cores_to_mask, get_backend, list_backends
from budgetnas.device_agents.facts import parse_cpuinfo, parse_nvidia_smi
from budgetnas.device_agents.spool import Spool

FACTS = Path(__file__).parent / "fixtures" / "facts"


def test_spool_keeps_unsent_records_across_restarts(tmp_path: Path) -> None:
    path = tmp_path / "spool.jsonl"
    s = Spool(path)
    s.add("result", 7, "7:1:a", {"idempotency_key": "7:1:a", "stats": {"count": 1}})
    s.add("fail", 8, "8:1:b", {"error": "boom", "output": "..."})
    s.mark_sent("8:1:b")
    with path.open("a") as f:
        f.write('{"kind": "result", "job": 9, "ke')  # a crash mid-write leaves a torn line
    again = Spool(path)  # a restarted agent
    assert [(r["job"], r["key"]) for r in again.pending()] == [(7, "7:1:a")]
    again.mark_sent("7:1:a")
    assert again.pending() == []
    again.compact()
    assert path.read_text() == ""


def test_spool_compact_keeps_pending(tmp_path: Path) -> None:
    s = Spool(tmp_path / "s.jsonl")
    s.add("result", 1, "k1", {"x": 1})
    s.add("result", 2, "k2", {"x": 2})
    s.mark_sent("k1")
    s.compact()
    lines = [json.loads(ln) for ln in (tmp_path / "s.jsonl").read_text().splitlines()]
    assert lines == [{"kind": "result", "job": 2, "key": "k2", "body": {"x": 2}}]


def test_nvidia_smi_parser_on_captured_output() -> None:
    gpus = parse_nvidia_smi((FACTS / "nvidia_smi_h100.csv").read_text())
    assert len(gpus) == 2
    assert gpus[0] == {"index": 0, "name": "NVIDIA H100 80GB HBM3", "driver": "550.54.15", "memory_mib": 81559,
                       "pci_bus_id": "00000000:19:00.0"}
    assert parse_nvidia_smi("NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.") == []


def test_cpuinfo_parser_x86_and_arm() -> None:
    x86 = parse_cpuinfo((FACTS / "cpuinfo_x86.txt").read_text())
    assert x86["cpu_model"].startswith("Intel(R) Xeon(R) Platinum 8375C")
    assert (x86["logical_cpus"], x86["physical_cores"]) == (3, 2)
    assert {"avx2", "avx512f", "avx512_vnni", "fma"} <= set(x86["simd"])
    arm = parse_cpuinfo((FACTS / "cpuinfo_arm64.txt").read_text())
    assert arm["cpu_model"] == "Qualcomm Technologies, Inc SM8150" and arm["logical_cpus"] == 2
    assert {"asimd", "asimddp"} <= set(arm["simd"])


def test_cores_option_and_mask() -> None:
    assert parse_cores("0,2,4-6") == [0, 2, 4, 5, 6]
    assert parse_cores(None) is None
    with pytest.raises(InvalidArgumentError, match="--cores"):
        parse_cores("3-1")
    assert cores_to_mask([4, 5, 6, 7]) == "f0" and cores_to_mask([0]) == "1" and cores_to_mask(None) is None


def test_backend_registry() -> None:
    assert list_backends() == ["android-litert", "litert-cpu", "ort-cpu", "ort-cuda", "torch-cpu", "torch-cuda"]
    with pytest.raises(UnknownNameError, match="android-litert"):
        get_backend("tpu", BackendOptions())


def test_torch_cpu_backend_measures_a_block_and_a_model() -> None:
    be = get_backend("torch-cpu", BackendOptions(quick=True))
    key = "nor_conv_3x3-input:8x8x64-output:8x8x64"
    m = be.measure(JobSpec(1, "block", key, None, {"space": "nb201"}, 1, 1))
    # >= 1, not min_runs: a visit the reference workload found disturbed is dropped (busy machines)
    assert m.stats.count >= 1 and m.stats.median_ms is not None and m.stats.median_ms > 0
    assert m.environment["backend"] == "torch-cpu" and m.environment["threads"] == 1
    arch = "|nor_conv_3x3~0|+|none~0|skip_connect~1|+|none~0|none~1|avg_pool_3x3~2|"
    m2 = be.measure(JobSpec(2, "model", None, arch, {"space": "nb201"}, 1, 1))
    assert m2.stats.median_ms is not None and m2.stats.median_ms > m.stats.median_ms
    facts = be.facts()
    assert facts["kind"] == "cpu" and facts["runtime_version"].startswith("torch ")


def test_a_profiler_backend_measures_jobs_together_in_one_session() -> None:
    be = get_backend("torch-cpu", BackendOptions(quick=True))
    arch = "|nor_conv_3x3~0|+|none~0|skip_connect~1|+|none~0|none~1|avg_pool_3x3~2|"
    jobs = [JobSpec(1, "block", "nor_conv_3x3-input:8x8x64-output:8x8x64", None, {"space": "nb201"}, 1, 1),
            JobSpec(2, "block", "nor_conv_1x1-input:8x8x64-output:8x8x64", None, {"space": "nb201"}, 1, 1),
            JobSpec(3, "model", None, arch, {"space": "nb201"}, 1, 1),
            JobSpec(4, "block", "nor_conv_3x3-input:8x8x64-output:8x8x64", None, {"space": "nb201"}, 1, 2)]
    out = be.measure_together(jobs)
    assert sorted(out) == [1, 2, 3, 4]
    # a measurement each; not min_runs of them: on a busy machine the protocol drops a visit the reference
    # workload found disturbed (with 2 rounds, half an entry's samples)
    assert all(m.stats.count >= 1 and (m.stats.median_ms or 0) > 0 for m in out.values())
    # one session per runner: jobs 1-3 share one (1 thread), job 4 has its own (2 threads)
    assert [out[i].environment["measured_together"] for i in (1, 2, 3, 4)] == [3, 3, 3, 1]
    assert out[4].environment["threads"] == 2
    assert (out[3].stats.median_ms or 0) > (out[1].stats.median_ms or 0) > (out[2].stats.median_ms or 0)


def _torch_cuda() -> bool:
    import torch

    return bool(torch.cuda.is_available())


@pytest.mark.skipif(_torch_cuda(), reason="a GPU is present: the refusal path does not apply")
@pytest.mark.parametrize("backend", ["torch-cuda", "ort-cuda"])
def test_gpu_backends_refuse_to_start_without_a_gpu(backend: str, capsys: pytest.CaptureFixture[str]) -> None:
    code = run(["agent", "--server", "http://127.0.0.1:9", "--token", "t", "--name", "gpu0", "--backend", backend])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error: ") and "CUDA" in err[0]


@pytest.mark.gpu
@pytest.mark.skipif(not _torch_cuda(), reason="needs an NVIDIA GPU and a CUDA build of torch")
def test_torch_cuda_backend_on_a_real_gpu() -> None:
    be = get_backend("torch-cuda", BackendOptions(quick=True))
    m = be.measure(JobSpec(1, "block", "nor_conv_3x3-input:32x32x16-output:32x32x16", None, {"space": "nb201"},
                           None, 1))
    assert m.environment["batch"] == 64 and m.environment.get("gpu_model")
    assert m.stats.median_ms is not None and m.stats.median_ms > 0
    assert be.facts()["gpu_name"]


@pytest.mark.parametrize(("argv", "needle"), [
    (["--backend", "tpu"], "unknown backend 'tpu'"),
    (["--backend", "ort-cpu", "--adb", "127.0.0.1:5555"], "--adb and --benchmark-binary apply to"),
    (["--backend", "ort-cpu", "--protocol", "{nope"], "--protocol: not JSON"),
    (["--backend", "ort-cpu", "--protocol", "[1]"], "--protocol: must be a JSON object"),
    (["--backend", "ort-cpu", "--protocol", '{"warp": 9}'], "--protocol"),
    (["--backend", "ort-cpu", "--cores", "x"], "--cores"),
    (["--backend", "android-litert"], "needs --adb"),
    (["--backend", "android-litert", "--adb", "127.0.0.1:9"], "needs --benchmark-binary"),
    (["--backend", "android-litert", "--adb", "127.0.0.1:9", "--benchmark-binary", "/nonexistent/bm"], "no such file"),
    (["--backend", "ort-cpu", "--server", "localhost:8000"], "--server"),
])
def test_agent_cli_bad_input(argv: list[str], needle: str, capsys: pytest.CaptureFixture[str]) -> None:
    base = {"--server": "http://127.0.0.1:9", "--token": "t", "--name": "d"}
    for i in range(0, len(argv), 2):
        base.pop(argv[i], None)
    args = ["agent", *[x for kv in base.items() for x in kv], *argv]
    code = run(args)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("error: ") and needle in err[0], err


def test_android_backend_unreachable_phone_is_one_error_line(tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("litert_torch")
    binary = tmp_path / "benchmark_model"
    binary.write_text("#!/bin/sh\n")
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code = run(["agent", "--server", "http://127.0.0.1:9", "--token", "t", "--name", "p", "--backend",
                "android-litert", "--adb", f"127.0.0.1:{port}", "--benchmark-binary", str(binary)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "cannot connect to phone" in err[0]
