"""Graph2Tree's word graphs over one problem (Zhang et al., ACL 2020), torch-free (numpy only).

Graph2Tree runs graph convolutions over the encoder's word states; each graph is a 0/1 adjacency
matrix over the word positions of the question. The reference code (``get_single_batch_graph`` in
``src/utils/pre_data.py`` of the SVAMP repository, copied from the Graph2Tree authors' repository)
builds five of them, and we keep its order (``GRAPH_NAMES``):

0 ``quantity_cell``      quantity <-> the words of its quantity cell: a ``group_nums`` position
                         within distance 3 of the quantity that is not itself a quantity; symmetric.
1 ``greater``            quantity comparison graph: an edge a -> b (row a, column b) between two
                         quantities when value_a > value_b; equal values are linked both ways
                         (the reference's ``else`` branch), so it is value_a >= value_b.
2 ``lower``              the transpose of ``greater`` (value_a <= value_b).
3 ``quantity_between``   ``quantity_cell`` plus every quantity linked to every other quantity.
4 ``attribute_between``  ``quantity_cell`` plus every two ``group_nums`` positions holding the same
                         word (all number slots count as one word, as the reference's ``NUM``).

Every graph has a self-loop on each real word (not on padding), and ``group_nums`` positions at or
beyond the end of the question are ignored (the reference clips at the sequence length). The
reference model uses only two of them: its ``Graph_Module`` feeds ``greater`` to two of its four GCN
heads and ``attribute_between`` to the other two (``REFERENCE_HEADS``), unnormalised.

Differences from the reference, on purpose: word identity in ``attribute_between`` compares the
words themselves, whereas the reference compares vocabulary ids, so two different words trimmed to
``UNK`` would be linked there; and positions are those of the whitespace split of ``Question`` (the
reference tokenises with nltk, which agrees except on a few ASDiv-A rows with quote marks).
"""
from __future__ import annotations

import numpy as np

from .problem import Problem, is_number_slot

GRAPH_NAMES = ("quantity_cell", "greater", "lower", "quantity_between", "attribute_between")
# The graphs the reference Graph_Module gives its four GCN heads, in head order.
REFERENCE_HEADS = ("greater", "greater", "attribute_between", "attribute_between")
# A cell word joins a quantity only if it is this close (reference: ``abs(i - j) < 4``).
CELL_WINDOW = 3
_NUM = object()   # stands for every number slot when comparing words


def build_graphs(problem: Problem, length: int) -> np.ndarray:
    """The ``len(GRAPH_NAMES)`` graphs of ``problem`` padded to ``length`` words: float32 0/1 array
    of shape ``(5, length, length)``; rows and columns at or beyond ``len(problem.text)`` are 0."""
    n = len(problem.text)
    if length < n:
        raise ValueError(f"length {length} is shorter than the question ({n} words)")
    positions = problem.number_positions
    values = problem.numbers
    quantities = set(positions)
    cells = sorted({p for p in problem.group_nums if p < n})

    self_loops = np.zeros((length, length), dtype=np.float32)
    self_loops[np.arange(n), np.arange(n)] = 1.0

    cell = self_loops.copy()
    for q in positions:
        for c in cells:
            if c not in quantities and abs(q - c) <= CELL_WINDOW:
                cell[q, c] = cell[c, q] = 1.0

    greater = self_loops.copy()
    for a, pa in enumerate(positions):
        for b, pb in enumerate(positions):
            if a != b and values[a] >= values[b]:
                greater[pa, pb] = 1.0
    lower = np.ascontiguousarray(greater.T)

    between = cell.copy()
    for pa in positions:
        for pb in positions:
            between[pa, pb] = 1.0

    attribute = cell.copy()
    words = [_NUM if is_number_slot(problem.text[c]) else problem.text[c] for c in cells]
    for i, ci in enumerate(cells):
        for j, cj in enumerate(cells):
            if words[i] == words[j]:
                attribute[ci, cj] = 1.0

    return np.stack([cell, greater, lower, between, attribute])


def graph_index(name: str) -> int:
    """Position of the graph called ``name`` in ``build_graphs``' output (``ValueError`` if unknown)."""
    return GRAPH_NAMES.index(name)
