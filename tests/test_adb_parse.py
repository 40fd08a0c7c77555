"""The benchmark_model output parser on captured output of every known format, getprop and sysfs."""

from __future__ import annotations

from pathlib import Path

import pytest

from budgetnas.device_agents.adb.benchmark import PhoneProtocol, combine_rounds
from budgetnas.device_agents.adb.parse import (
    BenchmarkOutputError,
    device_facts,
    failure_reason,
    parse_benchmark_output,
    parse_getprop,
    parse_stat_line,
    parse_temperatures,
)

FIX = Path(__file__).parent / "fixtures" / "benchmark_model"


def fixture(name: str) -> str:
    return (FIX / name).read_text()


def test_current_format() -> None:
    r = parse_benchmark_output(fixture("current_tf2_15.txt"))
    assert r.format == "current"
    assert r.avg_ms == pytest.approx(0.1249)
    assert (r.count, r.std_ms, r.min_ms, r.max_ms) == (7810, pytest.approx(0.019), pytest.approx(0.104),
                                                     pytest.approx(0.68))
    assert r.init_ms == pytest.approx(3.21) and r.first_ms == pytest.approx(0.212)
    assert r.warmup_avg_ms == pytest.approx(0.1273) and r.warmup_runs == 2361
    assert r.median_ms is None


def test_older_format() -> None:
    r = parse_benchmark_output(fixture("older_tf2_1.txt"))
    assert r.format == "older"
    assert r.avg_ms == pytest.approx(0.145394)
    assert r.count == 6836 and r.std_ms == pytest.approx(0.009) and r.init_ms == pytest.approx(0.709)
    assert r.warmup_avg_ms == pytest.approx(0.150248)


def test_oldest_no_stats_format() -> None:
    r = parse_benchmark_output(fixture("older_tf1_13_nostats.txt"))
    assert r.format == "older"
    assert r.avg_ms == pytest.approx(24.1903)
    assert r.count == 50 and r.min_ms == pytest.approx(23.876) and r.max_ms == pytest.approx(25.207)
    assert r.warmup_avg_ms == pytest.approx(25.116)


def test_litert_absl_prefixed_with_percentiles() -> None:
    r = parse_benchmark_output(fixture("litert_absl.txt"))
    assert r.format == "current"
    assert r.avg_ms == pytest.approx(0.37121)
    assert r.median_ms == pytest.approx(0.366) and r.count == 2683
    assert r.init_ms == pytest.approx(21.177)


def test_stat_lines_only() -> None:
    r = parse_benchmark_output(fixture("truncated_stat_lines.txt"))
    assert r.format == "stat-lines"
    assert r.avg_ms == pytest.approx(0.2917) and r.count == 3420
    assert r.warmup_avg_ms == pytest.approx(0.2936) and r.warmup_runs == 1702


def test_stat_line_fields() -> None:
    s = parse_stat_line("INFO: count=50 first=24311 curr=23985 min=23876 max=25207 avg=24190.3 std=301")
    assert s is not None and s.count == 50 and s.avg_us == 24190.3 and s.std_us == 301 and s.first_us == 24311
    assert parse_stat_line("count=1 curr=25116") is None  # no average: the TF 1.13 warm-up line
    assert parse_stat_line("INFO: Num threads: [1]") is None


def test_failures_raise_with_the_reason() -> None:
    with pytest.raises(BenchmarkOutputError, match=r"Failed to load model /data/local/tmp/broken\.tflite"):
        parse_benchmark_output(fixture("model_load_failure.txt"))
    with pytest.raises(BenchmarkOutputError, match="no output"):
        parse_benchmark_output("")
    with pytest.raises(BenchmarkOutputError, match="not found"):
        parse_benchmark_output("/system/bin/sh: /data/local/tmp/benchmark_model: not found\n")
    assert failure_reason("all good") is None


def test_getprop_and_facts() -> None:
    props = parse_getprop(fixture("getprop_pixel.txt"))
    assert props["ro.product.model"] == "Pixel 7"
    f = device_facts(props)
    assert f == {"kind": "android", "manufacturer": "Google", "model": "Pixel 7", "device": "panther", "soc": "GS201",
                 "board": "panther", "android": "14", "sdk": "34", "abi": "arm64-v8a",
                 "build": "google/panther/panther:14/UQ1A.240205.004/11269751:user/release-keys"}
    # an older phone without ro.soc.model falls back to the board platform
    assert device_facts({"ro.board.platform": "msm8998"})["soc"] == "msm8998"


def test_temperatures_units() -> None:
    # battery in tenths, zones in millidegrees, a disabled zone reading -273000 and junk dropped
    assert parse_temperatures("312\n38500\n-273000\nfoo\n41000\n") == [31.2, 38.5, 41.0]
    assert parse_temperatures("") == []


def test_combine_rounds_pools_and_takes_median_of_rounds() -> None:
    a = parse_benchmark_output(fixture("current_tf2_15.txt"))
    b = parse_benchmark_output(fixture("truncated_stat_lines.txt"))
    s = combine_rounds([a, a, b], PhoneProtocol(rounds=3))
    assert s.count == 7810 * 2 + 3420
    assert s.median_ms == pytest.approx(0.1249)  # the tool printed no median: median of round averages
    assert s.min_ms == pytest.approx(0.104)
    assert a.avg_ms < s.mean_ms < b.avg_ms
    assert s.noisy  # round averages 0.125 vs 0.292 ms
    one = combine_rounds([parse_benchmark_output(fixture("litert_absl.txt"))], PhoneProtocol(rounds=1))
    assert one.median_ms == pytest.approx(0.366) and not one.noisy
