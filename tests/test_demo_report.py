"""The demo report's reading of the generated answers: distinct fitting samples, shared answers, the verdict."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from budgetnas.cli.demo import (
    Demo,
    Settings,
    distinct_fitting,
    drift_line,
    judge,
    parse_args,
    print_table,
    retry_line,
    shared_answers,
)
from budgetnas.cli.util import session_line, tau_text
from budgetnas.luts.lut import LatencyStats


def test_distinct_fitting_counts_archs_within_the_budget_asked() -> None:
    row = {"asked_ms": 2.0, "samples": [{"arch": "a", "latency_ms": 1.0}, {"arch": "a", "latency_ms": 1.0},
                                        {"arch": "b", "latency_ms": 2.0}, {"arch": "c", "latency_ms": 2.5},
                                        {"arch": "d", "latency_ms": None}]}
    assert distinct_fitting(row) == 2


def test_shared_answers_name_the_budgets_that_share_an_arch() -> None:
    rows = [{"arch": "x", "budget_ms": 1.0}, {"arch": "y", "budget_ms": 2.0}, {"arch": "y", "budget_ms": 3.0}]
    txt = shared_answers(rows)
    assert "2.00 and 3.00 ms" in txt and "predicted optimum is shared" in txt and "1.00" not in txt
    assert shared_answers(rows[:2]) == "All 2 budgets got distinct architectures."


def test_too_few_validation_models_is_refused_before_anything_runs(tmp_path, capsys) -> None:
    with pytest.raises(SystemExit) as e:
        parse_args(["--out", str(tmp_path / "d"), "--validation-models", "3"])
    assert e.value.code == 2 and "--validation-models must be >= 4" in capsys.readouterr().err
    assert not (tmp_path / "d").exists()  # refused before the work directory is made


def test_session_line_says_whether_the_sessions_were_compared() -> None:
    assert "x1.250 the LUT's (divided out)" in session_line({"session_ratio": 1.25, "sessions_corrected": True})
    assert "; 3 models disturbed" in session_line({"session_ratio": 1.0, "sessions_corrected": True}, 3)
    assert "not corrected" in session_line({"session_ratio": 0.9, "sessions_corrected": False})
    assert "not compared" in session_line({"session_ratio": None}) and "not compared" in session_line(None)


def test_tau_text_says_na_for_an_undefined_tau() -> None:
    assert tau_text(0.51234) == "0.512" and tau_text(None) == "n/a" and tau_text(None, 8) == "     n/a"


def _stats(value_ms: float) -> LatencyStats:
    return LatencyStats.from_samples([value_ms, value_ms * 1.01, value_ms * 1.02])


def test_a_generated_arch_is_judged_on_the_lut_sessions_scale_with_the_raw_verdict_beside() -> None:
    row: dict[str, Any] = {"budget_ms": 2.0}
    judge(row, _stats(2.1), "min", 1.08)  # 5% over as measured, while the machine runs 8% slower
    assert row["measured_ms"] == pytest.approx(2.1) and row["corrected_ms"] == pytest.approx(2.1 / 1.08)
    assert row["fits"] and not row["fits_as_measured"] and row["drift"] == 1.08
    judge(row, _stats(2.1), "min", None)  # no reference in the LUT's session: judged as measured
    assert row["corrected_ms"] == row["measured_ms"] and not row["fits"] and not row["fits_as_measured"]
    judge(row, _stats(1.9), "median", 1.1)
    assert row["measured_ms"] == pytest.approx(1.9 * 1.01) and row["fits"] and row["fits_as_measured"]
    line = drift_line({"ratio": 1.08, "anchors": 5, "min": 1.01, "max": 1.2}, 1.15)
    assert "5 validation models re-measured in this session ran at x1.080" in line and "x1.010-x1.200" in line
    assert "reference workload ran at x1.150" in line
    assert "no anchors re-measured; judged as measured" in drift_line(None, None)
    assert "reference workload not timed" in drift_line(None, None)


ARCH = "w1.0_r128|k3e3,k3e3|k3e3,k3e3|k3e3,k3e3|k3e3,k3e3|k3e3,k3e3"  # the smallest of the demo's space
BIG = "w1.0_r128|k7e6,k7e6,k7e6,k7e6|k7e6,k7e6,k7e6,k7e6|k7e6,k7e6,k7e6,k7e6|k7e6,k7e6,k7e6,k7e6|k7e6,k7e6,k7e6,k7e6"


class AskedDemo(Demo):
    """The demo with its `generate` CLI call answered from a list (a trained bundle takes minutes);
    the measurements are real (ort-cpu, the quick protocol)."""

    answers: list[str]
    asked: list[float]

    def ask(self, bundle: Path, budget: float, asked: float) -> dict[str, Any]:
        self.asked.append(asked)
        return {"budget_ms": budget, "asked_ms": asked, "asks": 1, "arch": self.answers.pop(0),
                "latency_ms": asked, "accuracy": 0.9}


def test_an_answer_measured_over_its_budget_is_asked_again_and_measured_in_a_session_of_its_own(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    demo = AskedDemo(Settings(out=tmp_path, quick=True))
    demo.answers, demo.asked = [ARCH, BIG, ARCH], []
    rows = [demo.ask(tmp_path, 1e6, 1e6), demo.ask(tmp_path, 1e-3, 1e-3)]  # fits whatever the machine; cannot
    # anchors as the calibration saw them (the first's session divided out: its corrected time is fitted)
    anchors = [{"arch": ARCH, "measured_ms": 1.0, "corrected_ms": 0.5}, {"arch": BIG, "measured_ms": 9.0}]
    demo.measure(rows, "median", anchors, None)
    first = dict(rows[1])
    assert rows[0]["fits"] and not first["fits"] and first["anchors"]["anchors"] == 2
    assert first["drift"] == pytest.approx(first["anchors"]["ratio"]) and first["reference_ratio"] is None
    assert first["corrected_ms"] == pytest.approx(first["measured_ms"] / first["drift"])
    demo.verify(tmp_path, rows, "median", anchors, None)
    # asked again only for the budget that measured over, shrunk by its measured / predicted
    assert demo.asked[-1] == pytest.approx(1e-3 / (first["corrected_ms"] / 1e-3)) and len(demo.asked) == 3
    assert rows[1]["asks"] == 2 and rows[1]["first"]["arch"] == BIG and rows[1]["arch"] == ARCH
    assert "measured_ms" in rows[1] and not rows[1]["fits"]  # a new session's verdict (the budget is 1 us)
    assert "budget 0.00 ms asked twice: the first answer, predicted 0.00 ms" in retry_line(rows[1])
    rows[1]["fits"] = True
    n = len(demo.asked)
    demo.verify(tmp_path, rows, "median", anchors, None)  # nothing over: nothing asked
    assert len(demo.asked) == n
    print_table(rows)
    assert "asked twice" in capsys.readouterr().out
