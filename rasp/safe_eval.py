"""Restricted lambdas: turn an ``ast.Lambda`` typed by a user into a Python closure, safely.

The body is interpreted node by node by ``SafeLambda``; nothing is passed to ``eval``,
``exec`` or ``compile``. Bodies may use arithmetic, comparisons, ``and``/``or``/``not``,
``a if c else b``, constants, the lambda's parameters, constants bound earlier in the
program, and calls to ``min``, ``max``, ``abs``, ``round``, ``int``, ``float``, ``bool``,
``len``. Results are bounded (huge powers and repetitions raise) so a program cannot
exhaust memory or time.

Example:
    >>> import ast
    >>> f = compile_lambda(ast.parse("lambda x: x * 2 if x > 1 else -x", mode="eval").body)
    >>> f(3), f(1)
    (6, -1)
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable, Mapping
from typing import Any

from rasp.errors import RaspParseError

#: What a lambda body may call, by name.
SAFE_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "min": min,
    "max": max,
    "abs": abs,
    "round": lambda x, n=None: round(x) if n is None else round(x, _small(n)),
    "int": int,
    "float": float,
    "bool": bool,
    "len": len,
}
#: Longest string or tuple a lambda may build, and largest integer (in bits).
MAX_SEQUENCE = 10_000
MAX_INT_BITS = 4_096

CONSTANT_TYPES = (int, float, str, bool, type(None))
LAMBDA_ALLOWED = (
    "arithmetic (+ - * / // % **, unary -), comparisons, and/or/not, 'a if c else b', "
    "constants, the lambda's parameters and calls to " + ", ".join(SAFE_FUNCTIONS)
)


def _checked_pow(a: Any, b: Any) -> Any:
    ints = isinstance(a, int) and isinstance(b, int)
    if ints and b > 0 and abs(a) > 1 and b * math.log2(abs(a)) > MAX_INT_BITS:
        raise ValueError(f"{a!r} ** {b!r} is too large (over {MAX_INT_BITS} bits)")
    return operator.pow(a, b)


def _checked_mul(a: Any, b: Any) -> Any:
    sized, count = (a, b) if isinstance(a, str | tuple) else (b, a)
    repeat = isinstance(sized, str | tuple) and isinstance(count, int)
    if repeat and len(sized) * count > MAX_SEQUENCE:
        raise ValueError(f"repetition longer than {MAX_SEQUENCE} items")
    return operator.mul(a, b)


def _small(n: Any) -> Any:
    if isinstance(n, int) and abs(n) > 100:  # round(10, -10**9) would build 10**(10**9)
        raise ValueError(f"round() digits must be within +-100, got {n!r}")
    return n


def _checked_mod(a: Any, b: Any) -> Any:
    if isinstance(a, str):  # '%*d' % (10**9, 1) formats a gigabyte
        raise ValueError("string formatting with % is not allowed in a RASP lambda")
    return operator.mod(a, b)


def _checked_add(a: Any, b: Any) -> Any:
    out = operator.add(a, b)
    if isinstance(out, str | tuple) and len(out) > MAX_SEQUENCE:
        raise ValueError(f"concatenation longer than {MAX_SEQUENCE} items")
    return out


BINARY_OPS: dict[type[ast.operator], Callable[[Any, Any], Any]] = {
    ast.Add: _checked_add,
    ast.Sub: operator.sub,
    ast.Mult: _checked_mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: _checked_mod,
    ast.Pow: _checked_pow,
}
UNARY_OPS: dict[type[ast.unaryop], Callable[[Any], Any]] = {
    ast.USub: operator.neg,
    ast.UAdd: operator.pos,
    ast.Not: operator.not_,
}
COMPARE_OPS: dict[type[ast.cmpop], Callable[[Any, Any], Any]] = {
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
    ast.Is: operator.is_,
    ast.IsNot: operator.is_not,
    ast.In: lambda a, b: operator.contains(b, a),
    ast.NotIn: lambda a, b: not operator.contains(b, a),
}


def describe(node: ast.AST) -> str:
    """A short human name for an AST node, for error messages (``"attribute access .x"``)."""
    if isinstance(node, ast.Attribute):
        return f"attribute access '.{node.attr}'"
    if isinstance(node, ast.Call):
        name = node.func.id if isinstance(node.func, ast.Name) else None
        return f"call to {name!r}" if name else "call of a computed function"
    if isinstance(node, ast.Name):
        return f"name {node.id!r}"
    names = {
        ast.Subscript: "subscript [...]",
        ast.NamedExpr: "walrus assignment (:=)",
        ast.JoinedStr: "f-string",
        ast.Import: "import statement",
        ast.ImportFrom: "import statement",
        ast.ListComp: "list comprehension",
        ast.SetComp: "set comprehension",
        ast.DictComp: "dict comprehension",
        ast.GeneratorExp: "generator expression",
        ast.Lambda: "lambda",
        ast.Starred: "starred argument (*x)",
        ast.Await: "await",
        ast.Yield: "yield",
        ast.Compare: "comparison",
        ast.FunctionDef: "function definition",
        ast.ClassDef: "class definition",
    }
    return names.get(type(node), f"{type(node).__name__} syntax")


def reject(node: ast.AST, why: str, allowed: str) -> RaspParseError:
    """A ``RaspParseError`` at ``node`` naming the construct, the reason and what is allowed."""
    line, col = getattr(node, "lineno", None), getattr(node, "col_offset", None)
    return RaspParseError(
        f"{describe(node)} is not allowed {why}; allowed: {allowed}",
        line=line,
        column=None if col is None else col + 1,
        construct=describe(node),
    )


class SafeLambda:
    """A user lambda, checked at construction and interpreted from its AST when called.

    Args:
        node: the ``ast.Lambda``.
        source: its text (shown by ``repr`` and head roles).
        constants: names bound earlier in the program to plain constants.

    Raises:
        RaspParseError: naming the first construct outside the allowed subset.
    """

    __name__ = "lambda"

    def __init__(
        self, node: ast.Lambda, source: str = "lambda", constants: Mapping[str, Any] = ()
    ) -> None:
        a = node.args
        if a.vararg or a.kwarg or a.kwonlyargs or a.posonlyargs or a.defaults:
            raise reject(node, "with defaults, *args, **kwargs or keyword-only parameters",
                         "plain parameters, e.g. 'lambda k, q: k < q'")  # fmt: skip
        self.params = tuple(arg.arg for arg in a.args)
        for name in self.params:
            if name.startswith("__"):
                raise reject(node, f"with the dunder parameter {name!r}", "ordinary names")
        self.constants = {k: v for k, v in dict(constants).items() if k not in self.params}
        self.body = node.body
        self.source = source
        self._check(self.body)

    def __repr__(self) -> str:
        return self.source

    def __call__(self, *args: Any) -> Any:
        if len(args) != len(self.params):
            raise TypeError(f"{self.source} takes {len(self.params)} argument(s), got {len(args)}")
        return self._eval(self.body, dict(zip(self.params, args)))

    def _check(self, node: ast.AST) -> None:
        if isinstance(node, ast.Constant):
            if not isinstance(node.value, CONSTANT_TYPES):
                raise reject(node, "in a lambda", "int, float, str, bool or None constants")
        elif isinstance(node, ast.Name):
            if node.id not in self.params and node.id not in self.constants:
                raise reject(node, "in a lambda (not a parameter or constant)", LAMBDA_ALLOWED)
        elif isinstance(node, ast.BinOp | ast.UnaryOp | ast.BoolOp | ast.Compare | ast.IfExp):
            op_types = {type(getattr(node, "op", None))} | {type(o) for o in _ops(node)}
            known = set(BINARY_OPS) | set(UNARY_OPS) | set(COMPARE_OPS) | {ast.And, ast.Or}
            if op_types - known - {type(None)}:
                raise reject(node, "with this operator in a lambda", LAMBDA_ALLOWED)
            for child in ast.iter_child_nodes(node):
                if not isinstance(child, ast.operator | ast.unaryop | ast.cmpop | ast.boolop):
                    self._check(child)
        elif isinstance(node, ast.Tuple | ast.List):
            for elt in node.elts:
                self._check(elt)
        elif isinstance(node, ast.Call):
            if not isinstance(node.func, ast.Name):
                raise reject(node.func, "in a lambda", LAMBDA_ALLOWED)
            if node.func.id not in SAFE_FUNCTIONS:
                raise reject(node, "in a lambda", LAMBDA_ALLOWED)
            if node.keywords:
                raise reject(node.keywords[0].value, "as a keyword argument", "positional ones")
            for arg in node.args:
                self._check(arg)
        else:
            raise reject(node, "in a lambda", LAMBDA_ALLOWED)

    def _eval(self, node: ast.AST, env: dict[str, Any]) -> Any:
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.Name):
            return env[node.id] if node.id in env else self.constants[node.id]
        if isinstance(node, ast.BinOp):
            op = BINARY_OPS[type(node.op)]
            return op(self._eval(node.left, env), self._eval(node.right, env))
        if isinstance(node, ast.UnaryOp):
            return UNARY_OPS[type(node.op)](self._eval(node.operand, env))
        if isinstance(node, ast.BoolOp):
            value = None
            for operand in node.values:  # short-circuits like Python
                value = self._eval(operand, env)
                if isinstance(node.op, ast.And) != bool(value):
                    return value
            return value
        if isinstance(node, ast.Compare):
            left = self._eval(node.left, env)
            for op, comparator in zip(node.ops, node.comparators):
                right = self._eval(comparator, env)
                if not COMPARE_OPS[type(op)](left, right):
                    return False
                left = right
            return True
        if isinstance(node, ast.IfExp):
            branch = node.body if self._eval(node.test, env) else node.orelse
            return self._eval(branch, env)
        if isinstance(node, ast.Tuple | ast.List):
            return tuple(self._eval(elt, env) for elt in node.elts)
        if isinstance(node, ast.Call):
            assert isinstance(node.func, ast.Name)
            args = [self._eval(arg, env) for arg in node.args]
            return SAFE_FUNCTIONS[node.func.id](*args)
        raise AssertionError(f"unchecked node {ast.dump(node)}")  # _check rejects these


def _ops(node: ast.AST) -> list[Any]:
    if isinstance(node, ast.Compare):
        return list(node.ops)
    if isinstance(node, ast.BoolOp):
        return [node.op]
    return []


def compile_lambda(
    node: ast.Lambda, source: str = "lambda", constants: Mapping[str, Any] = ()
) -> SafeLambda:
    """Check ``node`` against the allowed subset and return a closure interpreting it.

    Args:
        node: an ``ast.Lambda`` from ``ast.parse``.
        source: the lambda's text, kept for display.
        constants: names bound earlier to constants, readable from the body.

    Returns:
        A callable taking the lambda's parameters.

    Raises:
        RaspParseError: naming the first disallowed construct, its line and column.

    Example:
        >>> import ast
        >>> compile_lambda(ast.parse("lambda k, q: max(k, q) % 2", mode="eval").body)(3, 4)
        0
    """
    return SafeLambda(node, source, constants)
