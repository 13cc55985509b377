"""A library of RASP programs (the Tracr paper's examples, written afresh) and their registry.

Each ``make_*`` returns an s-op; ``LIBRARY`` holds each program with a default vocabulary and
length (Tracr's where its paper gives them), a description and a checked example.

Example:
    >>> from rasp import evaluate
    >>> evaluate(make_sort_unique(), [3, 1, 5, 2])
    [1, 2, 3, 5]
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from rasp.language import (
    Aggregate,
    Comparison,
    Full,
    LinearSequenceMap,
    Map,
    Select,
    SelectorAnd,
    SelectorWidth,
    SequenceMap,
    SOp,
    indices,
    length,
    numerical,
    tokens,
)

EQ, LT, LEQ, TRUE = Comparison.EQ, Comparison.LT, Comparison.LEQ, Comparison.TRUE


def make_length() -> SOp:
    """Number of tokens at every position: ``[1, 2, 3] -> [3, 3, 3]``."""
    return SelectorWidth(Select(tokens, tokens, TRUE)).named("length")


def make_reverse(sop: SOp = tokens) -> SOp:
    """``sop`` reversed: ``[3, 1, 2, 2] -> [2, 2, 1, 3]``."""
    opp = (length - indices).named("opp_idx")
    opp = (opp - 1).named("opp_idx-1")
    return Aggregate(Select(indices, opp, EQ).named("flip"), sop).named("reverse")


def make_hist() -> SOp:
    """How often each position's token occurs: ``[1, 2, 1, 3] -> [2, 1, 2, 1]``."""
    return SelectorWidth(Select(tokens, tokens, EQ).named("same_tok")).named("hist")


def make_sort_unique(vals: SOp = tokens, keys: SOp = tokens) -> SOp:
    """``vals`` ordered by ``keys`` (keys must be distinct): ``[3, 1, 5, 2] -> [1, 2, 3, 5]``.

    A key's rank is the number of smaller keys; position i fetches the value of rank i.
    """
    rank = SelectorWidth(Select(keys, keys, LT).named("smaller")).named("rank")
    return Aggregate(Select(rank, indices, EQ).named("by_rank"), vals).named("sort")


def make_sort(
    vals: SOp = tokens, keys: SOp = tokens, *, max_seq_len: int = 5, min_key: float = 1
) -> SOp:
    """Sort with repeated keys: ties broken by position (``key + min_key * i / max_seq_len``).

    ``min_key`` must be at most the smallest gap between distinct keys.
    Example: ``[3, 1, 3, 2] -> [1, 2, 3, 3]``.
    """
    unique = SequenceMap(lambda k, i: k + min_key * i / max_seq_len, keys, indices).named(
        "uniq_key"
    )
    return make_sort_unique(vals, unique)


def make_sort_freq(max_seq_len: int = 5) -> SOp:
    """Tokens by decreasing frequency, ties by position: ``[2, 3, 2, 1] -> [2, 2, 3, 1]``."""
    neg_hist = Map(lambda h: -h, make_hist()).named("neg_hist")
    return make_sort(tokens, neg_hist, max_seq_len=max_seq_len, min_key=1).named("sort_freq")


def make_frac_prevs(bools: SOp, name: str = "frac_prevs") -> SOp:
    """Fraction of positions up to here where ``bools`` holds (numerical, causal-safe).

    Example: with ``bools = tokens == "x"``, ``xyx -> [1, 0.5, 0.667]``.
    """
    prevs = Select(indices, indices, LEQ).named(f"{name}_prevs")
    return numerical(Aggregate(prevs, numerical(bools), default=0)).named(name)


def make_pair_balance(sop: SOp = tokens, open_token: Any = "(", close_token: Any = ")") -> SOp:
    """Fraction of opens minus fraction of closes so far: ``"(())" -> [1, 1, 0.333, 0]``."""
    opens = numerical(Map(lambda t: t == open_token, sop)).named(f"is_{open_token}")
    closes = numerical(Map(lambda t: t == close_token, sop)).named(f"is_{close_token}")
    frac_open = make_frac_prevs(opens, f"frac_{open_token}")
    frac_close = make_frac_prevs(closes, f"frac_{close_token}")
    return LinearSequenceMap(frac_open, frac_close, 1, -1, name="pair_balance")


def _balance(open_token: Any, close_token: Any) -> SOp:
    """Running (opens - closes) / (i + 1) as one mean of +1/-1/0 (one head per pair)."""
    step = numerical(
        Map(lambda t: 1 if t == open_token else (-1 if t == close_token else 0), tokens)
    ).named(f"step_{open_token}{close_token}")
    return make_frac_prevs(step, f"balance_{open_token}{close_token}")


def make_shuffle_dyck(pairs: Sequence[str] = ("()",)) -> SOp:
    """True everywhere iff the whole input is a shuffle of balanced Dyck words over ``pairs``.

    Balanced: no prefix closes more than it opens (per pair) and every pair ends at zero.
    Example: ``"(())" -> [True] * 4``; ``"())(" -> [False] * 4``.
    """
    negs: list[SOp] = []
    zeros: list[SOp] = []
    for pair in pairs:
        bal = _balance(pair[0], pair[1])
        negs.append(numerical(Map(lambda b: 1 if b < 0 else 0, bal)).named(f"neg_{pair}"))
        zeros.append(Map(lambda b: b == 0, bal).named(f"zero_{pair}"))
    any_neg, all_zero = negs[0], zeros[0]
    for i in range(1, len(pairs)):
        any_neg = LinearSequenceMap(any_neg, negs[i], 1, 1, name=f"any_neg_{i}")
        all_zero = SequenceMap(lambda a, b: a and b, all_zero, zeros[i]).named(f"all_zero_{i}")
    everywhere = Select(indices, indices, TRUE).named("everywhere")
    neg_share = numerical(Aggregate(everywhere, any_neg, default=0)).named("neg_share")
    ok_prefixes = Map(lambda s: s == 0, neg_share).named("no_neg_prefix")
    last = (length - 1).named("last_idx")
    at_last = Select(indices, last, EQ).named("at_last")
    ends_zero = Aggregate(at_last, all_zero).named("ends_zero")
    return SequenceMap(lambda z, ok: bool(z and ok), ends_zero, ok_prefixes).named("shuffle_dyck")


def make_shuffle_dyck2() -> SOp:
    """Shuffle-Dyck over ``()`` and ``{}``: ``"({)}" -> [True] * 4``."""
    return make_shuffle_dyck(("()", "{}")).named("shuffle_dyck2")


def make_count_less() -> SOp:
    """How many earlier tokens are smaller than this one: ``[3, 1, 2, 3] -> [0, 0, 1, 2]``.

    One head: ``Select(tokens, tokens, LT) & Select(indices, indices, LT)`` (causal-safe).
    """
    earlier_smaller = SelectorAnd(
        Select(tokens, tokens, LT).named("smaller_tok"),
        Select(indices, indices, LT).named("earlier"),
    ).named("earlier_smaller")
    return SelectorWidth(earlier_smaller).named("count_less")


def make_count(sop: SOp = tokens, token: Any = "a") -> SOp:
    """How often ``token`` occurs in the input, at every position: ``aaabbc -> [3] * 6``."""
    target = Full(token).named(f"const_{token}")
    return SelectorWidth(Select(sop, target, EQ).named(f"is_{token}_key")).named(f"count_{token}")


def make_detect_pattern(sop: SOp = tokens, pattern: Sequence[Any] = "abc") -> SOp:
    """True where the last ``len(pattern)`` tokens equal ``pattern``: ``abcabc -> F,F,T,F,F,T``.

    Each pattern element is matched as a 0/1 number, shifted into place by a head (0 where
    the shift runs off the start), summed, and compared with ``len(pattern)``.
    """
    n = len(pattern)
    total: SOp | None = None
    for j, want in enumerate(pattern):
        hit = numerical(Map(lambda t, w=want: 1 if t == w else 0, sop)).named(f"hit{j}_{want}")
        offset = n - 1 - j
        if offset:
            src = Map(lambda i, o=offset: i - o, indices).named(f"minus_{offset}")
            hit = numerical(
                Aggregate(Select(indices, src, EQ).named(f"back_{offset}"), hit, default=0)
            ).named(f"hit{j}_shifted")
        total = hit if total is None else LinearSequenceMap(total, hit, 1, 1, name=f"hits_{j}")
    assert total is not None
    return Map(lambda s: s == n, total).named("detect_pattern")


@dataclass(frozen=True)
class LibraryProgram:
    """A library program with its default compile settings and a checked example.

    Attributes:
        name: registry key (``load_model("rasp:<name>")``).
        build: returns the program's output s-op.
        vocab: default input values.
        max_seq_len: default longest input.
        description: one line for menus.
        example: ``(input, expected output)`` from the Tracr paper where it gives one.
        causal: whether the program compiles with causal attention.
    """

    name: str
    build: Callable[[], SOp]
    vocab: tuple[Any, ...]
    max_seq_len: int
    description: str
    example: tuple[tuple[Any, ...], tuple[Any, ...]]
    causal: bool = False


def _entry(name, build, vocab, n, description, example_in, example_out, causal=False):
    return LibraryProgram(
        name, build, tuple(vocab), n, description, (tuple(example_in), tuple(example_out)), causal
    )


LIBRARY: dict[str, LibraryProgram] = {
    p.name: p
    for p in (
        _entry("length", make_length, (1, 2, 3), 5, "number of tokens", [1, 2, 3], [3, 3, 3]),
        _entry(
            "reverse", make_reverse, (1, 2, 3), 5, "reverse the input", [3, 1, 2, 2], [2, 2, 1, 3]
        ),
        _entry(
            "hist",
            make_hist,
            (1, 2, 3),
            5,
            "count of each position's token",
            [1, 2, 1, 3],
            [2, 1, 2, 1],
        ),
        _entry(
            "sort_unique",
            make_sort_unique,
            range(1, 6),
            5,
            "sort distinct tokens",
            [3, 1, 5, 2],
            [1, 2, 3, 5],
        ),
        _entry(
            "sort",
            make_sort,
            (1, 2, 3),
            5,
            "sort with repeats (min_key trick)",
            [3, 1, 3, 2],
            [1, 2, 3, 3],
        ),
        _entry(
            "sort_freq",
            make_sort_freq,
            (1, 2, 3),
            5,
            "tokens by decreasing frequency",
            [2, 3, 2, 1],
            [2, 2, 3, 1],
        ),
        _entry(
            "frac_prevs",
            lambda: make_frac_prevs(Map(lambda t: t == "x", tokens).named("is_x")),
            "xy",
            5,
            "fraction of x so far",
            "xyx",
            [1, 0.5, 2 / 3],
            causal=True,
        ),
        _entry(
            "pair_balance",
            make_pair_balance,
            "()",
            6,
            "frac of '(' minus frac of ')' so far",
            "(())",
            [1, 1, 1 / 3, 0],
            causal=True,
        ),
        _entry(
            "shuffle_dyck",
            make_shuffle_dyck,
            "()",
            6,
            "balanced parentheses (Dyck-1)",
            "(())",
            [True] * 4,
        ),
        _entry(
            "shuffle_dyck2",
            make_shuffle_dyck2,
            "(){}",
            6,
            "shuffle of two Dyck languages",
            "({)}",
            [True] * 4,
        ),
        _entry(
            "count_less",
            make_count_less,
            (1, 2, 3, 4),
            5,
            "earlier tokens smaller than this one",
            [3, 1, 2, 3],
            [0, 0, 1, 2],
            causal=True,
        ),
        _entry("count_a", make_count, "abc", 6, "number of 'a' tokens", "aaabbc", [3] * 6),
        _entry(
            "detect_pattern",
            make_detect_pattern,
            "abc",
            6,
            "ends of the pattern 'abc'",
            "abcabc",
            [False, False, True, False, False, True],
        ),
    )
}
