"""Random RASP programs from the supported fragment: compiled model == interpreter on all inputs."""

from __future__ import annotations

import itertools

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from models.compiled import load_compiled, predict_batch
from rasp import (
    Aggregate,
    Comparison,
    LinearSequenceMap,
    Map,
    Select,
    SelectorAnd,
    SelectorNot,
    SelectorOr,
    SelectorWidth,
    SequenceMap,
    SOp,
    evaluate,
    indices,
    numerical,
    tokens,
)
from tests.rasp_cases import outputs_match

torch.set_num_threads(1)
VOCAB = (0, 1, 2)
MAX_LEN = 4
ALL_INPUTS = [list(x) for n in range(1, MAX_LEN + 1) for x in itertools.product(VOCAB, repeat=n)]
COMPARISONS = list(Comparison)


@st.composite
def selectors(draw, cat: list[SOp]):
    """A Select, or an And over any pairs, or an Or/Not over one (keys, queries) pair."""
    keys, queries = draw(st.sampled_from(cat)), draw(st.sampled_from(cat))
    first = Select(keys, queries, draw(st.sampled_from(COMPARISONS)))
    shape = draw(st.sampled_from(["one", "and", "or", "not"]))
    if shape == "one":
        return first
    if shape == "and":
        other = Select(
            draw(st.sampled_from(cat)),
            draw(st.sampled_from(cat)),
            draw(st.sampled_from(COMPARISONS)),
        )
        return SelectorAnd(first, other)
    second = Select(keys, queries, draw(st.sampled_from(COMPARISONS)))
    return SelectorOr(first, second) if shape == "or" else SelectorNot(first)


@st.composite
def programs(draw):
    """Up to 4 random steps over tokens and indices; the last s-op built is the output."""
    cat: list[SOp] = [tokens, indices]
    num: list[SOp] = []
    out: SOp = tokens
    for _ in range(draw(st.integers(1, 4))):
        kinds = ["map", "seqmap", "pick", "width", "to_num"] + (
            ["mean", "lin", "from_num"] if num else []
        )
        kind = draw(st.sampled_from(kinds))
        a, b, m = draw(st.integers(-2, 2)), draw(st.integers(-2, 2)), draw(st.integers(2, 4))
        x, y = draw(st.sampled_from(cat)), draw(st.sampled_from(cat))
        if kind == "map":
            out = Map(lambda v, a=a, b=b, m=m: (a * v + b) % m, x)
        elif kind == "seqmap":
            out = SequenceMap(lambda v, w, a=a, b=b, m=m: (a * v + b * w) % m, x, y)
        elif kind == "pick":  # keys = indices with EQ: at most one key per query
            sel = Select(indices, y, Comparison.EQ)
            if draw(st.booleans()):
                sel = SelectorAnd(sel, draw(selectors(cat)))
            out = Aggregate(sel, x)
        elif kind == "width":
            out = SelectorWidth(draw(selectors(cat)))
        elif kind == "to_num":
            out = numerical(Map(lambda v, a=a, m=m: (a * v) % m, x))
        elif kind == "mean":
            out = numerical(Aggregate(draw(selectors(cat)), draw(st.sampled_from(num)), default=0))
        elif kind == "lin":
            out = LinearSequenceMap(draw(st.sampled_from(num)), draw(st.sampled_from(num)), a, b)
        else:
            t = draw(st.sampled_from([0.0, 0.25, 0.5, 1.0]))
            out = Map(lambda v, t=t: v > t, draw(st.sampled_from(num)))
        (num if out.is_numerical else cat).append(out)
    return out


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(programs())
def test_random_programs_compile_to_the_interpreter(program):
    loaded = load_compiled(program, VOCAB, MAX_LEN)
    got = predict_batch(loaded, ALL_INPUTS)
    bad = [
        (x, g, evaluate(program, x))
        for x, g in zip(ALL_INPUTS, got)
        if not outputs_match(g, evaluate(program, x))
    ]
    assert bad == []
