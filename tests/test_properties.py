"""Property-based tests (hypothesis): the latency-stats type, the architecture parsers, the importers.

Whatever the input, the answer is a valid value or the project's own error (``BudgetNASError``),
never another exception; and a valid value survives its own round trip. The importers are also
driven through the REST API on SQLite and PostgreSQL: a garbled upload is a LUT or a 4xx that
stored nothing, never a 5xx and never part of a LUT.
"""

from __future__ import annotations

import itertools
import json
import math
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from budgetnas.core.errors import BudgetNASError, DataFileError, InvalidArchitectureError
from budgetnas.lut_server.convert import ImportOptions, import_lut
from budgetnas.luts.lut import LUT, MAX_COUNT, MAX_MS, LatencyStats, LUTMeta, parse_json, parse_yaml
from budgetnas.spaces import get_space
from tests.server_support import *  # noqa: F403
from tests.server_support import ADMIN_H, make_client
from tests.test_hostile_stats import counts

FAST = settings(max_examples=150, deadline=None)
MS_FIELDS = ("mean_ms", "std_ms", "median_ms", "min_ms", "p90_ms", "p99_ms", "overhead_ms", "seconds", "cv")

# ---- the stats type ----------------------------------------------------------------------------
good_ms = st.floats(min_value=0.0, max_value=1e4, allow_nan=False)
hostile = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True), st.integers(min_value=-(10**30), max_value=10**400),
    st.booleans(), st.none(), st.text(max_size=5), st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=2), st.integers(), max_size=1),
)
field_value = st.one_of(good_ms, good_ms, hostile)


@st.composite
def stats_dicts(draw: st.DrawFn) -> dict[str, Any]:
    """Valid stats (from samples) with 0 to 3 fields replaced by anything, dropped, or one unknown added."""
    samples = draw(st.lists(good_ms, min_size=1, max_size=8))
    d = LatencyStats.from_samples(samples, keep_samples=draw(st.booleans()), warmup_runs=3, seconds=0.5).to_dict()
    for _ in range(draw(st.integers(0, 3))):
        name = draw(st.sampled_from(["count", *MS_FIELDS, "warmup_runs", "noisy", "samples_ms", "unknown"]))
        how = draw(st.sampled_from(["hostile", "good", "drop"]))
        if how == "drop":
            d.pop(name, None)
        elif how == "good" and name == "samples_ms":
            d[name] = draw(st.lists(good_ms, max_size=8))
        elif how == "good":
            d[name] = draw(st.integers(0, 50) if name in ("count", "warmup_runs") else good_ms)
        else:
            d[name] = draw(hostile)
    return d


def _check_valid(s: LatencyStats) -> None:
    assert isinstance(s.count, int) and 1 <= s.count <= MAX_COUNT
    for name in MS_FIELDS:
        v = getattr(s, name)
        assert v is None or (isinstance(v, float) and math.isfinite(v) and 0.0 <= v <= MAX_MS), name
    chain = [v for v in (s.min_ms, s.median_ms, s.p90_ms, s.p99_ms) if v is not None]
    assert all(a <= b * (1 + 1e-9) + 1e-12 for a, b in itertools.pairwise(chain))
    assert s.samples_ms is None or len(s.samples_ms) == s.count


@FAST
@given(stats_dicts())
def test_stats_from_any_dict_are_valid_or_a_data_file_error(d: dict[str, Any]) -> None:
    try:
        s = LatencyStats.from_dict(d)
    except DataFileError:
        return
    _check_valid(s)
    again = LatencyStats.from_dict(parse_json(json.dumps(s.to_dict(), allow_nan=False)))
    assert again == s and again.samples_ms == s.samples_ms


@FAST
@given(st.lists(st.floats(min_value=0.0, max_value=MAX_MS, allow_nan=False), min_size=1, max_size=60),
       st.booleans())
def test_stats_from_any_non_negative_samples_are_valid(samples: list[float], keep: bool) -> None:
    s = LatencyStats.from_samples(samples, keep_samples=keep, warmup_runs=2)
    _check_valid(s)
    assert LatencyStats.from_dict(s.to_dict()) == s


@FAST
@given(st.lists(st.one_of(st.floats(), st.floats(max_value=-1e-300)), min_size=1, max_size=10))
def test_stats_from_bad_samples_raise_the_projects_error(samples: list[float]) -> None:
    assume(not all(math.isfinite(x) and 0.0 <= x <= MAX_MS for x in samples))
    with pytest.raises(BudgetNASError):
        LatencyStats.from_samples(samples)


# ---- the architecture parsers -----------------------------------------------------------------
SPACES = [("nb201", {}), ("ofa-mbv3", {}), ("ofa-mbv3", {"width": 1.0, "resolution": 160})]


@pytest.mark.parametrize("name,params", SPACES)
@FAST
@given(seed=st.integers(0, 2**32 - 1))
def test_parse_of_format_is_the_identity(name: str, params: dict[str, Any], seed: int) -> None:
    sp = get_space(name, **params)
    arch = sp.sample_many(1, seed)[0]
    text = sp.format(arch)
    assert sp.parse(text) == arch
    assert sp.format(sp.parse(f"  {text}\n")) == text
    assert sp.from_tokens(sp.to_tokens(arch)) == arch


def _mutations(text: str) -> st.SearchStrategy[str]:
    alphabet = st.sampled_from(list(set(text)) + list("|+~,_{}[]\":0123456789.-e \x00é"))
    edit = st.tuples(st.integers(0, max(len(text) - 1, 0)), st.sampled_from(["put", "insert", "delete"]), alphabet)

    def apply(edits: list[tuple[int, str, str]]) -> str:
        chars = list(text)
        for pos, op, ch in edits:
            pos = min(pos, len(chars))
            if op == "insert":
                chars.insert(pos, ch)
            elif chars and op == "delete":
                del chars[min(pos, len(chars) - 1)]
            elif chars:
                chars[min(pos, len(chars) - 1)] = ch
        return "".join(chars)

    return st.lists(edit, min_size=1, max_size=6).map(apply)


@pytest.mark.parametrize("name,params", SPACES)
@FAST
@given(data=st.data())
def test_garbled_architectures_parse_canonically_or_raise_the_projects_error(name: str, params: dict[str, Any],
                                                                           data: st.DataObject) -> None:
    sp = get_space(name, **params)
    text = sp.format(sp.sample_many(1, data.draw(st.integers(0, 1000)))[0])
    garbled = data.draw(st.one_of(_mutations(text), st.text(max_size=40),
                                  st.sampled_from(["{" * 5000, '{"units": ' + "[" * 5000, "{}", "[]", "1e999"])))
    try:
        arch = sp.parse(garbled)
    except InvalidArchitectureError:
        return
    canonical = sp.format(arch)
    assert sp.parse(canonical) == arch and sp.format(sp.parse(canonical)) == canonical


@pytest.mark.parametrize("name", ["nb201", "ofa-mbv3"])
@FAST
@given(value=st.one_of(st.integers(), st.floats(), st.none(), st.lists(st.integers(), max_size=3),
                       st.dictionaries(st.text(max_size=6), st.one_of(st.integers(), st.text(max_size=4),
                                                                     st.lists(st.integers(), max_size=3)),
                                       max_size=4)))
def test_non_text_architectures_raise_the_projects_error(name: str, value: Any) -> None:
    sp = get_space(name)
    try:
        arch = sp.parse(value)
    except BudgetNASError:
        return
    assert sp.parse(sp.format(arch)) == arch


# ---- the importers ---------------------------------------------------------------------------------
def _valid_contents() -> dict[str, str]:
    nb = get_space("nb201")
    lut = LUT(LUTMeta(space=nb.describe(), device="dev1", backend="ort-cpu"),
              {k: LatencyStats.from_samples([1.0, 1.5, 2.0]) for k in nb.all_block_keys()})
    ofa = get_space("ofa-mbv3", width=1.2, resolution=224)
    ofa_entries = {k: {"count": 5, "mean": 0.25, "std": 0.01} for k in ofa.all_block_keys()}
    archs = [nb.format(a) for a in nb.sample_many(6, seed=5)]
    csv = "arch_str,latency_ms\n" + "".join(f"{a},{1 + i / 7:.4f}\n" for i, a in enumerate(archs))
    return {"json": lut.to_json_text(samples=True), "ofa-yaml": yaml.safe_dump(ofa_entries), "arch-csv": csv}


VALID = _valid_contents()


def _structured_json(data: st.DataObject) -> str:
    """The valid JSON LUT with one value replaced by anything (a NaN, a string, a deep list...)."""
    d = json.loads(VALID["json"])
    key = data.draw(st.sampled_from(sorted(d["entries"])))
    where = data.draw(st.sampled_from(["entry", "meta", "top", "calibration"]))
    value = data.draw(st.one_of(good_ms, hostile,
                                st.recursive(st.integers(), lambda c: st.lists(c, max_size=2), max_leaves=5)))
    if where == "entry":
        d["entries"][key][data.draw(st.sampled_from([*sorted(d["entries"][key]), "extra"]))] = value
    elif where == "meta":
        d["meta"][data.draw(st.sampled_from([*sorted(d["meta"]), "extra"]))] = value
    elif where == "calibration":
        d["calibration"] = {"slope": value, "intercept": 0.0, "n_models": 2, "rel_residual_std": 0.1}
    else:
        d[data.draw(st.sampled_from(["format", "version", "entries", "meta"]))] = value
    return json.dumps(d)


def _garbled(fmt: str, data: st.DataObject) -> str:
    text = VALID[fmt]
    if fmt == "json" and data.draw(st.booleans()):
        return _structured_json(data)
    if fmt == "ofa-yaml" and data.draw(st.booleans()):  # one entry's value replaced
        raw = yaml.safe_load(text)
        key = data.draw(st.sampled_from(sorted(raw)))
        raw[key][data.draw(st.sampled_from(["count", "mean", "std"]))] = data.draw(st.one_of(good_ms, hostile))
        return yaml.safe_dump(raw)
    if data.draw(st.integers(0, 3)) == 0:  # a digit changed: often still a valid LUT
        digits = [i for i, ch in enumerate(text) if ch.isdigit()]
        i = data.draw(st.sampled_from(digits))
        return text[:i] + data.draw(st.sampled_from("0123456789")) + text[i + 1:]
    head, tail = text[:300], text[300:]  # garble the start, where every format's structure is
    return data.draw(_mutations(head)) + tail


def _check_import(fmt: str, content: str) -> LUT | None:
    try:
        imported = import_lut(fmt, content, ImportOptions())
    except BudgetNASError:
        return None
    lut = imported.lut
    assert LUT.from_json_text(lut.to_json_text(), "again").entries == lut.entries  # what is written reads back
    return lut


@pytest.mark.parametrize("fmt", sorted(VALID))
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_garbled_imports_are_a_lut_or_the_projects_error(fmt: str, data: st.DataObject) -> None:
    _check_import(fmt, _garbled(fmt, data))


def test_the_strict_readers_refuse_what_python_would_silently_accept() -> None:
    for text, needle in (('{"a": 1, "a": 2}', "duplicate key 'a'"), ("[NaN]", "NaN"), ("[1e400]", "out of range"),
                         ("[" * 65 + "]" * 65, "nested deeper than 64")):
        with pytest.raises(DataFileError, match=needle):
            parse_json(text)
    for text, needle in (("a: 1\na: 2\n", "duplicate key 'a' .lines 1 and 2."), ("a: 2020-13-45", "not YAML"),
                         ("&a [*a]", "nested deeper"), ("- " * 70 + "1", "nested deeper")):
        with pytest.raises(DataFileError, match=needle):
            parse_yaml(text)
    assert parse_yaml("m: 1e-3") == {"m": 0.001}  # YAML 1.1 would read text


@pytest.mark.parametrize("fmt", sorted(VALID))
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_garbled_uploads_store_a_whole_lut_or_nothing(db_url: str, fmt: str, data: st.DataObject) -> None:
    content = _garbled(fmt, data)
    expected = _check_import(fmt, content)
    with make_client(db_url) as c:
        before = counts(db_url)
        r = c.post("/v1/luts/import", json={"format": fmt, "content": content}, headers=ADMIN_H)
        after = counts(db_url)
    assert r.status_code < 500, r.text
    if expected is None or r.status_code == 409:  # 409: an identical LUT was imported by an earlier example
        assert 400 <= r.status_code < 500 and after == before, r.text
    else:
        assert r.status_code == 201, r.text
        assert after[0] == before[0] + 1 and after[1] == before[1] + len(expected.entries)
