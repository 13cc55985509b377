"""Expression graph, value-set inference and the supported-fragment check.

Every s-op gets the finite set of values it can take on inputs drawn from ``vocab`` with at
most ``max_seq_len`` tokens. Categorical s-ops need the set for their one-hot subspace;
numerical ones need it only where an MLP reads them (the discretising MLP puts a step
between each pair of neighbouring values). Problems are collected, not raised one by one.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from rasp.errors import CompileError
from rasp.interpreter import _selects
from rasp.language import (
    Aggregate,
    Comparison,
    Full,
    IndicesType,
    Map,
    RASPExpr,
    Select,
    Selector,
    SelectorAnd,
    SelectorNot,
    SelectorOr,
    SelectorWidth,
    SequenceMap,
    SOp,
    TokensType,
)

#: Most values a categorical s-op may take (one residual dimension each).
MAX_CATEGORICAL = 512
#: Most grid points a numerical s-op read by an MLP may take.
MAX_NUMERICAL = 4096
_ROUND = 9

Term = tuple[SOp, SOp, Callable[[Any, Any], bool]]


class Unsupported(Exception):
    """Internal: one expression cannot be compiled (collected into UnsupportedProgramError)."""


@dataclass
class Analysis:
    """The graph of a program with its value sets and problems."""

    nodes: list[RASPExpr]
    values: dict[str, tuple | None] = field(default_factory=dict)
    problems: list[tuple[str, str]] = field(default_factory=list)


def collect_nodes(outputs: Sequence[SOp]) -> list[RASPExpr]:
    """All expressions the outputs depend on, children before parents.

    Raises:
        CompileError: when two different expressions share one name.
    """
    order: list[RASPExpr] = []
    seen: dict[int, RASPExpr] = {}
    stack: list[tuple[RASPExpr, bool]] = [(o, False) for o in reversed(outputs)]
    while stack:
        expr, done = stack.pop()
        if done:
            order.append(expr)
            continue
        if id(expr) in seen:
            continue
        seen[id(expr)] = expr
        stack.append((expr, True))
        stack.extend((c, False) for c in reversed(expr.children) if id(c) not in seen)
    by_label: dict[str, RASPExpr] = {}
    for expr in order:
        other = by_label.setdefault(expr.label, expr)
        if other is not expr:
            raise CompileError(
                f"two different expressions are both named {expr.label!r} "
                f"({type(other).__name__} and {type(expr).__name__}); give each a unique name"
            )
    return order


def analyse(outputs: Sequence[SOp], vocab: Sequence[Any], max_seq_len: int) -> Analysis:
    """Value sets of every s-op and the problems that block compilation."""
    result = Analysis(collect_nodes(outputs))
    failed: set[str] = set()
    for expr in result.nodes:
        if any(c.label in failed for c in expr.children):
            failed.add(expr.label)  # already reported on the input; don't cascade
            result.values[expr.label] = None
            continue
        try:
            if isinstance(expr, Select):
                for sop in (expr.keys, expr.queries):
                    if sop.is_numerical:
                        raise Unsupported(
                            f"Select reads {sop.label!r}, which is numerical; selector keys "
                            "and queries must be categorical"
                        )
            elif isinstance(expr, SelectorOr | SelectorNot):
                selector_terms(expr)
            elif isinstance(expr, SOp):
                result.values[expr.label] = _values(expr, result.values, list(vocab), max_seq_len)
        except Unsupported as why:
            result.problems.append((expr.label, str(why)))
            failed.add(expr.label)
            result.values[expr.label] = None
    return result


def _values(expr: SOp, known: dict[str, tuple | None], vocab: list, n: int) -> tuple | None:
    def of(sop: SOp) -> tuple:
        got = known.get(sop.label)
        if got is None:
            if sop.is_numerical:
                raise Unsupported(
                    f"reads numerical {sop.label!r} through an MLP, but its value set is "
                    f"unbounded or larger than {MAX_NUMERICAL}; discretise it earlier"
                )
            raise Unsupported(f"its input {sop.label!r} could not be compiled")
        return got

    if isinstance(expr, TokensType):
        out: Any = vocab
    elif isinstance(expr, IndicesType):
        out = range(n)
    elif isinstance(expr, Full):
        out = [expr.fill]
    elif isinstance(expr, Map):
        out = [_apply(expr, expr.f, x) for x in of(expr.inner)]
    elif isinstance(expr, SequenceMap):
        fst, snd = expr.fst, expr.snd
        numeric = fst.is_numerical + snd.is_numerical
        if numeric and not (expr.linear and numeric == 2):
            raise Unsupported(
                "a SequenceMap needs two categorical inputs, or two numerical inputs with "
                f"LinearSequenceMap; got {fst.label!r} ({fst.encoding}) and "
                f"{snd.label!r} ({snd.encoding})"
            )
        pairs = (
            [(x, x) for x in of(fst)] if fst is snd else [(x, y) for x in of(fst) for y in of(snd)]
        )
        out = [_apply(expr, expr.f, x, y) for x, y in pairs]
    elif isinstance(expr, SelectorWidth):
        out = range(n + 1)
    elif isinstance(expr, Aggregate):
        inner = known.get(expr.sop.label)
        if not expr.is_numerical:
            out = of(expr.sop)
        elif inner is None:
            return None
        elif _at_most_one(expr.selector):
            return tuple(sorted({0.0, *inner}))
        else:
            return _means(inner, n)
    else:
        raise Unsupported(f"unknown s-op type {type(expr).__name__}")
    return _finish(expr, out)


def _finish(expr: SOp, out: Any) -> tuple:
    values = [v for v in out if v is not None]
    if expr.is_numerical:
        bad = [v for v in values if not isinstance(v, int | float)]
        if bad:
            raise Unsupported(f"a numerical s-op needs numbers, but it can take {bad[0]!r}")
        grid = sorted({round(float(v), _ROUND) for v in values})
        if len(grid) > MAX_NUMERICAL:
            raise Unsupported(f"it takes {len(grid)} values, more than {MAX_NUMERICAL}")
        return tuple(grid)
    try:
        unique = list(dict.fromkeys(values))
    except TypeError as err:
        raise Unsupported(f"its values must be hashable ({err})") from err
    if len(unique) > MAX_CATEGORICAL:
        raise Unsupported(
            f"its output value set has {len(unique)} values, more than the {MAX_CATEGORICAL} a "
            "categorical s-op may take; make the map coarser"
        )
    return tuple(sort_values(unique))


def sort_values(values: Sequence[Any]) -> list[Any]:
    """Values in a stable order (numeric/lexicographic when comparable, else by type and repr)."""
    try:
        return sorted(values)
    except TypeError:
        return sorted(values, key=lambda v: (type(v).__name__, repr(v)))


def _at_most_one(selector: Selector) -> bool:
    """Whether each query provably selects at most one key (an EQ match on ``indices``)."""
    if isinstance(selector, Select):
        return isinstance(selector.keys, IndicesType) and selector.predicate is Comparison.EQ
    if isinstance(selector, SelectorAnd) and not isinstance(selector, SelectorOr):
        return _at_most_one(selector.fst) or _at_most_one(selector.snd)
    return False


def _means(values: tuple, n: int) -> tuple | None:
    """Every mean of 1..n values from ``values``, plus 0 (no key selected)."""
    means = {0.0}
    sums = {0.0}
    for k in range(1, n + 1):
        sums = {round(s + v, _ROUND) for s in sums for v in values}
        if len(sums) > MAX_NUMERICAL:
            return None
        means |= {round(s / k, _ROUND) for s in sums}
        if len(means) > MAX_NUMERICAL:
            return None
    return tuple(sorted(means))


def _apply(expr: RASPExpr, f: Callable, *args: Any) -> Any:
    try:
        return f(*args)
    except Exception as err:
        raise Unsupported(f"its function fails on {', '.join(map(repr, args))}: {err!r}") from err


# ----------------------------------------------------------------------------- selectors
def _leaves(selector: Selector) -> list[Select]:
    if isinstance(selector, Select):
        return [selector]
    return [leaf for child in selector.children for leaf in _leaves(child)]  # type: ignore[arg-type]


def _truth(selector: Selector, key: Any, query: Any) -> bool:
    if isinstance(selector, Select):
        return _selects(selector, key, query)
    if isinstance(selector, SelectorOr):
        return _truth(selector.fst, key, query) or _truth(selector.snd, key, query)
    if isinstance(selector, SelectorAnd):
        return _truth(selector.fst, key, query) and _truth(selector.snd, key, query)
    assert isinstance(selector, SelectorNot)
    return not _truth(selector.inner, key, query)


def selector_terms(selector: Selector) -> list[Term]:
    """The selector as a conjunction of ``(keys, queries, predicate)`` terms, one per s-op pair.

    ``SelectorAnd`` of any selectors is a sum of terms in one head; ``SelectorOr`` and
    ``SelectorNot`` are folded into one term when all their leaves read the same keys and
    queries.

    Raises:
        Unsupported: for an Or/Not across different key or query s-ops.
    """
    if isinstance(selector, Select):
        return [(selector.keys, selector.queries, lambda k, q, s=selector: _selects(s, k, q))]
    if isinstance(selector, SelectorAnd) and not isinstance(selector, SelectorOr):
        merged: dict[tuple[int, int], Term] = {}
        for keys, queries, pred in selector_terms(selector.fst) + selector_terms(selector.snd):
            slot = (id(keys), id(queries))
            if slot in merged:
                pred = _both(merged[slot][2], pred)
            merged[slot] = (keys, queries, pred)
        return list(merged.values())
    leaves = _leaves(selector)
    pairs = {(id(leaf.keys), id(leaf.queries)) for leaf in leaves}
    if len(pairs) > 1:
        names = sorted({f"({leaf.keys.label}, {leaf.queries.label})" for leaf in leaves})
        raise Unsupported(
            f"{type(selector).__name__} combines selectors over different (keys, queries) pairs "
            f"{', '.join(names)}; only SelectorAnd may mix pairs in one attention head"
        )
    return [(leaves[0].keys, leaves[0].queries, lambda k, q, s=selector: _truth(s, k, q))]


def _both(
    a: Callable[[Any, Any], bool], b: Callable[[Any, Any], bool]
) -> Callable[[Any, Any], bool]:
    return lambda k, q: a(k, q) and b(k, q)


def causal_safe(selector: Selector) -> bool:
    """Whether the selector provably picks only keys at or before the query position."""
    if isinstance(selector, Select):
        if selector.predicate is Comparison.FALSE:
            return True
        return (
            isinstance(selector.keys, IndicesType)
            and isinstance(selector.queries, IndicesType)
            and selector.predicate in (Comparison.EQ, Comparison.LT, Comparison.LEQ)
        )
    if isinstance(selector, SelectorOr):
        return causal_safe(selector.fst) and causal_safe(selector.snd)
    if isinstance(selector, SelectorAnd):
        return causal_safe(selector.fst) or causal_safe(selector.snd)
    return False


def describe_selector(selector: Selector) -> str:
    """Short text of a selector, e.g. ``select(indices, opp_idx, EQ)``."""
    if isinstance(selector, Select):
        pred = selector.predicate
        text = pred.name if isinstance(pred, Comparison) else getattr(pred, "__name__", "f")
        return f"select({selector.keys.label}, {selector.queries.label}, {text})"
    if isinstance(selector, SelectorNot):
        return f"not({describe_selector(selector.inner)})"
    op = "or" if isinstance(selector, SelectorOr) else "and"
    assert isinstance(selector, SelectorAnd)
    return f"{op}({describe_selector(selector.fst)}, {describe_selector(selector.snd)})"
