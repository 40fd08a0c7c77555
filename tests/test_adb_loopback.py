"""The loopback ADB endpoint against two real clients (adb-shell and Debian's adb), and the phone
benchmark path running real LiteRT through it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from budgetnas.device_agents.adb.benchmark import BenchmarkRunError, PhoneBenchmark, PhoneProtocol
from budgetnas.device_agents.adb.client import AdbClient, PhoneError
from tests.adb_loopback import LoopbackPhone, adb_binary

FIXTURES = Path(__file__).parent / "fixtures"
TINY_TFLITE = FIXTURES / "nor_conv_1x1-8x8x16.tflite"
QUICK = PhoneProtocol(threads=1, warmup_runs=2, num_runs=20, min_secs=0.05, warmup_min_secs=0.02, rounds=2,
                      cpu_mask="1", cool_below_c=45.0, max_cool_wait_s=10.0)


def standin_binary(directory: Path) -> Path:
    """The stand-in benchmark_model as the user's "binary": the script behind a #! line."""
    path = directory / "benchmark_model"
    path.write_text(f"#!{sys.executable}\n" + (Path(__file__).parent / "standin_benchmark_model.py").read_text())
    path.chmod(0o755)
    return path


@pytest.fixture
def phone(tmp_path: Path) -> Iterator[LoopbackPhone]:
    with LoopbackPhone(tmp_path / "phone") as p:
        yield p


def test_adb_shell_client_shell_push_pull_stat(phone: LoopbackPhone, tmp_path: Path) -> None:
    c = AdbClient(phone.address)
    assert c.shell("echo hello; echo $((6 * 7))") == "hello\n42\n"
    sock = c._dev._io_manager._transport._connection
    assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
    blob = os.urandom(300_000)
    (tmp_path / "blob").write_bytes(blob)
    t0 = time.perf_counter()
    c.push(tmp_path / "blob", "/data/local/tmp/blob", 0o640)
    assert time.perf_counter() - t0 < 2.0  # 6 s with Nagle on
    assert (phone.tmp / "blob").read_bytes() == blob
    assert (phone.tmp / "blob").stat().st_mode & 0o777 == 0o640
    mode, size, _ = c.stat("/data/local/tmp/blob")
    assert size == 300_000 and mode & 0o777 == 0o640
    assert c.stat("/data/local/tmp/absent") == (0, 0, 0)
    c.pull("/data/local/tmp/blob", tmp_path / "back")
    assert (tmp_path / "back").read_bytes() == blob
    assert not c.ensure_file(tmp_path / "blob", "/data/local/tmp/blob")  # same size: not pushed again
    with pytest.raises(PhoneError, match="pull"):
        c.pull("/data/local/tmp/absent", tmp_path / "x")
    c.close()


def test_facts_governor_and_temperature(phone: LoopbackPhone) -> None:
    c = AdbClient(phone.address)
    f = c.facts()
    assert (f["model"], f["soc"], f["android"], f["abi"]) == ("Pixel 7 (loopback)", "GS201", "14", "arm64-v8a")
    assert f["governor"] == "schedutil" and f["cpus"] == 8
    assert c.temperature() == pytest.approx(31.2)


def test_wait_cool_blocks_until_below_threshold(phone: LoopbackPhone) -> None:
    phone.set_temperature(47.0)
    threading.Timer(0.6, phone.set_temperature, args=(35.0,)).start()
    c = AdbClient(phone.address)
    t0 = time.monotonic()
    t = c.wait_cool(40.0, max_wait_s=10.0, poll_s=0.1)
    assert t is not None and t < 40.0
    assert time.monotonic() - t0 >= 0.5


def test_benchmark_runs_real_litert_on_the_phone(phone: LoopbackPhone, tmp_path: Path) -> None:
    bench = PhoneBenchmark(AdbClient(phone.address), standin_binary(tmp_path), QUICK)
    stats, env, output = bench.measure(TINY_TFLITE)
    # benchmark_model prints the minimum in whole microseconds: a run of this tiny model under 1 us on a
    # quiet machine reads 0 (seen in a fresh-clone CI run), while the average keeps its fraction
    assert stats.count >= 2 * QUICK.num_runs and 0 <= stats.min_ms <= stats.median_ms  # type: ignore[operator]
    assert stats.median_ms is not None and 0 < stats.median_ms < 100.0
    assert env["format"] == "current" and len(env["round_avg_ms"]) == 2 and env["temperature_c"] == [31.2, 31.2]
    assert "Inference timings in us" in output
    runs = [c for c in phone.shell_commands if "--graph=" in c]
    assert len(runs) == 2 and runs[0].startswith("cd /data/local/tmp && taskset 1 /data/local/tmp/benchmark_model")
    assert "--num_threads=1" in runs[0] and "--num_runs=20" in runs[0] and "--warmup_runs=2" in runs[0]
    # the model is pushed once under its content hash, the binary once
    names = sorted(p.name for p in phone.tmp.iterdir())
    assert len(names) == 2 and names[1] == "benchmark_model" and names[0].endswith(".tflite")


def test_model_that_fails_to_load_raises_with_output(phone: LoopbackPhone, tmp_path: Path) -> None:
    broken = tmp_path / "broken.tflite"
    broken.write_bytes(b"not a flatbuffer" * 10)
    bench = PhoneBenchmark(AdbClient(phone.address), standin_binary(tmp_path), QUICK)
    with pytest.raises(BenchmarkRunError, match="Failed to load model") as info:
        bench.measure(broken)
    assert "Benchmarking failed" in info.value.output and "__budgetnas_rc=1" in info.value.output


def test_binary_that_prints_nothing_parseable(phone: LoopbackPhone, tmp_path: Path) -> None:
    fake = tmp_path / "benchmark_model"
    fake.write_text("#!/bin/sh\necho 'usage: benchmark_model --graph=...'\n")
    bench = PhoneBenchmark(AdbClient(phone.address), fake, QUICK)
    with pytest.raises(BenchmarkRunError, match="no timings") as info:
        bench.measure(TINY_TFLITE)
    assert "usage: benchmark_model" in info.value.output


def test_phone_that_disconnects_mid_run(phone: LoopbackPhone, tmp_path: Path) -> None:
    c = AdbClient(phone.address, timeout_s=3.0)
    bench = PhoneBenchmark(c, standin_binary(tmp_path), QUICK)
    phone.disconnect_on = "--graph="
    with pytest.raises(PhoneError, match=r"127\.0\.0\.1"):
        bench.measure(TINY_TFLITE)
    phone.disconnect_on = None
    assert c.shell("echo back") == "back\n"  # the client reconnects on the next call


# ---- Debian's adb client, through its own server -------------------------------------------
@pytest.fixture
def adb_server(tmp_path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    adb = adb_binary()
    if adb is None:
        pytest.skip("Debian's adb is not installed (apt-get install adb; .ci/run installs it)")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = str(s.getsockname()[1])
    env = dict(os.environ, HOME=str(tmp_path), ANDROID_ADB_SERVER_PORT=port)
    subprocess.run([adb, "-P", port, "start-server"], env=env, check=True, capture_output=True, timeout=30)
    try:
        yield port, env
    finally:
        subprocess.run([adb, "-P", port, "kill-server"], env=env, capture_output=True, timeout=30)


def test_debian_adb_connects_pushes_pulls_and_runs_shell(phone: LoopbackPhone, adb_server: tuple[str, dict[str, str]],
                                                           tmp_path: Path) -> None:
    port, env = adb_server

    def adb(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["adb", "-P", port, *args], env=env, capture_output=True, text=True, timeout=30)

    assert "connected to" in adb("connect", phone.address).stdout
    deadline = time.monotonic() + 10
    while f"{phone.address}\tdevice" not in adb("devices").stdout:
        assert time.monotonic() < deadline, adb("devices").stdout
        time.sleep(0.2)
    blob = os.urandom(200_000)
    (tmp_path / "up.bin").write_bytes(blob)
    r = adb("-s", phone.address, "push", str(tmp_path / "up.bin"), "/data/local/tmp/up.bin")
    assert r.returncode == 0, r.stderr
    assert (phone.tmp / "up.bin").read_bytes() == blob
    r = adb("-s", phone.address, "pull", "/data/local/tmp/up.bin", str(tmp_path / "down.bin"))
    assert r.returncode == 0, r.stderr
    assert (tmp_path / "down.bin").read_bytes() == blob
    r = adb("-s", phone.address, "shell", "getprop ro.product.model; ls /data/local/tmp")
    assert r.stdout.splitlines() == ["Pixel 7 (loopback)", "up.bin"]
    r = adb("-s", phone.address, "pull", "/data/local/tmp/absent", str(tmp_path / "x"))
    assert r.returncode != 0 and "does not exist" in r.stdout + r.stderr
    assert {"CNXN", "OPEN", "WRTE", "OKAY", "CLSE"} <= set(phone.log)
