"""Graph2Tree's word graphs on hand-made problems with known adjacency, and on the bundled sample."""
from __future__ import annotations

import numpy as np
import pytest

from smctune.trainables.arithmetic.data import load_split
from smctune.trainables.arithmetic.graphs import (GRAPH_NAMES, REFERENCE_HEADS, build_graphs,
                                                  graph_index)
from smctune.trainables.arithmetic.problem import Problem


def make(text: str, numbers, group) -> Problem:
    return Problem(text=tuple(text.split()), numbers=tuple(float(n) for n in numbers),
                   equation=("number0",), answer=float(numbers[0]), group_nums=tuple(group),
                   source="test")


def adjacency(length: int, n: int, edges=(), directed=()) -> np.ndarray:
    """Self-loops on the first ``n`` words, plus symmetric ``edges`` and one-way ``directed``."""
    a = np.zeros((length, length), dtype=np.float32)
    a[np.arange(n), np.arange(n)] = 1
    for i, j in edges:
        a[i, j] = a[j, i] = 1
    for i, j in directed:
        a[i, j] = 1
    return a


def test_names_and_heads():
    assert GRAPH_NAMES == ("quantity_cell", "greater", "lower", "quantity_between", "attribute_between")
    assert all(name in GRAPH_NAMES for name in REFERENCE_HEADS)
    assert graph_index("greater") == 1 and graph_index("attribute_between") == 4


def test_two_quantities_exact_matrices():
    #        0   1   2       3      4   5       6     7
    text = "tom has number0 apples and number1 pears ."
    problem = make(text, (3, 5), group=[1, 2, 3, 5, 6])
    g = build_graphs(problem, 10)
    assert g.shape == (5, 10, 10) and g.dtype == np.float32
    n = 8
    # cells: 1 (has), 3 (apples), 6 (pears); 2 and 5 are the quantities themselves.
    # number0@2 reaches 1 and 3 (distance 1); 6 is 4 away. number1@5 reaches 3 (2 away) and 6.
    cell = adjacency(10, n, edges=[(2, 1), (2, 3), (5, 3), (5, 6)])
    np.testing.assert_array_equal(g[0], cell)
    np.testing.assert_array_equal(g[1], adjacency(10, n, directed=[(5, 2)]))      # 5 > 3
    np.testing.assert_array_equal(g[2], adjacency(10, n, directed=[(2, 5)]))      # 3 < 5
    np.testing.assert_array_equal(g[3], cell + adjacency(10, 0, edges=[(2, 5)]))
    # attribute: the two slots are both "NUM" words in the cell list -> linked
    np.testing.assert_array_equal(g[4], cell + adjacency(10, 0, edges=[(2, 5)]))


def test_equal_values_repeated_words_and_clipped_cells():
    #        0   1       2     3   4   5   6       7      8
    text = "sam had number0 apples , amy had number1 apples"
    # position 12 is past the 9-word question (such positions occur in MAWPS) and is ignored
    problem = make(text, (4, 4), group=[1, 2, 3, 6, 7, 8, 12])
    g = build_graphs(problem, 9)
    n = 9
    cell = adjacency(9, n, edges=[(2, 1), (2, 3), (7, 6), (7, 8)])
    np.testing.assert_array_equal(g[0], cell)
    both = adjacency(9, n, edges=[(2, 7)])
    np.testing.assert_array_equal(g[1], both)                 # equal values: both directions
    np.testing.assert_array_equal(g[2], both)
    # same words among the cells: had(1, 6), apples(3, 8), the slots (2, 7)
    expected = cell + adjacency(9, 0, edges=[(1, 6), (3, 8), (2, 7)])
    np.testing.assert_array_equal(g[4], np.minimum(expected, 1))


def test_three_quantities_comparison_is_a_total_order():
    text = "a number0 b number1 c number2 d"
    problem = make(text, (2, 9, 5), group=[])
    g = build_graphs(problem, 7)
    # positions 1, 3, 5 with values 2, 9, 5: 9 > 5 > 2
    greater = adjacency(7, 7, directed=[(3, 1), (3, 5), (5, 1)])
    np.testing.assert_array_equal(g[1], greater)
    np.testing.assert_array_equal(g[2], greater.T)
    np.testing.assert_array_equal(g[0], adjacency(7, 7))      # no cells: self-loops only
    np.testing.assert_array_equal(g[3], adjacency(7, 7, edges=[(1, 3), (1, 5), (3, 5)]))


def test_padding_and_length_check():
    problem = make("x number0 y", (1,), group=[0, 1, 2])
    g = build_graphs(problem, 6)
    assert g.shape == (len(GRAPH_NAMES), 6, 6)
    assert not g[:, 3:, :].any() and not g[:, :, 3:].any()
    assert (g[:, np.arange(3), np.arange(3)] == 1).all()
    with pytest.raises(ValueError):
        build_graphs(problem, 2)


def test_bundled_problems_structure():
    data = load_split("mawps", None, 0)
    for problem in data.train[:300] + data.dev[:100]:
        n = len(problem.text)
        g = build_graphs(problem, n + 3)
        assert set(np.unique(g)) <= {0.0, 1.0}
        for name in ("quantity_cell", "quantity_between", "attribute_between"):
            a = g[graph_index(name)]
            np.testing.assert_array_equal(a, a.T)
        np.testing.assert_array_equal(g[2], g[1].T)
        assert (g[:, np.arange(n), np.arange(n)] == 1).all()
        assert not g[:, n:, :].any()
