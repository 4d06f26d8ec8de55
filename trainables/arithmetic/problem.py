"""The record every arithmetic module shares: one math word problem as the SVAMP CSVs give it.

Torch-free and dependency-free so the CLI driver can parse and validate data without the model side.
"""
from __future__ import annotations

from dataclasses import dataclass

# Binary operators of the prefix equations, in output-vocabulary order (SVAMP/GTS's ``op_list``).
OPERATORS = ("+", "-", "*", "/", "^")
# How the CSVs mask the problem's quantities in the text and the equation: number0, number1, ...
NUMBER_PREFIX = "number"


@dataclass(frozen=True)
class Problem:
    """One problem. ``text`` is the ``Question`` column split on whitespace (numbers appear as
    ``number0``...); ``equation`` the prefix ``Equation`` split on whitespace (operators, ``numberK``
    slots, constants such as ``1.0``); ``group_nums`` the word positions of the quantity cells
    (Graph2Tree's quantity cell graph); ``source`` is ``file:row`` for messages."""

    text: tuple
    numbers: tuple
    equation: tuple
    answer: float
    group_nums: tuple
    source: str

    @property
    def number_positions(self) -> tuple:
        """Word index of each ``numberK`` in ``text``, in order of K."""
        found = {word: i for i, word in enumerate(self.text) if is_number_slot(word)}
        return tuple(found[f"{NUMBER_PREFIX}{k}"] for k in range(len(self.numbers)))


def is_number_slot(token: str) -> bool:
    """``number0``, ``number12``: a masked quantity of the problem."""
    return token.startswith(NUMBER_PREFIX) and token[len(NUMBER_PREFIX):].isdigit()
