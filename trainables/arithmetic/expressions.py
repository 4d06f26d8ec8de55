"""Prefix expressions: evaluation, the two accuracy notions and the decoder's output vocabulary.

Torch-free, so the driver can check every reference equation while validating data and the model side
can score beams without importing anything heavy.

Token kinds: an operator of ``OPERATORS`` (binary), a ``numberK`` slot (the K-th quantity of the
problem) or a numeric constant such as ``1.0`` or ``100``. Constants are compared in one canonical
spelling (``canonical_constant``: ``repr(float(x))``, so ``1``, ``1.0`` and ``1.00`` are all ``1.0``,
which is also how the SVAMP CSVs spell them).

Differences from the GTS-lineage evaluator SVAMP builds on, on purpose: ``^`` is evaluated (public
copies of its ``compute_prefix_expression`` reject every power through an always-true
``!= 2.0 or != 3.0`` test; no reference equation in the data uses ``^``), and non-finite or complex
results give ``None`` instead of an exception.
"""
from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass
from functools import cached_property
from typing import Iterable, Optional, Sequence

from .problem import NUMBER_PREFIX, OPERATORS, Problem, is_number_slot

# Decimal literal without exponent tricks like "inf"/"nan"/"1_0" that float() would also accept.
_CONSTANT = re.compile(r"[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
# SVAMP's value accuracy: |predicted - target| < 1e-4, absolute (not relative).
VALUE_TOLERANCE = 1e-4


def is_constant(token: str) -> bool:
    """A numeric literal (``1``, ``1.0``, ``0.25``, ``1e3``) that is not an operator."""
    return bool(_CONSTANT.fullmatch(token)) and math.isfinite(float(token))


def canonical_constant(token: str) -> str:
    """The one spelling of a constant used in the vocabulary: ``repr(float(token))``."""
    return repr(float(token))


def slot_index(token: str) -> int:
    """K of ``numberK`` (call only when ``is_number_slot(token)``)."""
    return int(token[len(NUMBER_PREFIX):])


def is_well_formed(tokens: Sequence[str]) -> bool:
    """Every operator has exactly two operands and nothing trails: the prefix arity count.

    Only the shape is checked (operators vs anything else); ``evaluate_prefix`` checks the leaves."""
    need = 1
    for token in tokens:
        if need == 0:
            return False          # a complete tree is followed by more tokens
        need += 1 if token in OPERATORS else -1
    return need == 0 and len(tokens) > 0


def _apply(op: str, a: float, b: float) -> Optional[float]:
    try:
        if op == "+":
            value = a + b
        elif op == "-":
            value = a - b
        elif op == "*":
            value = a * b
        elif op == "/":
            if b == 0:
                return None
            value = a / b
        else:  # "^"
            value = a ** b
    except (OverflowError, ZeroDivisionError, ValueError):
        return None
    if isinstance(value, complex) or not math.isfinite(value):
        return None
    return float(value)


def _leaf(token: str, numbers: Sequence[float]) -> Optional[float]:
    if is_number_slot(token):
        k = slot_index(token)
        return float(numbers[k]) if k < len(numbers) else None
    if is_constant(token):
        return float(token)
    return None


def evaluate_prefix(tokens: Sequence[str], numbers: Sequence[float]) -> Optional[float]:
    """Value of a prefix expression, or ``None`` if it is not a valid tree (missing or extra operands,
    unknown token, slot beyond ``numbers``) or the arithmetic fails (division by zero, overflow, a
    complex power, a non-finite result). Iterative: a right-to-left scan with an operand stack."""
    if not tokens:
        return None
    stack: list[float] = []
    for token in reversed(tokens):
        if token in OPERATORS:
            if len(stack) < 2:
                return None
            a = stack.pop()
            b = stack.pop()
            value = _apply(token, a, b)
        else:
            value = _leaf(token, numbers)
        if value is None:
            return None
        stack.append(value)
    return stack[0] if len(stack) == 1 else None


def target_value(problem: Problem) -> float:
    """The value a correct prediction must reach: the reference equation's value (SVAMP's
    ``compute_prefix_tree_result`` compares with it), falling back to ``Answer`` if it does not
    evaluate (the loader rejects such rows, so only hand-made problems get there)."""
    value = evaluate_prefix(problem.equation, problem.numbers)
    return problem.answer if value is None else value


def value_correct(pred_tokens: Sequence[str], problem: Problem, tol: float = VALUE_TOLERANCE,
                  against: str = "equation") -> bool:
    """Value accuracy: the prediction evaluates to within ``tol`` (absolute, as SVAMP's
    ``abs(a - b) < 1e-4``) of the target; an unevaluable prediction is wrong.

    ``against="equation"`` (default, as SVAMP) takes the reference equation's value as the target;
    ``against="answer"`` takes the ``Answer`` column. They differ on 15 distinct real problems whose
    Answer is rounded (3.333 for 10/3) or wrong (5.0 for 40/7), where scoring against Answer would
    mark even the reference equation wrong."""
    if against not in ("equation", "answer"):
        raise ValueError(f"against must be 'equation' or 'answer', got {against!r}")
    value = evaluate_prefix(pred_tokens, problem.numbers)
    target = target_value(problem) if against == "equation" else problem.answer
    return value is not None and abs(value - target) < tol


def equation_correct(pred_tokens: Sequence[str], problem: Problem) -> bool:
    """Equation accuracy: the token sequence equals the reference (constants compared canonically)."""
    return _normalised(pred_tokens) == _normalised(problem.equation)


def _normalised(tokens: Iterable[str]) -> tuple:
    return tuple(canonical_constant(t) if is_constant(t) else t for t in tokens)


@dataclass(frozen=True)
class OutputVocab:
    """The decoder's output tokens, in the order the tree decoder scores them: operators
    (``OPERATORS``), then constants ("generate nums"), then the slots ``number0 .. number{max-1}``.

    Built by ``build`` from the problems it is given (normally the train split only)."""

    constants: tuple
    max_numbers: int

    @classmethod
    def build(cls, train_problems: Iterable[Problem], min_count: int = 5,
              extra_problems: Iterable[Problem] = (), count_occurrences: bool = False
              ) -> "OutputVocab":
        """Constants used in at least ``min_count`` equations of ``train_problems`` (canonical
        spelling, sorted by value); ``max_numbers`` = the most quantities in one problem of
        ``train_problems`` and ``extra_problems``. Pass the dev split as ``extra_problems`` so a dev
        problem with more quantities than any training problem still gets a slot for each (the extra
        slots are never trained, but masks and graphs fit); it does not influence the constants.

        SVAMP's ``transfer_num`` counts every *occurrence* and over train *and* dev equations, so in
        cross-validation every fold gets the constants of the whole dataset (MAWPS: 0.01 0.1 0.5 1.0
        3.0 4.0 7.0 12.0 100.0; ASDiv-A: none). Train-only counting per equation gives 4 to 7 of them
        per MAWPS fold. ``build(train + dev, count_occurrences=True)`` reproduces the reference."""
        counts: Counter = Counter()
        max_numbers = 0
        for problem in train_problems:
            found = [canonical_constant(t) for t in problem.equation if is_constant(t)]
            counts.update(found if count_occurrences else set(found))
            max_numbers = max(max_numbers, len(problem.numbers))
        for problem in extra_problems:
            max_numbers = max(max_numbers, len(problem.numbers))
        constants = sorted((c for c, n in counts.items() if n >= min_count), key=lambda c: (float(c), c))
        return cls(constants=tuple(constants), max_numbers=max_numbers)

    @cached_property
    def tokens(self) -> tuple:
        """All output tokens in index order (computed once)."""
        return (tuple(OPERATORS) + self.constants
                + tuple(f"{NUMBER_PREFIX}{k}" for k in range(self.max_numbers)))

    @property
    def num_operators(self) -> int:
        return len(OPERATORS)

    @property
    def num_constants(self) -> int:
        return len(self.constants)

    @property
    def number_offset(self) -> int:
        """Index of ``number0``."""
        return self.num_operators + self.num_constants

    @property
    def size(self) -> int:
        return self.number_offset + self.max_numbers

    def index(self, token: str) -> int:
        """Position of ``token``; ``KeyError`` if it is not in the vocabulary."""
        if token in OPERATORS:
            return OPERATORS.index(token)
        if is_number_slot(token):
            k = slot_index(token)
            if k < self.max_numbers and token == f"{NUMBER_PREFIX}{k}":
                return self.number_offset + k
        elif is_constant(token):
            canonical = canonical_constant(token)
            if canonical in self.constants:
                return self.num_operators + self.constants.index(canonical)
        raise KeyError(token)

    def token(self, i: int) -> str:
        if not 0 <= i < self.size:
            raise IndexError(f"output index {i} out of range 0..{self.size - 1}")
        return self.tokens[i]

    def arity(self, i: int) -> int:
        """2 for an operator, 0 for a constant or a slot."""
        return 2 if 0 <= i < self.num_operators else 0

    def encode(self, equation: Sequence[str]) -> Optional[list]:
        """Indices of the tokens, or ``None`` if one is not in the vocabulary."""
        try:
            return [self.index(t) for t in equation]
        except KeyError:
            return None

    def decode(self, indices: Iterable[int]) -> list:
        return [self.token(i) for i in indices]

    def usable_for_training(self, problem: Problem) -> bool:
        """The reference equation is expressible: every token in the vocabulary and every slot below
        ``len(problem.numbers)`` (a rare constant makes a problem unusable as a training target)."""
        return (self.encode(problem.equation) is not None
                and all(slot_index(t) < len(problem.numbers)
                        for t in problem.equation if is_number_slot(t)))
