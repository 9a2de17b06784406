"""The dynamic program and the tree helpers in sequoia_cli.tree, checked against brute force."""

import functools
import itertools
import math
import random
from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sequoia_cli.errors import BadInput
from sequoia_cli.tree import (
    best_tree,
    check_parents,
    depths,
    expected_tokens,
    level_order,
    level_widths,
    max_nodes,
    ranks,
    tree_table,
)

BRUTE_MAX_SIZE = 8


# ---------------------------------------------------------------- brute force


def _compositions(total: int, parts: int):
    """Ordered tuples of `parts` positive integers summing to `total`."""
    if parts == 0:
        if total == 0:
            yield ()
        return
    for first in range(1, total - parts + 2):
        for rest in _compositions(total - first, parts - 1):
            yield (first,) + rest


@functools.cache
def shapes(size: int, width: int) -> tuple:
    """Every admissible tree of `size` nodes: a node with b children has ranks 1..b, b <= width.
    A shape is the tuple of its children's shapes, in rank order."""
    out = []
    for b in range(0, min(width, size - 1) + 1):
        for sizes in _compositions(size - 1, b):
            for children in itertools.product(*(shapes(s, width) for s in sizes)):
                out.append(tuple(children))
    return tuple(out)


def shape_value(shape: tuple, acceptance) -> float:
    return 1.0 + sum(acceptance[k] * shape_value(child, acceptance) for k, child in enumerate(shape))


def shape_depth(shape: tuple) -> int:
    return 0 if not shape else 1 + max(shape_depth(child) for child in shape)


def shape_parents(shape: tuple) -> list[int]:
    """Depth-first (pre-order) parents: topological, children in rank order."""
    parents = [-1]

    def walk(node_shape, index):
        for child in node_shape:
            parents.append(index)
            walk(child, len(parents) - 1)

    walk(shape, 0)
    return parents


def brute_best(acceptance, size: int, depth: int) -> float:
    values = [shape_value(s, acceptance) for s in shapes(size, len(acceptance)) if shape_depth(s) <= depth]
    return max(values, default=-math.inf)


def test_brute_force_enumerator_counts():
    # Sanity of the reference itself: unbounded width gives the Catalan numbers; width 1 a chain;
    # width 2 gives the Motzkin-like counts of ordered trees with <= 2 children.
    catalan = [1, 1, 2, 5, 14, 42, 132, 429]
    assert [len(shapes(n, 7)) for n in range(1, 9)] == catalan
    assert all(len(shapes(n, 1)) == 1 for n in range(1, 9))
    assert [len(shapes(n, 2)) for n in range(1, 9)] == [1, 1, 2, 4, 9, 21, 51, 127]
    for shape in shapes(6, 3):
        parents = shape_parents(shape)
        check_parents(parents)
        assert len(parents) == 6
        assert max(depths(parents)) == shape_depth(shape)
        assert max(ranks(parents)) <= 3


def _random_vectors(seed: int, count: int):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        width = int(rng.integers(1, 4))
        raw = rng.random(width)
        total = rng.uniform(0.05, 1.0)
        vector = raw / raw.sum() * total
        if rng.random() < 0.3:  # some zeros
            vector[rng.integers(0, width)] = 0.0
        out.append([float(x) for x in vector])
    return out


FIXED_VECTORS = [
    [0.6, 0.2, 0.1],
    [0.5],
    [0.3, 0.3],
    [0.9, 0.05],
    [1.0],
    [0.99, 0.01, 0.0],
]
NON_MONOTONE_VECTORS = [
    [0.1, 0.5, 0.2],
    [0.05, 0.05, 0.8],
    [0.2, 0.6],
    [0.3, 0.1, 0.4],
]
ZERO_VECTORS = [
    [0.0],
    [0.0, 0.0, 0.0],
    [0.5, 0.0, 0.3],
    [0.0, 0.7],
    [0.0, 0.0, 0.9],
]
ALL_VECTORS = FIXED_VECTORS + NON_MONOTONE_VECTORS + ZERO_VECTORS + _random_vectors(1234, 12)


@pytest.mark.parametrize("acceptance", ALL_VECTORS, ids=lambda a: "-".join(f"{x:.3g}" for x in a))
def test_dp_equals_brute_force(acceptance):
    table = tree_table(acceptance, BRUTE_MAX_SIZE, BRUTE_MAX_SIZE - 1)
    assert table.expected.shape == (BRUTE_MAX_SIZE, BRUTE_MAX_SIZE + 1)
    for n in range(1, BRUTE_MAX_SIZE + 1):
        for d in range(0, BRUTE_MAX_SIZE):
            want = brute_best(acceptance, n, d)
            got = table.expected[d, n]
            if want == -math.inf:
                assert got == -math.inf, (n, d, got)
            else:
                assert got == pytest.approx(want, abs=1e-12, rel=0), (n, d)


@pytest.mark.parametrize("acceptance", ALL_VECTORS, ids=lambda a: "-".join(f"{x:.3g}" for x in a))
def test_best_tree_rebuilds_the_table_value(acceptance):
    width = len(acceptance)
    table = tree_table(acceptance, BRUTE_MAX_SIZE, BRUTE_MAX_SIZE - 1)
    for n in range(1, BRUTE_MAX_SIZE + 1):
        for d in range(0, BRUTE_MAX_SIZE):
            if not np.isfinite(table.expected[d, n]):
                assert n > max_nodes(width, d)
                with pytest.raises(BadInput, match=f"size {n}"):
                    best_tree(table, n, d)
                continue
            assert n <= max_nodes(width, d)
            parents = best_tree(table, n, d)
            assert len(parents) == n
            check_parents(parents)
            node_depths = depths(parents)
            assert max(node_depths) <= d
            assert node_depths == sorted(node_depths), "not in level order"
            assert max(ranks(parents)) <= width
            assert expected_tokens(parents, acceptance) == pytest.approx(table.expected[d, n], abs=1e-12, rel=0)
            # The tree is one of the brute-force optima.
            assert expected_tokens(parents, acceptance) == pytest.approx(brute_best(acceptance, n, d), abs=1e-12)


def test_table_for_smaller_bounds_is_a_prefix():
    # The table of a big problem contains the table of a small one.
    acceptance = [0.1, 0.5, 0.2]
    big = tree_table(acceptance, 30, 6)
    small = tree_table(acceptance, 10, 3)
    np.testing.assert_array_equal(big.expected[:4, :11], small.expected)


def test_width_one_gives_a_chain():
    a = 0.7
    table = tree_table([a], 12, 11)
    for n in range(1, 13):
        parents = best_tree(table, n, n - 1)
        assert parents == [-1] + list(range(n - 1))
        assert table.expected[n - 1, n] == pytest.approx(sum(a ** k for k in range(n)), abs=1e-12)
        # A chain of n nodes needs depth n - 1: nothing fits in less.
        if n >= 2:
            assert table.expected[n - 2, n] == -math.inf


def test_certain_acceptance_gives_n_tokens():
    table = tree_table([1.0], 20, 19)
    for n in range(1, 21):
        assert table.expected[n - 1, n] == pytest.approx(n, abs=1e-12)
        assert expected_tokens(best_tree(table, n, n - 1), [1.0]) == pytest.approx(n, abs=1e-12)


def test_size_one_is_the_root_only():
    table = tree_table([0.4, 0.3], 1, 0)
    assert table.expected[0, 1] == 1.0
    assert best_tree(table, 1, 0) == [-1]


def test_depth_zero_fits_only_the_root():
    table = tree_table([0.4, 0.3], 5, 3)
    assert table.expected[0, 1] == 1.0
    assert np.all(table.expected[0, 2:] == -math.inf)
    with pytest.raises(BadInput):
        best_tree(table, 2, 0)


def test_depth_one_is_a_star_of_the_first_ranks():
    acceptance = [0.5, 0.2, 0.1, 0.05]
    table = tree_table(acceptance, 5, 1)
    for n in range(1, 6):
        assert table.expected[1, n] == pytest.approx(1 + sum(acceptance[: n - 1]), abs=1e-12)
        assert best_tree(table, n, 1) == [-1] + [0] * (n - 1)


# ---------------------------------------------------------------- properties


@st.composite
def acceptance_vectors(draw):
    raw = draw(st.lists(st.floats(0.0, 1.0, allow_nan=False), min_size=1, max_size=6))
    total = sum(raw)
    if total > 1.0:
        scale = draw(st.floats(0.0, 1.0, allow_nan=False))
        raw = [x / total * scale for x in raw]
        if sum(raw) > 1.0:  # rounding
            raw = [x * (1 - 1e-12) for x in raw]
    return raw


@settings(deadline=None, max_examples=60, derandomize=True)
@given(acceptance=acceptance_vectors(), max_size=st.integers(1, 40), max_depth=st.integers(0, 8))
def test_table_is_monotone_and_rebuildable(acceptance, max_size, max_depth):
    table = tree_table(acceptance, max_size, max_depth)
    expected = table.expected
    width = len(acceptance)
    assert expected.shape == (max_depth + 1, max_size + 1)
    for d in range(max_depth + 1):
        for n in range(1, max_size + 1):
            # Finite exactly where a tree of n nodes and depth <= d exists.
            assert np.isfinite(expected[d, n]) == (n <= max_nodes(width, d)), (d, n)
            assert not np.isnan(expected[d, n])
            if np.isfinite(expected[d, n]):
                assert expected[d, n] >= 1.0
                if n >= 2:
                    assert expected[d, n] >= expected[d, n - 1] - 1e-12, ("n", d, n)
                if d >= 1:
                    assert expected[d, n] >= expected[d - 1, n] - 1e-12, ("d", d, n)
                parents = best_tree(table, n, d)
                assert len(parents) == n
                check_parents(parents)
                assert max(depths(parents)) <= d
                assert max(ranks(parents)) <= width
                assert expected_tokens(parents, acceptance) == pytest.approx(expected[d, n], rel=1e-12, abs=1e-12)
    # Never better than the tree where every node at depth < d has every child: the sum of
    # all path products of the full tree bounds any tree of depth <= d.
    full = sum(sum(acceptance) ** k for k in range(max_depth + 1))
    assert np.nanmax(np.where(np.isfinite(expected), expected, np.nan)) <= full + 1e-9


def test_large_table_runs_and_rebuilds():
    # Not a timing assertion: just that the size the optimizer uses (N=1024, D=32, W=32) works.
    rng = np.random.default_rng(7)
    raw = rng.random(32)
    acceptance = [float(x) for x in raw / raw.sum() * 0.92]
    table = tree_table(acceptance, 1024, 32)
    value = table.expected[32, 1024]
    assert np.isfinite(value)
    parents = best_tree(table, 1024, 32)
    assert len(parents) == 1024
    check_parents(parents)
    assert max(depths(parents)) <= 32
    assert sum(level_widths(parents)) == 1024
    assert expected_tokens(parents, acceptance) == pytest.approx(value, rel=1e-9)
    assert value >= table.expected[32, 1023]


# ---------------------------------------------------------------- helpers


def root_paths(parents: list[int]) -> Counter:
    """The multiset of every node's root path, written as the ranks along it."""
    node_ranks = ranks(parents)
    paths = [()] * len(parents)
    for i in range(1, len(parents)):
        paths[i] = paths[parents[i]] + (node_ranks[i],)
    return Counter(paths)


def random_parents(rng: random.Random, size: int) -> list[int]:
    return [-1] + [rng.randrange(i) for i in range(1, size)]


def test_level_order_keeps_ranks_and_parents():
    rng = random.Random(99)
    for size in list(range(1, 12)) + [40, 100]:
        for _ in range(20):
            parents = random_parents(rng, size)
            relabelled = level_order(parents)
            check_parents(relabelled)
            assert len(relabelled) == size
            assert root_paths(relabelled) == root_paths(parents)
            node_depths = depths(relabelled)
            assert node_depths == sorted(node_depths)
            assert level_widths(relabelled) == level_widths(parents)
            assert level_order(relabelled) == relabelled  # idempotent
            for acceptance in ([0.5, 0.3], [0.1, 0.6, 0.2]):
                assert expected_tokens(relabelled, acceptance) == pytest.approx(expected_tokens(parents, acceptance))


def test_level_order_example():
    # Depth-first labels -> breadth-first labels, ranks kept.
    parents = [-1, 0, 1, 1, 0, 4]
    assert level_order(parents) == [-1, 0, 0, 1, 1, 2]
    assert root_paths(level_order(parents)) == root_paths(parents)


def test_helpers_on_a_small_tree():
    parents = [-1, 0, 0, 1, 1, 2]
    assert depths(parents) == [0, 1, 1, 2, 2, 2]
    assert ranks(parents) == [0, 1, 2, 1, 2, 1]
    assert level_widths(parents) == [1, 2, 3]
    acceptance = [0.5, 0.25]
    # 1 + (.5 + .25) + (.5*.5 + .5*.25 + .25*.5)
    assert expected_tokens(parents, acceptance) == pytest.approx(1 + 0.75 + 0.25 + 0.125 + 0.125)
    # A rank past the vector's width is never accepted.
    assert expected_tokens([-1, 0, 0, 0], [0.5, 0.25]) == pytest.approx(1.75)


def test_max_nodes():
    assert max_nodes(1, 5) == 6
    assert max_nodes(2, 3) == 15
    assert max_nodes(3, 0) == 1
    assert max_nodes(3, 2) == 13
    for width in range(1, 4):
        for depth in range(0, 5):
            assert max_nodes(width, depth) == sum(width ** k for k in range(depth + 1))


@pytest.mark.parametrize(
    "parents, fault",
    [
        ([], "empty"),
        ([0], "parents[0]"),
        ([-1, 1], "parents[1]"),
        ([-1, 0, 3, 1], "parents[2]"),
        ([-1, -1], "parents[1]"),
        ([-1, 0.0], "parents[1]"),
        ([-1, True], "parents[1]"),
    ],
)
def test_check_parents_rejects(parents, fault):
    with pytest.raises(ValueError) as err:
        check_parents(parents)
    assert fault in str(err.value)


# ---------------------------------------------------------------- level-aware rows


def shape_value_by_level(shape: tuple, rows, level: int = 0) -> float:
    """Value of a subtree rooted at `level`: its children take row `level` (the last row for every
    deeper level), ranks past a row's length are never accepted."""
    row = rows[min(level, len(rows) - 1)]
    return 1.0 + sum((row[k] if k < len(row) else 0.0) * shape_value_by_level(child, rows, level + 1)
                     for k, child in enumerate(shape))


LEVEL_ROWS = [
    [[0.5, 0.2], [0.8, 0.1], [0.9]],  # acceptance climbs with the level, as measured on code
    [[0.9, 0.05], [0.3, 0.3]],  # and the other way round
    [[0.1, 0.6, 0.2], [0.7], [0.2, 0.2, 0.2], [0.95]],  # non-monotone rows of mixed widths
    [[0.0, 0.0], [1.0]],
]


@pytest.mark.parametrize("rows", LEVEL_ROWS, ids=lambda r: str(len(r)) + "-rows")
def test_level_aware_dp_matches_brute_force(rows):
    width = max(len(row) for row in rows)
    table = tree_table(rows, BRUTE_MAX_SIZE, BRUTE_MAX_SIZE - 1)
    for n in range(1, BRUTE_MAX_SIZE + 1):
        for d in range(0, n):
            values = [shape_value_by_level(s, rows) for s in shapes(n, width) if shape_depth(s) <= d]
            best = max(values, default=-math.inf)
            assert table.expected[d, n] == pytest.approx(best, abs=1e-12), (n, d)
            if math.isfinite(best):
                parents = best_tree(table, n, d)
                assert len(parents) == n and max(depths(parents)) <= d
                assert expected_tokens(parents, rows) == pytest.approx(best, abs=1e-12)


@pytest.mark.parametrize("acceptance", FIXED_VECTORS + NON_MONOTONE_VECTORS, ids=str)
def test_equal_rows_give_the_positional_dp(acceptance):
    positional = tree_table(acceptance, 24, 6)
    by_level = tree_table([acceptance] * 3, 24, 6)
    assert np.array_equal(positional.expected, by_level.expected)
    for n in range(1, 25):
        for d in range(0, 7):
            if np.isfinite(positional.expected[d, n]):
                assert best_tree(positional, n, d) == best_tree(by_level, n, d)


def test_rows_by_level_weigh_each_level_by_its_own_row():
    # A chain of 3: level 0's child takes row 0, level 1's row 1, deeper ones the last row.
    rows = [[0.5], [0.8], [0.9]]
    assert expected_tokens([-1, 0, 1, 2, 3], rows) == pytest.approx(1 + 0.5 + 0.4 + 0.36 + 0.324)
    assert expected_tokens([-1, 0, 1], [[0.5]]) == expected_tokens([-1, 0, 1], [0.5])


@pytest.mark.parametrize("rows", LEVEL_ROWS + [[0.6, 0.2, 0.1]], ids=str)
def test_level_summary_is_the_built_trees_widths_and_reach(rows):
    from sequoia_cli.tree import level_summary, path_probabilities

    table, memo = tree_table(rows, 30, 7), {}
    for n in range(1, 31):
        for d in range(0, 8):
            if not np.isfinite(table.expected[d, n]):
                continue
            parents = best_tree(table, n, d)
            nodes, reach = level_summary(table, n, d, memo)
            node_depths = depths(parents)
            assert nodes.tolist() == [node_depths.count(level) for level in range(d + 1)]
            probabilities = path_probabilities(parents, rows)
            assert reach == pytest.approx([sum(p for p, depth in zip(probabilities, node_depths) if depth == level)
                                           for level in range(d + 1)], abs=1e-12)
