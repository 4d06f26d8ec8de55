"""Prefix-expression evaluation, the accuracy notions and the output vocabulary (torch-free)."""
from __future__ import annotations

import pytest

from smctune.trainables.arithmetic.data import answer_mismatches, load_split
from smctune.trainables.arithmetic.expressions import (OutputVocab, canonical_constant,
                                                       equation_correct, evaluate_prefix,
                                                       is_constant, is_well_formed, target_value,
                                                       value_correct)
from smctune.trainables.arithmetic.problem import OPERATORS, Problem


def make(equation: str, numbers=(), answer=None, text=None) -> Problem:
    """A hand-made problem whose question mentions every slot once."""
    text = text or " ".join(["q"] + [f"number{k}" for k in range(len(numbers))])
    tokens = tuple(equation.split())
    if answer is None:
        answer = evaluate_prefix(tokens, numbers)
    return Problem(text=tuple(text.split()), numbers=tuple(float(n) for n in numbers), equation=tokens,
                   answer=float(answer), group_nums=(), source="test")


def ev(expression: str, *numbers):
    return evaluate_prefix(expression.split(), numbers)


# --------------------------------------------------------------------------------------------------
# evaluation

@pytest.mark.parametrize("expression, numbers, value", [
    ("+ number0 number1", (3, 5), 8.0),
    ("- number0 number1", (3, 5), -2.0),
    ("/ number0 number1", (1, 4), 0.25),
    ("/ number1 number0", (3, 10), 10 / 3),
    ("- * number0 number1 number2", (2, 3, 4), 2.0),     # (2*3)-4
    ("* number0 - number1 number2", (2, 3, 4), -2.0),    # 2*(3-4)
    ("/ + number0 number1 2.0", (50, 60), 55.0),
    ("* / - number1 number0 number0 100.0", (50, 75), 50.0),
    ("^ number0 2", (3,), 9.0),
    ("^ number0 0.5", (16,), 4.0),
    ("* number0 1", (7,), 7.0),
    ("number1", (7, 8), 8.0),
    ("12.0", (), 12.0),
    ("+ 1 0.01", (), 1.01),
])
def test_known_values(expression, numbers, value):
    assert ev(expression, *numbers) == pytest.approx(value, abs=1e-12)


@pytest.mark.parametrize("expression, numbers", [
    ("", ()),
    ("+ number0", (1,)),                          # too few operands
    ("+", ()),
    ("number0 number1", (1, 2)),                  # trailing operand
    ("+ number0 number1 number0", (1, 2)),
    ("% number0 number1", (1, 2)),                # unknown operator
    ("+ number0 x", (1,)),                        # unknown token
    ("+ number0 nan", (1,)),                      # float() would accept it; not a constant
    ("+ number0 inf", (1,)),
    ("+ number0 number2", (1, 2)),                # slot out of range
    ("/ number0 number1", (1, 0)),                # division by zero
    ("/ number0 - number1 number1", (1, 3)),
    ("^ number0 0.5", (-8,)),                     # complex result
    ("^ number0 1000", (10,)),                    # overflow
    ("* number0 number0", (1e200,)),              # infinite result
])
def test_invalid_or_failing_expressions_give_none(expression, numbers):
    assert ev(expression, *numbers) is None


def test_deep_expression_needs_no_recursion():
    depth = 20000
    tokens = ["+"] * depth + ["1"] * (depth + 1)
    assert evaluate_prefix(tokens, ()) == depth + 1
    assert is_well_formed(tokens)


@pytest.mark.parametrize("tokens, ok", [
    ("+ a b", True), ("a", True), ("- * a b c", True), ("* a - b c", True),
    ("", False), ("+ a", False), ("a b", False), ("+ a b c", False), ("+ + a b", False),
])
def test_is_well_formed(tokens, ok):
    assert is_well_formed(tokens.split()) is ok


def test_constants_are_normalised():
    assert canonical_constant("1") == canonical_constant("1.0") == canonical_constant("1.00") == "1.0"
    assert canonical_constant("100") == "100.0"
    assert canonical_constant("0.01") == "0.01"
    assert is_constant("3") and is_constant("-2.5") and is_constant(".5") and is_constant("1e3")
    assert not any(is_constant(t) for t in ("nan", "inf", "1_0", "+", "number0", "", "1.2.3"))


# --------------------------------------------------------------------------------------------------
# accuracy

def test_value_correct_uses_absolute_tolerance():
    p = make("+ number0 number1", (500, 500))            # 1000
    assert value_correct(["*", "number0", "2"], p)        # different equation, same value
    assert not value_correct(["+", "number0", "number0"], make("- number0 number1", (3, 2)))
    near = make("1000.0", ())
    assert value_correct(["1000.00005"], near)
    assert not value_correct(["1000.0002"], near)         # relative 2e-7 would pass; absolute does not
    assert not value_correct(["+", "number0"], p)         # malformed prediction
    assert not value_correct(["/", "number0", "0"], p)    # unevaluable prediction


def test_value_correct_targets_the_equation_value_not_a_rounded_answer():
    # a real ASDiv-A row: 10 / 3 with Answer 3.333
    p = make("/ number1 number0", (3, 10), answer=3.333)
    assert target_value(p) == pytest.approx(10 / 3)
    assert value_correct(list(p.equation), p)
    assert not value_correct(list(p.equation), p, against="answer")
    assert value_correct(["3.333"], p, against="answer")
    with pytest.raises(ValueError):
        value_correct(list(p.equation), p, against="nope")


def test_equation_correct_compares_tokens_with_canonical_constants():
    p = make("* number0 100.0", (3,))
    assert equation_correct(["*", "number0", "100.0"], p)
    assert equation_correct(["*", "number0", "100"], p)
    assert not equation_correct(["*", "100.0", "number0"], p)   # same value, other equation
    assert value_correct(["*", "100.0", "number0"], p)


BUNDLED_MISMATCHES = {("mawps", 0): (11, 3), ("asdiv-a", 0): (1, 0), ("svamp", None): (6, 0)}


@pytest.mark.parametrize("dataset, fold", list(BUNDLED_MISMATCHES))
def test_bundled_equations_evaluate_to_their_answers(dataset, fold):
    """Every bundled reference equation evaluates; it matches Answer within 1e-4 except on the rows
    documented in data.py / PROVENANCE.md (rounded or wrong answers)."""
    data = load_split(dataset, None, fold)
    for split in ("train", "dev"):
        problems = getattr(data, split)
        assert all(evaluate_prefix(p.equation, p.numbers) is not None for p in problems)
        assert all(value_correct(list(p.equation), p) for p in problems)
    counts = (len(answer_mismatches(data.train)), len(answer_mismatches(data.dev)))
    assert counts == BUNDLED_MISMATCHES[(dataset, fold)]


# --------------------------------------------------------------------------------------------------
# output vocabulary

def training_set():
    return ([make("* number0 100.0", (3,))] * 4 + [make("* number0 100", (2, 4))]   # 100 in 5
            + [make("- number0 1.0", (5,))] * 3 + [make("+ number0 + 1 1", (6, 7, 8))]  # 1 in 4
            + [make("+ number0 0.5", (1,))] * 6)                                     # 0.5 in 6


def test_vocab_order_and_counts():
    vocab = OutputVocab.build(training_set(), min_count=5)
    assert vocab.constants == ("0.5", "100.0")            # sorted by value; 1.0 only in 4 equations
    assert vocab.max_numbers == 3
    assert vocab.tokens == (*OPERATORS, "0.5", "100.0", "number0", "number1", "number2")
    assert vocab.num_operators == len(OPERATORS) == 5
    assert vocab.num_constants == 2
    assert vocab.number_offset == 7
    assert vocab.size == 10
    assert [vocab.arity(i) for i in range(vocab.size)] == [2] * 5 + [0] * 5
    assert vocab.index("number2") == 9 and vocab.token(9) == "number2"
    assert vocab.index("100") == vocab.index("100.0") == 6
    with pytest.raises(KeyError):
        vocab.index("1.0")
    with pytest.raises(KeyError):
        vocab.index("number3")
    with pytest.raises(KeyError):
        vocab.index("number01")
    with pytest.raises(IndexError):
        vocab.token(10)


def test_vocab_encode_decode_and_usable():
    vocab = OutputVocab.build(training_set(), min_count=5)
    assert vocab.encode(["*", "number0", "100"]) == [2, 7, 6]
    assert vocab.decode([2, 7, 6]) == ["*", "number0", "100.0"]
    assert vocab.encode(["-", "number0", "1.0"]) is None
    assert vocab.usable_for_training(make("+ number0 0.5", (1,)))
    assert not vocab.usable_for_training(make("- number0 1.0", (5,)))      # rare constant
    # counted once per equation by default, per occurrence on request (SVAMP's way)
    assert OutputVocab.build(training_set(), min_count=5, count_occurrences=True).constants == \
        ("0.5", "1.0", "100.0")


def test_vocab_extra_problems_widen_slots_only():
    train = training_set()
    dev = [make("+ number0 number4", (1, 2, 3, 4, 5))] + [make("* number0 7", (1,))] * 9
    vocab = OutputVocab.build(train, min_count=5, extra_problems=dev)
    assert vocab.max_numbers == 5
    assert vocab.constants == ("0.5", "100.0")
    assert vocab.encode(dev[0].equation) == [0, 7, 11]
