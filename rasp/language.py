"""The RASP language: s-ops (sequence operations) and selectors, as immutable expressions.

An expression is a frozen dataclass holding its parts; building one evaluates nothing.
``evaluate`` (in ``rasp.interpreter``) gives the reference semantics and ``compile_program``
(in ``rasp.compiler``) turns an expression into transformer weights.

Example:
    >>> from rasp import Aggregate, Comparison, Select, evaluate, indices, length, tokens
    >>> flip = Select(indices, length - indices - 1, Comparison.EQ)
    >>> evaluate(Aggregate(flip, tokens).named("reverse"), [3, 1, 2])
    [2, 1, 3]
"""

from __future__ import annotations

import enum
import itertools
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field, replace
from typing import Any, Literal, Self

from rasp.errors import RaspTypeError

Encoding = Literal["categorical", "numerical"]
_counter = itertools.count(1)


class Comparison(enum.Enum):
    """A selector predicate, evaluated as ``predicate(key, query)`` (``LT`` means key < query)."""

    EQ = "EQ"
    LT = "LT"
    LEQ = "LEQ"
    GT = "GT"
    GEQ = "GEQ"
    NEQ = "NEQ"
    TRUE = "TRUE"
    FALSE = "FALSE"

    def __call__(self, key: Any, query: Any) -> bool:
        if key is None or query is None:
            return False  # a position without a value is never selected (as in the weights)
        return _COMPARE[self](key, query)


_COMPARE: dict[Comparison, Callable[[Any, Any], bool]] = {
    Comparison.EQ: lambda k, q: k == q,
    Comparison.LT: lambda k, q: k < q,
    Comparison.LEQ: lambda k, q: k <= q,
    Comparison.GT: lambda k, q: k > q,
    Comparison.GEQ: lambda k, q: k >= q,
    Comparison.NEQ: lambda k, q: k != q,
    Comparison.TRUE: lambda k, q: True,
    Comparison.FALSE: lambda k, q: False,
}

Predicate = Comparison | Callable[[Any, Any], bool]


@dataclass(frozen=True, eq=False)
class RASPExpr:
    """Base of all expressions. ``name`` is unique per program; unnamed ones get ``map_3`` etc."""

    name: str | None = field(default=None, kw_only=True)

    def __post_init__(self) -> None:
        if self.name is None:
            object.__setattr__(self, "name", f"{self.kind}_{next(_counter)}")
        elif not isinstance(self.name, str) or not self.name.strip():
            raise RaspTypeError(f"an expression name must be a non-empty string, got {self.name!r}")

    @property
    def kind(self) -> str:
        """Snake-case kind of the expression (``map``, ``select``...)."""
        return _snake(type(self).__name__)

    @property
    def label(self) -> str:
        """The expression's name (always set)."""
        assert self.name is not None
        return self.name

    @property
    def children(self) -> tuple[RASPExpr, ...]:
        """The expressions this one is built from."""
        return ()

    def named(self, name: str) -> Self:
        """A copy of this expression with the name ``name``.

        Example:
            >>> Map(lambda x: x + 1, tokens).named("succ").label
            'succ'
        """
        return replace(self, name=name)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.label!r})"


def _snake(name: str) -> str:
    return "".join("_" + c.lower() if c.isupper() and i else c.lower() for i, c in enumerate(name))


def _need(value: Any, cls: type, what: str, owner: str) -> None:
    if not isinstance(value, cls):
        raise RaspTypeError(
            f"{owner}: {what} must be a {cls.__name__}, got {type(value).__name__} {value!r}"
        )


# ----------------------------------------------------------------------------- s-ops
@dataclass(frozen=True, eq=False)
class SOp(RASPExpr):
    """A sequence operation: maps an input sequence to one value per position.

    ``encoding`` is ``categorical`` (one-hot in the residual stream, the default) or
    ``numerical`` (one scalar dimension). Arithmetic with numbers or s-ops builds
    ``Map``/``SequenceMap`` expressions: ``length - indices - 1``.
    """

    encoding: Encoding | None = field(default=None, kw_only=True)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.encoding is None:
            object.__setattr__(self, "encoding", "categorical")
        if self.encoding not in ("categorical", "numerical"):
            raise RaspTypeError(
                f"{self.label}: encoding must be 'categorical' or 'numerical', got {self.encoding!r}"
            )

    @property
    def is_numerical(self) -> bool:
        """Whether the s-op is one scalar dimension."""
        return self.encoding == "numerical"

    def _binary(self, other: Any, op: Callable[[Any, Any], Any], swap: bool = False) -> SOp:
        if isinstance(other, SOp):
            a, b = (other, self) if swap else (self, other)
            return SequenceMap(op, a, b)
        if swap:
            return Map(lambda x: op(other, x), self)
        return Map(lambda x: op(x, other), self)

    def __add__(self, other: Any) -> SOp:
        return self._binary(other, lambda x, y: x + y)

    def __radd__(self, other: Any) -> SOp:
        return self._binary(other, lambda x, y: x + y, swap=True)

    def __sub__(self, other: Any) -> SOp:
        return self._binary(other, lambda x, y: x - y)

    def __rsub__(self, other: Any) -> SOp:
        return self._binary(other, lambda x, y: x - y, swap=True)

    def __mul__(self, other: Any) -> SOp:
        return self._binary(other, lambda x, y: x * y)

    def __rmul__(self, other: Any) -> SOp:
        return self._binary(other, lambda x, y: x * y, swap=True)


@dataclass(frozen=True, eq=False)
class TokensType(SOp):
    """The input tokens (use the module-level ``tokens``)."""


@dataclass(frozen=True, eq=False)
class IndicesType(SOp):
    """The positions 0..n-1 (use the module-level ``indices``)."""


@dataclass(frozen=True, eq=False)
class Full(SOp):
    """The same value at every position: ``Full(1)`` is ``[1, 1, 1]`` on a length-3 input."""

    fill: Hashable

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.fill is None:
            raise RaspTypeError(f"{self.label}: a Full s-op needs a value, got None")


ConstantSOp = Full


@dataclass(frozen=True, eq=False)
class Map(SOp):
    """Apply ``f`` to every value of ``inner``: ``Map(lambda x: x + 1, tokens)``."""

    f: Callable[[Any], Any]
    inner: SOp

    def __post_init__(self) -> None:
        super().__post_init__()
        _need(self.inner, SOp, "the mapped argument", self.label)
        if not callable(self.f):
            raise RaspTypeError(f"{self.label}: f must be callable, got {self.f!r}")

    @property
    def children(self) -> tuple[RASPExpr, ...]:
        return (self.inner,)


@dataclass(frozen=True, eq=False)
class SequenceMap(SOp):
    """Apply ``f(x, y)`` position-wise to two s-ops: ``SequenceMap(max, tokens, indices)``.

    ``linear`` is set by ``LinearSequenceMap`` (``f = a*x + b*y``), which the compiler
    builds without a lookup table when both inputs are numerical.
    """

    f: Callable[[Any, Any], Any]
    fst: SOp
    snd: SOp
    linear: tuple[float, float] | None = field(default=None, kw_only=True)

    def __post_init__(self) -> None:
        super().__post_init__()
        _need(self.fst, SOp, "the first argument", self.label)
        _need(self.snd, SOp, "the second argument", self.label)
        if not callable(self.f):
            raise RaspTypeError(f"{self.label}: f must be callable, got {self.f!r}")

    @property
    def children(self) -> tuple[RASPExpr, ...]:
        return (self.fst, self.snd)


def LinearSequenceMap(  # named like the expression it builds (Tracr's name)
    fst: SOp, snd: SOp, fst_fac: float, snd_fac: float, *, name: str | None = None
) -> SequenceMap:
    """``fst_fac * fst + snd_fac * snd``; numerical when both inputs are.

    Example:
        >>> LinearSequenceMap(tokens, indices, 1, -1).linear
        (1, -1)
    """
    encoding = "numerical" if fst.is_numerical and snd.is_numerical else "categorical"
    return SequenceMap(
        lambda x, y: fst_fac * x + snd_fac * y,
        fst,
        snd,
        linear=(fst_fac, snd_fac),
        encoding=encoding,
        name=name,
    )


# ----------------------------------------------------------------------------- selectors
@dataclass(frozen=True, eq=False)
class Selector(RASPExpr):
    """A boolean query-by-key matrix; ``&``, ``|`` and ``~`` combine selectors."""

    def __and__(self, other: Selector) -> SelectorAnd:
        return SelectorAnd(self, other)

    def __or__(self, other: Selector) -> SelectorOr:
        return SelectorOr(self, other)

    def __invert__(self) -> SelectorNot:
        return SelectorNot(self)


@dataclass(frozen=True, eq=False)
class Select(Selector):
    """Query ``q`` selects key ``k`` when ``predicate(keys[k], queries[q])``."""

    keys: SOp
    queries: SOp
    predicate: Predicate

    def __post_init__(self) -> None:
        super().__post_init__()
        _need(self.keys, SOp, "keys", self.label)
        _need(self.queries, SOp, "queries", self.label)
        if not isinstance(self.predicate, Comparison) and not callable(self.predicate):
            raise RaspTypeError(
                f"{self.label}: predicate must be a Comparison "
                f"({', '.join(c.name for c in Comparison)}) or a callable f(key, query), "
                f"got {self.predicate!r}"
            )

    @property
    def children(self) -> tuple[RASPExpr, ...]:
        return (self.keys, self.queries)


@dataclass(frozen=True, eq=False)
class SelectorAnd(Selector):
    """Selected where both selectors select."""

    fst: Selector
    snd: Selector

    def __post_init__(self) -> None:
        super().__post_init__()
        _need(self.fst, Selector, "the first argument", self.label)
        _need(self.snd, Selector, "the second argument", self.label)

    @property
    def children(self) -> tuple[RASPExpr, ...]:
        return (self.fst, self.snd)


@dataclass(frozen=True, eq=False)
class SelectorOr(SelectorAnd):
    """Selected where either selector selects."""


@dataclass(frozen=True, eq=False)
class SelectorNot(Selector):
    """Selected where the inner selector does not select."""

    inner: Selector

    def __post_init__(self) -> None:
        super().__post_init__()
        _need(self.inner, Selector, "the negated argument", self.label)

    @property
    def children(self) -> tuple[RASPExpr, ...]:
        return (self.inner,)


# ----------------------------------------------------------------------------- attention s-ops
@dataclass(frozen=True, eq=False)
class Aggregate(SOp):
    """Average ``sop`` over the keys ``selector`` picks for each query.

    A categorical aggregate needs at most one selected key per query and gives ``None``
    where none is selected; a numerical one gives the mean (0 where none is selected).
    The encoding defaults to that of ``sop`` and must equal it.
    """

    selector: Selector
    sop: SOp
    default: Any = None

    def __post_init__(self) -> None:
        _need(self.selector, Selector, "the selector", self.name or "aggregate")
        _need(self.sop, SOp, "the aggregated s-op", self.name or "aggregate")
        if self.encoding is None:
            object.__setattr__(self, "encoding", self.sop.encoding)
        super().__post_init__()
        if self.encoding != self.sop.encoding:
            raise RaspTypeError(
                f"{self.label}: a {self.encoding} Aggregate needs a {self.encoding} s-op, but "
                f"{self.sop.label!r} is {self.sop.encoding}; wrap it in {self.encoding}(...)"
            )
        valid = (None,) if self.encoding == "categorical" else (0, None)
        if self.default not in valid or self.default is False:
            raise RaspTypeError(
                f"{self.label}: default of a {self.encoding} Aggregate must be "
                f"{' or '.join(map(repr, valid))}, got {self.default!r}"
            )

    @property
    def children(self) -> tuple[RASPExpr, ...]:
        return (self.selector, self.sop)


@dataclass(frozen=True, eq=False)
class SelectorWidth(SOp):
    """The number of keys ``selector`` picks for each query."""

    selector: Selector

    def __post_init__(self) -> None:
        super().__post_init__()
        _need(self.selector, Selector, "the selector", self.label)

    @property
    def children(self) -> tuple[RASPExpr, ...]:
        return (self.selector,)


# ----------------------------------------------------------------------------- encodings
def numerical(sop: SOp) -> SOp:
    """The same s-op with a numerical (one scalar dimension) encoding.

    Raises:
        RaspTypeError: if ``sop`` is not an s-op, or it is an Aggregate of a categorical s-op.

    Example:
        >>> numerical(Map(lambda t: t == "x", tokens)).encoding
        'numerical'
    """
    _need(sop, SOp, "the argument", "numerical()")
    return replace(sop, encoding="numerical")


def categorical(sop: SOp) -> SOp:
    """The same s-op with a categorical (one-hot) encoding.

    Raises:
        RaspTypeError: if ``sop`` is not an s-op, or it is an Aggregate of a numerical s-op.

    Example:
        >>> categorical(tokens).encoding
        'categorical'
    """
    _need(sop, SOp, "the argument", "categorical()")
    return replace(sop, encoding="categorical")


tokens = TokensType(name="tokens")
indices = IndicesType(name="indices")
length = SelectorWidth(Select(tokens, tokens, Comparison.TRUE, name="select_all"), name="length")
