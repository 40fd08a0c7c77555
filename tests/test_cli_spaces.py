from __future__ import annotations

import json
import subprocess
import sys

import pytest

from budgetnas.cli.main import run
from budgetnas.spaces import get_space


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = run(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_spaces_list(capsys) -> None:
    code, out, _ = cli(capsys, "spaces", "list")
    assert code == 0
    assert [line.split("\t")[0] for line in out.splitlines()] == ["nb201", "ofa-mbv3"]


def test_spaces_sample_is_canonical_and_seeded(capsys) -> None:
    code, out, _ = cli(capsys, "spaces", "sample", "ofa-mbv3", "-n", "5", "--seed", "4", "--resolution", "192")
    assert code == 0
    lines = out.split()
    sp = get_space("ofa-mbv3", resolution=192)
    assert len(lines) == 5 and all(sp.format(sp.parse(s)) == s and s.startswith("w1.2_r192|") for s in lines)
    assert cli(capsys, "spaces", "sample", "ofa-mbv3", "-n", "5", "--seed", "4", "--resolution", "192")[1].split() == lines


def test_spaces_keys_matches_space(capsys) -> None:
    code, out, _ = cli(capsys, "spaces", "keys", "ofa-mbv3", "--width", "1.0", "--resolution", "160")
    assert code == 0
    assert out.split() == get_space("ofa-mbv3", width=1.0, resolution=160).all_block_keys()


def test_spaces_describe_json(capsys) -> None:
    arch = "|nor_conv_3x3~0|+|nor_conv_3x3~0|avg_pool_3x3~1|+|skip_connect~0|nor_conv_3x3~1|skip_connect~2|"
    code, out, _ = cli(capsys, "spaces", "describe", "nb201", arch, "--json")
    assert code == 0
    obj = json.loads(out)
    assert obj["arch"] == arch
    assert obj["flops_m"] == pytest.approx(113.95137, rel=1e-6)
    assert obj["params_m"] == pytest.approx(0.802426, rel=1e-6)
    assert obj["block_keys"] == get_space("nb201").block_keys(get_space("nb201").parse(arch))
    code, out, _ = cli(capsys, "spaces", "describe", "ofa-mbv3", json.dumps({"ks": [3] * 20, "e": [3] * 20, "d": [2] * 5}))
    assert code == 0 and "flops" in out


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["spaces", "sample", "nope"], "unknown search space 'nope'"),
        (["spaces", "keys", "ofa-mbv3", "--resolution", "230"], "resolution 230"),
        (["spaces", "keys", "nb201", "--width", "1.2"], "--width applies to ofa-mbv3 only"),
        (["spaces", "describe", "nb201", "|bad~0|+|none~0|none~1|+|none~0|none~1|none~2|"], "position 0 (edge 1<-0)"),
        (["spaces", "describe", "ofa-mbv3", "w1.2_r224|k9e3,k3e3|k3e3,k3e3|k3e3,k3e3|k3e3,k3e3|k3e3,k3e3"],
         "unit 1 layer 1 kernel: 9"),
        (["spaces", "sample", "nb201", "-n", "0"], "-n"),
    ],
)
def test_spaces_bad_input_is_one_line_exit_2(capsys, args: list[str], needle: str) -> None:
    code, out, err = cli(capsys, *args)
    assert code == 2
    assert needle in err
    assert "Traceback" not in err and out == ""


def test_console_script_exits_2_without_traceback() -> None:
    proc = subprocess.run([sys.executable, "-m", "budgetnas", "spaces", "describe", "nb201", "junk"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.startswith("error: nb201:") and proc.stderr.count("\n") == 1
