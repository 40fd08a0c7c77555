"""The server's in-memory predictor: the same numbers as budgetnas.luts.lut.LUTPredictor, fast path or not."""

from __future__ import annotations

import json

import pytest

from budgetnas.core.errors import InvalidArchitectureError, MissingKeysError
from budgetnas.lut_server.predictor import Prepared
from budgetnas.luts.lut import LUT, Calibration, LUTMeta, LUTPredictor, key_group
from budgetnas.spaces import get_space
from tests.conftest import shared_file


@pytest.fixture(scope="module")
def ofa() -> tuple:
    sp = get_space("ofa-mbv3", width=1.2, resolution=192)
    lut = LUT.from_ofa_yaml(shared_file("ofa_note10_lut", "192_lookup_table.yaml").read_text(),
                            LUTMeta(space=sp.describe(), device="d", backend="b"))
    return sp, lut


def test_fast_rows_equal_the_walk(ofa) -> None:
    sp, lut = ofa
    prep = Prepared.build(lut, revision=0)
    assert prep.fast is not None  # ofa-mbv3 has the per-unit fast path
    archs = [sp.format(a) for a in sp.sample_many(500, seed=9)]
    got = prep.predict(archs)
    want = LUTPredictor(lut, sp).predict([sp.parse(a) for a in archs])
    for g, w in zip(got, want, strict=True):
        assert (g["arch"], g["raw_ms"]) == (w.arch, w.raw_ms)
        assert (g["latency_ms"], g["low_ms"], g["high_ms"]) == pytest.approx((w.latency_ms, w.low_ms, w.high_ms),
                                                                              rel=1e-12)
    # non-canonical spellings and OFA's dict form come back canonical, with the same numbers
    odd = archs[0].replace("k3e", "k03e") if "k3e" in archs[0] else archs[0]
    dict_form = json.dumps(sp.to_ofa_dict(sp.parse(archs[0])))
    again = prep.predict([odd, dict_form, archs[0]])
    assert [p["arch"] for p in again] == [archs[0]] * 3
    assert len({p["latency_ms"] for p in again}) == 1


@pytest.mark.parametrize("scales", [
    {}, {"expanded_conv@input:12x12x136": 1.3, "expanded_conv@input:6x6x192": 0.7, "expanded_conv@input:48x48x32": 1.1},
    {"input:12x12x136": 1.3, "input:6x6x192": 0.7, "input:48x48x32": 1.1},  # stored before groups named their op
])
def test_calibration_and_errors(ofa, scales: dict[str, float]) -> None:
    sp, lut = ofa
    cal = Calibration(slope=0.9, intercept=1.5, n_models=10, rel_residual_std=0.02, group_scales=scales)
    lut2 = LUT(lut.meta, lut.entries, cal)
    prep = Prepared.build(lut2, revision=1)
    arch = sp.format(sp.sample_many(1, seed=1)[0])
    p = prep.predict([arch])[0]
    q = LUTPredictor(lut2, sp).predict([sp.parse(arch)])[0]
    assert (p["latency_ms"], p["low_ms"], p["high_ms"]) == pytest.approx((q.latency_ms, q.low_ms, q.high_ms))
    def scale(k: str) -> float:  # by its op at its input shape, else (an older calibration) the shape alone
        shape = next(part for part in k.split("-") if part.startswith("input:"))
        assert key_group(k) == f"{k.split('-')[0]}@{shape}"
        return scales.get(key_group(k), scales.get(shape, 1.0))

    by_hand = 1.5 + 0.9 * sum(lut.entries[k].value(lut.meta.statistic) * scale(k) for k in sp.block_keys(sp.parse(arch)))
    assert p["latency_ms"] == pytest.approx(by_hand, rel=1e-12)
    assert prep.predict([arch], calibrated=False)[0]["latency_ms"] == pytest.approx(q.raw_ms)
    five = arch.split("|")
    five[2] = ",".join(["k3e3"] * 5)
    for bad, needle in (("|".join(five), "archs[1]: unit 2: depth 5"), ("w1.2_r160" + arch[9:], "archs[1]: resolution"),
                        (arch.replace("k", "q", 1), "archs[1]")):
        with pytest.raises(InvalidArchitectureError) as exc:
            prep.predict([arch, bad])
        assert needle in str(exc.value)
    partial = LUT(lut.meta, {k: v for k, v in lut.entries.items() if "kernel:7" not in k})
    seven = "|".join([arch.split("|")[0]] + ["k7e3,k7e3"] * 5)
    with pytest.raises(MissingKeysError) as missing:
        Prepared.build(partial, revision=0).predict([seven])
    assert all("kernel:7" in k for k in missing.value.keys)


def test_the_answer_cache_gives_predicts_answers_under_canonical_keys_only(ofa) -> None:
    sp, lut = ofa
    prep = Prepared.build(lut, revision=0)
    archs = [sp.format(a) for a in sp.sample_many(3, seed=4)]
    odd = archs[0].replace("k3e", "k03e") if "k3e" in archs[0] else " " + archs[0]
    for calibrated in (True, False):
        want = json.dumps({"predictions": prep.predict(archs, calibrated=calibrated)}, separators=(",", ":"))
        for _ in range(2):  # a miss (answered and remembered), then a hit
            assert json.loads(prep.encoded(archs, calibrated)) == json.loads(want)
        assert json.loads(prep.encoded([odd], calibrated))["predictions"][0]["arch"] == archs[0]
    assert set(prep.answers) == {(a, c) for a in archs for c in (True, False)}  # the odd spelling added nothing
    many = [sp.format(a) for a in sp.sample_many(100, seed=5)]
    prep.encoded(many)  # a batch larger than ANSWERED_ARCHS is answered, not remembered
    assert not any((a, True) in prep.answers for a in many if a not in archs)


# ---- the batch fast path (UnitIndexer.block_rows) against the walk, arch by arch -------------------------
def _walked(prep: Prepared) -> Prepared:
    """The same LUT without the fast path: every arch parsed, formatted and walked (the reference)."""
    return Prepared(prep.revision, prep.lut, prep.space, prep.predictor)


def _outcome(prep: Prepared, archs: list[str]) -> tuple:
    """Everything a predict returns or raises: rows, starts, answers and the encoded JSON, or the error."""
    try:
        canon, idx, starts = prep.rows(archs)
        return ("ok", canon, idx.tolist(), starts.tolist(), prep.predict(archs), prep.predict(archs, False),
                prep.encoded(archs), prep.predict(archs[:3], breakdown=True))
    except (InvalidArchitectureError, MissingKeysError) as exc:
        return (type(exc).__name__, str(exc), getattr(exc, "keys", None))


def _mangled(rng, sp, arch: str) -> str:
    """One of the ways a string can be not quite canonical (or not an arch at all)."""
    head, *units = arch.split("|")
    layers = [u.split(",") for u in units]
    u = int(rng.integers(len(units)))
    kind = int(rng.integers(24))
    if kind == 0:
        return " " + arch
    if kind == 1:
        return arch + " "
    if kind == 2:
        return arch.replace("k", "k0", 1)
    if kind == 3:
        return arch.replace("w1.2", "w1.0")
    if kind == 4:
        return arch.replace("_r", "_r0")
    if kind == 5:  # depth 1 or 5
        layers[u] = layers[u][:1] if rng.integers(2) else [*layers[u], "k3e3", "k3e3", "k3e3", "k3e3"][:5]
    elif kind == 6:  # a bad kernel or expand of the right length
        layers[u][0] = str(rng.choice(["k4e3", "k3e5", "k9e9", "K3e3", "k3E3", "e3k3", "k3e3"[::-1], "k\u0663e3"]))
    elif kind == 7:  # a token of another length
        layers[u][-1] = str(rng.choice(["k3e", "k33e3", "k3e33", "", "k3e3 "]))
    elif kind == 8:  # separators swapped or doubled
        return arch.replace(",", "|", 1) if rng.integers(2) else arch.replace("|", ",", 2)
    elif kind == 9:
        return arch.replace("|", "||", 1)
    elif kind == 10:  # a unit too few or too many
        return "|".join([head, *units[:-1]]) if rng.integers(2) else "|".join([head, *units, units[0]])
    elif kind == 11:
        return json.dumps(sp.to_ofa_dict(sp.parse(arch)))
    elif kind == 12:
        return str(rng.choice(["", "|", "w1.2_r192", "w1.2_r192|", "x" * 300, "\x00" * 64, "\u00e9" * 40]))
    elif kind == 13:  # the same length, one byte moved
        i = int(rng.integers(len(arch)))
        return arch[:i] + str(rng.choice(list("|,ke0357\x00\u00e9"))) + arch[i + 1:]
    elif kind == 14:  # another head of the same length
        return "w1.2_r196" + arch[9:]
    else:
        return arch
    return "|".join([head, *(",".join(x) for x in layers)])


@pytest.mark.parametrize("seed", range(6))
def test_the_batch_fast_path_is_the_walk(ofa, seed: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Random batches of canonical and mangled strings: the same rows, answers, JSON and errors as the walk."""
    import numpy as np

    import budgetnas.lut_server.predictor as predictor

    monkeypatch.setattr(predictor, "WALKED_ARCHS", 0)  # the batch path for one arch too
    sp, lut = ofa
    rng = np.random.default_rng(seed)
    canonical = [sp.format(a) for a in sp.sample_many(400, seed=100 + seed)]
    fast, walked = Prepared.build(lut, 0), Prepared.build(lut, 0)
    assert fast.fast is not None
    walked = _walked(walked)
    assert _outcome(fast, canonical) == _outcome(walked, canonical)
    for rate in (0.0, 0.02, 0.3):  # mangled strings among canonical ones; most raise at the first bad arch
        archs = [_mangled(rng, sp, a) if rng.random() < rate else a for a in canonical]
        assert _outcome(fast, archs) == _outcome(walked, archs)
    for _ in range(30):  # one arch, often a bad one
        archs = [_mangled(rng, sp, canonical[int(rng.integers(len(canonical)))])]
        assert _outcome(fast, archs) == _outcome(walked, archs)
    # only readable spellings (no error): spaces, leading zeros, the dict form and canonical ones, shuffled
    readable = [str(rng.choice([a, " " + a, a.replace("k", "k0"), json.dumps(sp.to_ofa_dict(sp.parse(a)))]))
                for a in canonical]
    assert _outcome(fast, readable)[0] == "ok"
    assert _outcome(fast, readable) == _outcome(walked, readable)
    # what the fast path learnt is canonical tokens only
    assert all(t == tok for (_, _, t), (tok, _) in fast.fast.layers.items())
    assert all(sp.format(sp.parse(f"w1.2_r192|{c.to_bytes(4, 'little').decode()},k3e3" + "|k3e3,k3e3" * 4))
               for c in fast.fast.learnt)


def test_the_batch_fast_path_leaves_missing_keys_to_the_walk(ofa, monkeypatch: pytest.MonkeyPatch) -> None:
    """A LUT without some keys: the same MissingKeysError (keys in arch order) with or without the fast path."""
    import budgetnas.lut_server.predictor as predictor

    monkeypatch.setattr(predictor, "WALKED_ARCHS", 0)
    sp, lut = ofa
    partial = LUT(lut.meta, {k: v for k, v in lut.entries.items() if "kernel:7" not in k or "expand:144" in k})
    archs = [sp.format(a) for a in sp.sample_many(300, seed=3)]
    fast = Prepared.build(partial, 0)
    assert fast.fast is not None
    got, want = _outcome(fast, archs), _outcome(_walked(Prepared.build(partial, 0)), archs)
    assert got == want and got[0] == "MissingKeysError"
    no7 = [a for a in archs if "k7" not in a]
    assert _outcome(fast, no7) == _outcome(_walked(fast), no7) and _outcome(fast, no7)[0] == "ok"
    head_gone = LUT(lut.meta, {k: v for k, v in lut.entries.items() if not k.startswith("Logits")})
    assert _outcome(Prepared.build(head_gone, 0), no7) == _outcome(_walked(Prepared.build(head_gone, 0)), no7)


def test_nb201_batches_are_walked_with_the_same_answers() -> None:
    """nb201 has no unit grammar: every arch is walked, with LUTPredictor's numbers and the parser's errors."""
    import numpy as np

    from budgetnas.luts.lut import LatencyStats

    sp = get_space("nb201")
    rng = np.random.default_rng(0)
    lut = LUT(LUTMeta(space=sp.describe(), device="d", backend="b"),
              {k: LatencyStats.from_samples(rng.uniform(0.1, 2, 5)) for k in sp.all_block_keys()})
    prep = Prepared.build(lut, 0)
    assert prep.fast is None
    archs = [sp.format(a) for a in sp.sample_many(2000, seed=1)]
    got = prep.predict(archs)
    want = LUTPredictor(lut, sp).predict([sp.parse(a) for a in archs])
    assert [(p["arch"], p["latency_ms"], p["low_ms"], p["high_ms"], p["raw_ms"]) for p in got] == \
        [(w.arch, w.latency_ms, w.low_ms, w.high_ms, w.raw_ms) for w in want]
    spelt = [" " + a.replace("~0", "~00") for a in archs[:50]]
    assert [p["arch"] for p in prep.predict(spelt)] == archs[:50]
    with pytest.raises(InvalidArchitectureError) as exc:
        prep.predict([*archs[:5], "|nor_conv_3x3~0|+|bogus~0|none~1|+|none~0|none~1|none~2|"])
    assert str(exc.value).startswith("archs[5]: ")
