"""Reference semantics of RASP: ``evaluate(program, input_sequence)``.

The compiled transformer is tested against this interpreter, so the rules here are the
contract: a ``None`` value (no value) is never selected and never selects; maps of ``None``
give the encoding's default (``None`` categorical, ``0`` numerical); a categorical
``Aggregate`` allows at most one selected key per query.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rasp.errors import EvaluationError
from rasp.language import (
    Aggregate,
    Comparison,
    Full,
    IndicesType,
    Map,
    RASPExpr,
    Select,
    SelectorAnd,
    SelectorNot,
    SelectorOr,
    SelectorWidth,
    SequenceMap,
    SOp,
    TokensType,
)

Matrix = list[list[bool]]


def evaluate(program: RASPExpr, input_sequence: Sequence[Any]) -> list:
    """Evaluate an s-op (a list, one value per position) or a selector (``[query][key]`` bools).

    Args:
        program: the expression to evaluate.
        input_sequence: the input tokens (without BOS).

    Returns:
        One value per position for an s-op; a query-by-key boolean matrix for a selector.

    Raises:
        EvaluationError: naming the expression, when a function fails, a categorical
            aggregate selects more than one key, or a numerical aggregate meets a non-number.

    Example:
        >>> from rasp import Map, tokens
        >>> evaluate(Map(lambda x: x * 2, tokens), [1, 2, 3])
        [2, 4, 6]
    """
    if not isinstance(program, RASPExpr):
        raise EvaluationError(f"can only evaluate a RASP expression, got {program!r}")
    return _Evaluator(list(input_sequence)).value(program)


class _Evaluator:
    def __init__(self, xs: list[Any]) -> None:
        self.xs = xs
        self.memo: dict[int, Any] = {}
        self.keep: list[RASPExpr] = []  # keeps ids stable while memoised

    def value(self, expr: RASPExpr) -> Any:
        key = id(expr)
        if key not in self.memo:
            self.memo[key] = self._compute(expr)
            self.keep.append(expr)
        return self.memo[key]

    def _compute(self, expr: RASPExpr) -> Any:
        n = len(self.xs)
        if isinstance(expr, TokensType):
            return list(self.xs)
        if isinstance(expr, IndicesType):
            return list(range(n))
        if isinstance(expr, Full):
            return [expr.fill] * n
        if isinstance(expr, Map):
            default = _default(expr)
            return [
                default if x is None else _call(expr, expr.f, x) for x in self.value(expr.inner)
            ]
        if isinstance(expr, SequenceMap):
            default = _default(expr)
            pairs = zip(self.value(expr.fst), self.value(expr.snd))
            return [
                default if x is None or y is None else _call(expr, expr.f, x, y) for x, y in pairs
            ]
        if isinstance(expr, Select):
            keys, queries = self.value(expr.keys), self.value(expr.queries)
            return [[_selects(expr, k, q) for k in keys] for q in queries]
        if isinstance(expr, SelectorOr):
            a, b = self.value(expr.fst), self.value(expr.snd)
            return [[x or y for x, y in zip(ra, rb)] for ra, rb in zip(a, b)]
        if isinstance(expr, SelectorAnd):
            a, b = self.value(expr.fst), self.value(expr.snd)
            return [[x and y for x, y in zip(ra, rb)] for ra, rb in zip(a, b)]
        if isinstance(expr, SelectorNot):
            defined = self._defined(expr.inner)
            inner = self.value(expr.inner)
            return [[not x and d for x, d in zip(r, dr)] for r, dr in zip(inner, defined)]
        if isinstance(expr, SelectorWidth):
            return [sum(row) for row in self.value(expr.selector)]
        if isinstance(expr, Aggregate):
            return self._aggregate(expr)
        raise EvaluationError(f"{expr.label}: unknown expression type {type(expr).__name__}")

    def _defined(self, selector: RASPExpr) -> Matrix:
        """Where every key and query the selector reads has a value (``None`` never selects)."""
        n = len(self.xs)
        ok = [[True] * n for _ in range(n)]
        for leaf in _leaves(selector):
            keys, queries = self.value(leaf.keys), self.value(leaf.queries)
            for q in range(n):
                for k in range(n):
                    ok[q][k] = ok[q][k] and keys[k] is not None and queries[q] is not None
        return ok

    def _aggregate(self, expr: Aggregate) -> list[Any]:
        matrix = self.value(expr.selector)
        values = self.value(expr.sop)
        out: list[Any] = []
        for q, row in enumerate(matrix):
            picked = [values[k] for k, hit in enumerate(row) if hit]
            if expr.encoding == "categorical":
                if len(picked) > 1:
                    raise EvaluationError(
                        f"{expr.label}: a categorical Aggregate needs at most one selected key per "
                        f"query, but query {q} selects {len(picked)} keys (values {picked!r}) on "
                        f"input {self.xs!r}; make the selector unique or use numerical(...)"
                    )
                out.append(picked[0] if picked else None)
                continue
            bad = [v for v in picked if not _is_number(v)]
            if bad:
                raise EvaluationError(
                    f"{expr.label}: a numerical Aggregate averages numbers, got {bad[0]!r} from "
                    f"{expr.sop.label!r}"
                )
            out.append(sum(picked) / len(picked) if picked else 0)
        return out


def _leaves(selector: RASPExpr) -> list[Select]:
    if isinstance(selector, Select):
        return [selector]
    return [leaf for child in selector.children for leaf in _leaves(child)]


def _selects(expr: Select, key: Any, query: Any) -> bool:
    if isinstance(expr.predicate, Comparison):
        try:
            return expr.predicate(key, query)
        except TypeError as err:
            raise EvaluationError(
                f"{expr.label}: cannot compare key {key!r} with query {query!r} ({err})"
            ) from err
    if key is None or query is None:
        return False
    return bool(_call(expr, expr.predicate, key, query))


def _default(expr: SOp) -> Any:
    return 0 if expr.is_numerical else None


def _call(expr: RASPExpr, f: Any, *args: Any) -> Any:
    try:
        return f(*args)
    except Exception as err:
        raise EvaluationError(
            f"{expr.label}: its function failed on {', '.join(map(repr, args))}: {err!r}"
        ) from err


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) or hasattr(value, "__float__")
