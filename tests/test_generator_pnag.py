"""PNAG's reward shaping: over-budget samples rank below fitting ones, their own order kept."""

from __future__ import annotations

import numpy as np

from generator.pnag import feasible_first


def test_over_budget_rewards_move_below_every_fitting_one() -> None:
    r = np.array([[0.9, 0.1, 0.5, 0.7], [0.3, 0.2, 0.1, 0.0], [0.4, 0.8, 0.6, 0.2]])
    fits = np.array([[False, True, True, False], [False, False, False, False], [True, True, True, True]])
    out = feasible_first(r, fits, margin=0.1)
    row = out[0]
    assert row[~fits[0]].max() < row[fits[0]].min()  # every fitting sample beats every over-budget one
    assert row[0] > row[3]  # over-budget order kept (the evaluator still prefers the first)
    np.testing.assert_allclose(row[fits[0]], r[0][fits[0]])  # fitting samples untouched
    np.testing.assert_allclose(out[1:], r[1:])  # nothing fits / everything fits: unchanged
    np.testing.assert_allclose(r[0], [0.9, 0.1, 0.5, 0.7])  # the input is not modified


def test_already_ordered_row_is_left_alone() -> None:
    r = np.array([[1.0, 2.0, -1.0]])
    fits = np.array([[True, True, False]])
    np.testing.assert_allclose(feasible_first(r, fits, margin=0.1), r)
