"""Shared table of RASP programs for oracle tests: compiled model == ``rasp.evaluate``.

Each case has hand-picked inputs (the Tracr paper's example first) and draws random inputs
of every length 1..max_seq_len.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from rasp import (
    LIBRARY,
    Aggregate,
    Comparison,
    Full,
    LinearSequenceMap,
    Map,
    Select,
    SelectorNot,
    SelectorOr,
    SelectorWidth,
    SOp,
    indices,
    numerical,
    tokens,
)
from rasp.library import make_frac_prevs

#: Numerical outputs are compared within this absolute tolerance: the weights are float32
#: (relative error ~6e-8 per operation) and hard attention leaks ~exp(-50) to unselected
#: keys, so the real error is ~1e-7; 1e-4 is far below the 1/30 gap between distinct values.
NUM_TOL = 1e-4


@dataclass(frozen=True)
class RaspCase:
    """A program with its compile settings and the inputs to check it on."""

    name: str
    build: Callable[[], SOp]
    vocab: tuple[Any, ...]
    max_seq_len: int
    inputs: tuple[tuple[Any, ...], ...]
    distinct: bool = False  # random inputs need distinct tokens (sort_unique)
    causal: bool = False

    def random_inputs(self, n: int, seed: int = 0) -> list[list[Any]]:
        """``n`` random inputs, lengths uniform over 1..max_seq_len."""
        rng = random.Random(seed)
        out = []
        for _ in range(n):
            if self.distinct:
                k = rng.randint(1, min(self.max_seq_len, len(self.vocab)))
                out.append(rng.sample(self.vocab, k))
            else:
                k = rng.randint(1, self.max_seq_len)
                out.append([rng.choice(self.vocab) for _ in range(k)])
        return out


def _library_cases() -> list[RaspCase]:
    extra = {
        "reverse": [(1,), (1, 2, 3, 3, 1)],
        "sort_unique": [(5,), (5, 4, 3, 2, 1)],
        "sort": [(3, 3, 3), (2, 1, 2, 1, 3)],
        "shuffle_dyck": [("(", ")", ")", "("), (")",), ("(", "(", ")", ")", "(", ")")],
        "shuffle_dyck2": [("(", "{", "}", ")"), ("(", "}", "{", ")"), ("{",)],
        "pair_balance": [
            (")", ")", "("),
        ],
        "detect_pattern": [("a", "b"), ("c", "a", "b", "c", "a", "b")],
    }
    return [
        RaspCase(
            name=p.name,
            build=p.build,
            vocab=p.vocab,
            max_seq_len=p.max_seq_len,
            inputs=(p.example[0], *extra.get(p.name, [])),
            distinct=p.name == "sort_unique",
            causal=p.causal,
        )
        for p in LIBRARY.values()
    ]


def _threshold_of_mean() -> SOp:
    share = make_frac_prevs(Map(lambda t: t == 1, tokens).named("is_one"), "share_one")
    return Map(lambda m: m > 0.5, share).named("mostly_one")


def _width_or() -> SOp:
    at_most = SelectorOr(
        Select(tokens, tokens, Comparison.LT), Select(tokens, tokens, Comparison.EQ)
    )
    return SelectorWidth(at_most).named("n_at_most")


def _width_not() -> SOp:
    later = SelectorNot(Select(indices, indices, Comparison.LEQ))
    return SelectorWidth(later).named("n_later")


def _numerical_full() -> SOp:
    tok = numerical(Map(lambda t: t, tokens)).named("tok_num")
    return LinearSequenceMap(tok, numerical(Full(2)).named("two"), 1.5, -1, name="affine")


def _none_values() -> SOp:
    nxt = Map(lambda i: i + 1, indices).named("next_idx")
    following = Aggregate(Select(indices, nxt, Comparison.EQ), tokens).named("following")
    return Map(lambda x: 2 * x, following).named("double_next")


def _callable_predicate() -> SOp:
    same_parity = Select(tokens, tokens, lambda k, q: (k + q) % 2 == 0).named("same_parity")
    return SelectorWidth(same_parity).named("n_same_parity")


def _mean_of_numbers() -> SOp:
    vals = numerical(Map(lambda t: t * 0.5, tokens)).named("half")
    before = Select(indices, indices, Comparison.LT).named("before")
    return numerical(Aggregate(before, vals, default=0)).named("mean_before")


CASES: list[RaspCase] = [
    *_library_cases(),
    RaspCase("mostly_one", _threshold_of_mean, (0, 1), 5, ((1, 0, 1), (0,), (1, 1, 0, 0, 0))),
    RaspCase("n_at_most", _width_or, (1, 2, 3), 5, ((3, 1, 2, 2),)),
    RaspCase("n_later", _width_not, (1, 2), 5, ((1, 2, 1),)),
    RaspCase("affine", _numerical_full, (0, 1, 2, 3), 4, ((3, 0, 2),)),
    RaspCase("double_next", _none_values, (1, 2, 3), 5, ((1, 2, 3),)),
    RaspCase("n_same_parity", _callable_predicate, (1, 2, 3, 4), 5, ((1, 2, 3, 4, 1),)),
    RaspCase("mean_before", _mean_of_numbers, (0, 1, 3), 5, ((3, 1, 0, 3),), causal=True),
]


def outputs_match(got: list[Any], want: list[Any]) -> bool:
    """Equal position by position; floats within ``NUM_TOL``."""
    if len(got) != len(want):
        return False
    for g, w in zip(got, want):
        if isinstance(g, float) and w is not None and not isinstance(w, str):
            if abs(g - float(w)) > NUM_TOL:
                return False
        elif g != w:
            return False
    return True
