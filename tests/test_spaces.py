from __future__ import annotations

import csv
import itertools
import json

import numpy as np
import pytest
import yaml

from budgetnas.core.errors import (
    InvalidArchitectureError,
    InvalidArgumentError,
    InvalidBlockKeyError,
    UnknownNameError,
)
from budgetnas.spaces import BlockKey, get_space, list_spaces, parse_block_key, space_from_description
from budgetnas.spaces.ofa_mbv3 import RESOLUTIONS, make_divisible


def test_registry_lists_both_spaces_and_rejects_unknown() -> None:
    assert list_spaces() == ["nb201", "ofa-mbv3"]
    with pytest.raises(UnknownNameError, match=r"unknown search space 'x'; choose one of: nb201, ofa-mbv3"):
        get_space("x")


@pytest.mark.parametrize("resolution", list(range(160, 225, 4)))
def test_ofa_keys_equal_note10_lut_keys(ofa_lut_dir, resolution: int) -> None:
    ref = yaml.safe_load((ofa_lut_dir / f"{resolution}_lookup_table.yaml").read_text())
    keys = get_space("ofa-mbv3", width=1.2, resolution=resolution).all_block_keys()
    assert len(ref) == 96
    assert set(keys) == set(ref)
    assert len(keys) == 96


def test_ofa_width_1_0_keys_use_ofa_channel_plan() -> None:
    keys = get_space("ofa-mbv3", width=1.0, resolution=224).all_block_keys()
    assert "Conv-input:224x224x3-output:112x112x16" in keys
    assert "Conv_2-input:1x1x960-output:1x1x1280" in keys
    assert len(keys) == 96


def test_nb201_all_rows_roundtrip_and_flops_params_match(nb201_csv) -> None:
    sp = get_space("nb201")
    rows = list(csv.DictReader(nb201_csv.open()))
    assert len(rows) == 15625
    seen = set()
    for row in rows:
        arch = sp.parse(row["arch_str"])
        assert sp.format(arch) == row["arch_str"]
        seen.add(arch)
        assert sp.flops(arch) / 1e6 == pytest.approx(float(row["flops_M"]), rel=1e-4)
        assert sp.params(arch) / 1e6 == pytest.approx(float(row["params_M"]), rel=1e-4)
    assert len(seen) == 15625


@pytest.mark.parametrize("name", ["ofa-mbv3", "nb201"])
def test_roundtrip_tokens_strings_and_features(name: str) -> None:
    sp = get_space(name)
    archs = sp.sample_many(200, seed=3)
    for a in archs:
        assert sp.parse(sp.format(a)) == a
        assert sp.from_tokens(sp.to_tokens(a)) == a
        f = sp.features(a)
        assert f.shape == (sp.feature_dim,) and f.dtype == np.float32
        assert set(np.unique(f)) <= {0.0, 1.0}
    # seeded sampling is reproducible and not constant
    assert [sp.format(a) for a in sp.sample_many(20, seed=3)] == [sp.format(a) for a in archs[:20]]
    assert len({sp.format(a) for a in archs}) > 150


def test_sampling_is_uniform_over_decisions() -> None:
    sp = get_space("nb201")
    toks = sp.token_matrix(sp.sample_many(5000, seed=0))
    freq = np.bincount(toks.ravel(), minlength=5) / toks.size
    assert np.all(np.abs(freq - 0.2) < 0.02)


def test_mutation_and_crossover_stay_in_space_and_change_things() -> None:
    sp = get_space("ofa-mbv3")
    rng = np.random.default_rng(0)
    a, b = sp.sample_many(2, seed=1)
    assert sp.mutate(a, 0.0, rng) == a
    mutated = [sp.mutate(a, 0.3, rng) for _ in range(20)]
    assert any(m != a for m in mutated)
    children = [sp.crossover(a, b, rng) for _ in range(20)]
    ta, tb = sp.to_tokens(a), sp.to_tokens(b)
    for c in children:
        for i, t in enumerate(sp.to_tokens(c)):
            # inactive layer slots are normalised, so only active decisions must come from a parent
            assert t in (ta[i], tb[i]) or sp.decisions[i].name.endswith(("kernel", "expand"))
    assert any(c not in (a, b) for c in children)


def test_ofa_dict_form_is_accepted_and_trailing_entries_ignored() -> None:
    sp = get_space("ofa-mbv3")
    d = {"ks": [3, 5, 7, 7] * 5, "e": [3, 4, 6, 6] * 5, "d": [2, 3, 4, 2, 3], "r": 160}
    a = sp.parse(d)
    assert sp.format(a) == "w1.2_r160|k3e3,k5e4|k3e3,k5e4,k7e6|k3e3,k5e4,k7e6,k7e6|k3e3,k5e4|k3e3,k5e4,k7e6"
    assert sp.parse(json.dumps(d)) == a
    assert sp.parse(sp.to_ofa_dict(a)) == a


def test_ofa_blocks_walk_shapes_chain() -> None:
    sp = get_space("ofa-mbv3", resolution=164)
    a = sp.sample_many(1, seed=5)[0]
    blocks = sp.blocks(a)
    assert blocks[0].key_str.startswith("Conv-input:164x164x3-output:82x82x24")
    for prev, nxt in itertools.pairwise(blocks):
        assert prev.output_shape == nxt.input_shape
    assert blocks[-1].key_str == "Logits-input:1x1x1536-output:1000"
    assert len(blocks) == 2 + sum(a.depths) + 4


def test_space_description_roundtrip() -> None:
    sp = get_space("ofa-mbv3", width=1.0, resolution=192, num_classes=10)
    again = space_from_description(sp.describe())
    assert again.describe() == sp.describe()
    assert again.all_block_keys() == sp.all_block_keys()


@pytest.mark.parametrize(
    ("name", "text", "needle"),
    [
        ("ofa-mbv3", "w1.2_r224|k3e4,k4e6|k3e3,k3e3|k3e3,k3e3|k3e3,k3e3|k3e3,k3e3", "unit 1 layer 2 kernel: 4 is not one of [3, 5, 7]"),
        ("ofa-mbv3", "w1.2_r224|k3e4,k3e5|k3e3,k3e3|k3e3,k3e3|k3e3,k3e3|k3e3,k3e3", "unit 1 layer 2 expand: 5 is not one of [3, 4, 6]"),
        ("ofa-mbv3", "w1.2_r224|k3e4|k3e3,k3e3|k3e3,k3e3|k3e3,k3e3|k3e3,k3e3", "unit 1: depth 1 is not one of [2, 3, 4]"),
        ("ofa-mbv3", "w1.2_r226|k3e4,k3e4|k3e3,k3e3|k3e3,k3e3|k3e3,k3e3|k3e3,k3e3", "resolution 226"),
        ("ofa-mbv3", "w1.5_r224|k3e4,k3e4|k3e3,k3e3|k3e3,k3e3|k3e3,k3e3|k3e3,k3e3", "width 1.5"),
        ("ofa-mbv3", "w1.2_r224|k3e4,k3e4", "expected 5"),
        ("ofa-mbv3", "hello", "must start with"),
        ("ofa-mbv3", '{"ks": [3], "e": [3], "d": [2]}', "must be a list of 20"),
        ("nb201", "|conv~0|+|none~0|none~1|+|none~0|none~1|none~2|", "position 0 (edge 1<-0): 'conv' is not one of"),
        ("nb201", "|none~0|+|none~0|none~1|+|none~0|none~1|none~3|", "position 5 (edge 3<-2)"),
        ("nb201", "|none~0|+|none~0|", "3 '+'-separated nodes"),
    ],
)
def test_bad_architectures_name_position_value_and_choices(name: str, text: str, needle: str) -> None:
    with pytest.raises(InvalidArchitectureError) as exc:
        get_space(name).parse(text)
    assert needle in str(exc.value)


def test_bad_space_parameters() -> None:
    with pytest.raises(InvalidArgumentError, match="resolution 100"):
        get_space("ofa-mbv3", resolution=100)
    with pytest.raises(InvalidArgumentError, match=r"width 0\.5"):
        get_space("ofa-mbv3", width=0.5)
    with pytest.raises(InvalidArgumentError, match="multiple of 4"):
        get_space("nb201", resolution=30)


def test_block_key_grammar_roundtrip_and_errors() -> None:
    for name in ("ofa-mbv3", "nb201"):
        for key in get_space(name).all_block_keys():
            parsed = parse_block_key(key)
            assert isinstance(parsed, BlockKey) and str(parsed) == key
    k = parse_block_key("expanded_conv-input:14x14x96-output:14x14x96-expand:288-kernel:5-stride:1-idskip:1-se:0-hs:1")
    assert k.attr("kernel") == 5 and k.input == (14, 14, 96)
    for bad, needle in [("", "non-empty"), ("Conv-input:3x3", "input:... and output:"),
                        ("Conv-input:axb-output:1", "shape 'axb'"), ("Conv-input:1-output:1-k:x", "not an integer"),
                        ("1Conv-input:1-output:1", "not an identifier")]:
        with pytest.raises(InvalidBlockKeyError, match=needle):
            parse_block_key(bad)


def test_make_divisible_matches_ofa_examples() -> None:
    assert [make_divisible(v) for v in (19.2, 28.8, 134.4, 1536.0)] == [24, 32, 136, 1536]
    assert RESOLUTIONS[0] == 128 and RESOLUTIONS[-1] == 224 and len(RESOLUTIONS) == 25


def test_one_integer_rule_for_space_parameters_and_stats() -> None:
    """budgetnas.spaces.base.whole: integers and integral floats pass, as ints; the rest are refused by both users."""
    import numpy as np

    from budgetnas.core.errors import DataFileError, InvalidArgumentError
    from budgetnas.luts.lut import LatencyStats
    from budgetnas.spaces.base import int_param, whole

    assert [whole(v) for v in (3, 3.0, np.int64(3), np.float32(3.0))] == [3, 3, 3, 3]
    assert all(whole(v) is None for v in (2.5, float("inf"), float("nan"), True, np.bool_(True), "3", None, [3]))
    assert int_param("channels", 16.0) == 16 and isinstance(int_param("channels", 16.0), int)
    with pytest.raises(InvalidArgumentError, match="channels must be an integer"):
        int_param("channels", 2.5)
    assert LatencyStats(count=3.0, mean_ms=1.0, std_ms=0.0).count == 3
    with pytest.raises(DataFileError, match=r"count: 1\.5 is not an integer"):
        LatencyStats(count=1.5, mean_ms=1.0, std_ms=0.0)


def test_calibration_archs_spread_every_stage() -> None:
    """The designed models are distinct, reproducible, and vary the stages more than uniform draws do."""
    import numpy as np

    from budgetnas.luts.calibration_design import calibration_archs, stage_flops

    sp = get_space("ofa-mbv3", width=1.0, resolution=128)
    chosen = calibration_archs(sp, 24, seed=3)
    assert len({sp.format(a) for a in chosen}) == 24
    assert [sp.format(a) for a in chosen] == [sp.format(a) for a in calibration_archs(sp, 24, seed=3)]

    def spread(archs: list) -> float:  # the smallest singular value of the standardised per-stage design
        x = np.log1p(stage_flops(sp, archs)[0])
        x = x[:, x.std(0) > 1e-6]
        return float(np.linalg.svd((x - x.mean(0)) / x.std(0), compute_uv=False)[-1])

    uniform = [spread(sp.sample_many(24, seed=s)) for s in range(3)]
    designed = [spread(calibration_archs(sp, 24, seed=s)) for s in range(3)]
    assert min(designed) > max(uniform)
    totals = stage_flops(sp, chosen)[0].sum(1)
    pool = stage_flops(sp, sp.sample_many(480, seed=3))[0].sum(1)
    assert totals.min() <= np.percentile(pool, 5) and totals.max() >= np.percentile(pool, 95)
    with pytest.raises(Exception, match="calibration models must be >= 1"):
        calibration_archs(sp, 0)
