"""NAS-Bench-201 cells spelled twice: exchanging the two intermediate nodes (possible when edge 2<-1 is
``none``) gives the same network, which few-shot transfer's noise ceiling (bench/fewshot.py) relies on."""

from __future__ import annotations

import itertools
from collections import Counter

import pytest

from budgetnas.core.errors import InvalidArchitectureError
from budgetnas.spaces.nb201 import OPS, NASBench201, NB201Arch, live_edges, relabelled

SP = NASBench201()
ALL = list(itertools.product(OPS, repeat=6))
MOVED = 120  # of the 1,500 pairs: the order of an addition moves a fusion context (the rest are one graph)


def test_exactly_1500_pairs_and_no_larger_class() -> None:
    classes = Counter(relabelled(ops) for ops in ALL)
    assert len(classes) == 14_125
    assert Counter(classes.values()) == {1: 12_625, 2: 1_500}


def _context_free(keys: list[str]) -> Counter[str]:
    return Counter(k.replace("_fused-", "-") for k in keys)


def test_a_pair_is_one_network() -> None:
    """Same blocks (live ops at their resolutions), FLOPs, params and number of dead edges. Their fusion
    contexts may differ: a node sums its terms in edge order, and the order decides which additions a
    conv can absorb (``(conv + conv) + x`` absorbs one, ``(conv + x) + conv`` two), and with it whether the
    output is a conv's that the next cell's ReLU folds into. Which conv of a value is charged its ReLU
    does not depend on the order (a 1x1 before a 3x3)."""
    moved = 0
    for ops in ALL:
        other = relabelled(ops)
        if other == ops:
            continue
        a, b = NB201Arch(ops), NB201Arch(other)
        assert _context_free(SP.block_keys(a)) == _context_free(SP.block_keys(b))
        moved += Counter(SP.block_keys(a)) != Counter(SP.block_keys(b))
        assert (SP.flops(a), SP.params(a)) == (SP.flops(b), SP.params(b))
        assert sorted(op for op, live in zip(ops, live_edges(ops), strict=True) if not live) == \
            sorted(op for op, live in zip(other, live_edges(other), strict=True) if not live)
    assert moved == MOVED


def test_examples_and_idempotence() -> None:
    a = ("nor_conv_3x3", "skip_connect", "none", "avg_pool_3x3", "nor_conv_1x1", "none")
    b = ("skip_connect", "nor_conv_3x3", "none", "avg_pool_3x3", "none", "nor_conv_1x1")
    assert relabelled(a) == relabelled(b) == min(a, b)
    assert relabelled(relabelled(a)) == relabelled(a)
    c = ("nor_conv_3x3", "skip_connect", "nor_conv_1x1", "avg_pool_3x3", "nor_conv_1x1", "none")
    assert relabelled(c) == c  # 2<-1 is not none: node 2 reads node 1, the nodes are not interchangeable


def test_wrong_length_is_refused() -> None:
    with pytest.raises(InvalidArchitectureError):
        relabelled(("none",) * 5)
