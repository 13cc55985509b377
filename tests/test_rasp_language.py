"""RASP language and interpreter: semantics, names and errors."""

from __future__ import annotations

import pytest

from rasp import (
    LIBRARY,
    Aggregate,
    Comparison,
    EvaluationError,
    Full,
    Map,
    RaspTypeError,
    Select,
    SelectorAnd,
    SelectorNot,
    SelectorWidth,
    SequenceMap,
    categorical,
    evaluate,
    indices,
    length,
    numerical,
    tokens,
)
from rasp import library as lib


@pytest.mark.parametrize("name", sorted(LIBRARY))
def test_library_examples_evaluate_as_documented(name):
    entry = LIBRARY[name]
    got = evaluate(entry.build(), list(entry.example[0]))
    want = list(entry.example[1])
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g == pytest.approx(w, abs=1e-9)


def test_comparison_is_predicate_of_key_then_query():
    # LT selects keys smaller than the query: query 2 (value 3) selects keys with 1 and 2.
    sel = Select(tokens, tokens, Comparison.LT)
    assert evaluate(sel, [1, 2, 3])[2] == [True, True, False]
    assert evaluate(SelectorWidth(Select(tokens, tokens, Comparison.GT)), [1, 2, 3]) == [2, 1, 0]
    assert Comparison.GEQ(3, 2) and not Comparison.GEQ(2, 3)


def test_primitives_and_length():
    assert evaluate(tokens, ["a", "b"]) == ["a", "b"]
    assert evaluate(indices, ["a", "b", "c"]) == [0, 1, 2]
    assert evaluate(length, [7, 7, 7, 7]) == [4, 4, 4, 4]
    assert evaluate(Full(5), [1, 2]) == [5, 5]
    assert evaluate(length - indices - 1, [1, 2, 3]) == [2, 1, 0]
    assert evaluate(2 * tokens + 1, [1, 2]) == [3, 5]


def test_numerical_aggregate_is_mean_and_zero_when_nothing_selected():
    vals = numerical(Map(lambda t: t, tokens))
    before = Select(indices, indices, Comparison.LT)
    assert evaluate(numerical(Aggregate(before, vals, default=0)), [4, 2, 6]) == [0, 4, 3]


def test_categorical_aggregate_default_none_and_selector_combinators():
    nxt = Aggregate(Select(indices, indices + 1, Comparison.EQ), tokens)
    assert evaluate(nxt, [1, 2, 3]) == [2, 3, None]
    both = SelectorAnd(
        Select(tokens, tokens, Comparison.EQ), Select(indices, indices, Comparison.LT)
    )
    assert evaluate(SelectorWidth(both), [1, 2, 1, 1]) == [0, 0, 1, 2]
    assert evaluate(
        SelectorWidth(SelectorNot(Select(indices, indices, Comparison.LEQ))), [0, 0, 0]
    ) == [2, 1, 0]
    assert evaluate(
        SelectorWidth(
            Select(tokens, tokens, Comparison.TRUE) | Select(tokens, tokens, Comparison.FALSE)
        ),
        [1, 2],
    ) == [2, 2]


def test_none_is_never_selected_and_maps_to_default():
    nxt = Aggregate(Select(indices, indices + 1, Comparison.EQ), tokens).named("nxt")
    assert evaluate(Map(lambda x: x * 10, nxt), [1, 2]) == [20, None]
    assert evaluate(numerical(Map(lambda x: x * 10, nxt)), [1, 2]) == [20, 0]
    every = SelectorWidth(Select(nxt, nxt, Comparison.TRUE))
    assert evaluate(every, [1, 2, 3]) == [2, 2, 0]
    assert evaluate(SelectorWidth(~Select(nxt, nxt, Comparison.FALSE)), [1, 2, 3]) == [2, 2, 0]


def test_auto_names_are_unique_and_named_copies():
    a, b = Map(lambda x: x, tokens), Map(lambda x: x, tokens)
    assert a.label != b.label and a.label.startswith("map_")
    assert SequenceMap(max, tokens, indices).label.startswith("sequence_map_")
    c = a.named("succ")
    assert c.label == "succ" and a.label != "succ" and c.f is a.f
    with pytest.raises(RaspTypeError, match="non-empty"):
        a.named("")


def test_categorical_aggregate_with_two_selected_keys_names_expression():
    agg = Aggregate(Select(tokens, tokens, Comparison.EQ), tokens).named("dup_agg")
    with pytest.raises(EvaluationError, match=r"dup_agg.*query 0 selects 2"):
        evaluate(agg, [1, 1])


def test_encoding_errors_name_the_expression():
    cat = Map(lambda t: t, tokens).named("cat_sop")
    num = numerical(Map(lambda t: t, tokens)).named("num_sop")
    sel = Select(indices, indices, Comparison.LEQ)
    with pytest.raises(RaspTypeError, match=r"mean_agg.*'cat_sop' is categorical"):
        numerical(Aggregate(sel, cat).named("mean_agg"))
    with pytest.raises(RaspTypeError, match=r"pick_agg.*'num_sop' is numerical"):
        categorical(Aggregate(sel, num).named("pick_agg"))
    with pytest.raises(RaspTypeError, match=r"default.*got 3"):
        Aggregate(sel, cat, default=3)
    with pytest.raises(RaspTypeError, match="keys must be a SOp"):
        Select([1, 2], tokens, Comparison.EQ)
    with pytest.raises(RaspTypeError, match="predicate must be a Comparison"):
        Select(tokens, tokens, "EQ")
    with pytest.raises(RaspTypeError, match="must be callable"):
        Map(3, tokens)
    assert Aggregate(sel, num).encoding == "numerical"


def test_function_errors_name_the_expression():
    bad = Map(lambda x: 1 // x, tokens).named("inv")
    with pytest.raises(EvaluationError, match=r"inv.*0"):
        evaluate(bad, [1, 0])


def test_sort_breaks_ties_by_position_and_sort_freq():
    assert evaluate(lib.make_sort(), [3, 1, 3, 2, 1]) == [1, 1, 2, 3, 3]
    assert evaluate(lib.make_sort_freq(), [1, 2, 2, 3, 3]) == [2, 2, 3, 3, 1]


def test_shuffle_dyck_rejects_unbalanced():
    dyck = lib.make_shuffle_dyck()
    assert evaluate(dyck, list("())(")) == [False] * 4
    assert evaluate(dyck, list("(()")) == [False] * 3
    dyck2 = lib.make_shuffle_dyck2()
    assert evaluate(dyck2, list("({)}")) == [True] * 4
    assert evaluate(dyck2, list("(}{)")) == [False] * 4
