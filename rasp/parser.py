"""Parse a RASP program typed as text into an s-op, without ``eval`` or ``exec``.

The text is read with ``ast.parse`` and only a small subset is accepted, built straight
into ``rasp`` objects: assignments ``name = expr`` and an optional final expression;
``tokens``, ``indices``, ``length``; calls to the language's constructors and the library's
``make_*`` functions; ``Comparison.EQ`` and friends; ``.named("x")``; constants and
tuples/lists of them; ``+ - *`` on s-ops and ``& | ~`` on selectors; and lambdas whose
bodies ``rasp.safe_eval`` checks and interprets. Anything else raises ``RaspParseError``
naming the construct, its line and column.

Example:
    >>> from rasp import evaluate
    >>> program = parse_program("flip = Select(indices, length - indices - 1, Comparison.EQ)\\n"
    ...                         "Aggregate(flip, tokens).named('reverse')")
    >>> evaluate(program, [3, 1, 2])
    [2, 1, 3]
"""

from __future__ import annotations

import ast
import inspect
import operator
from typing import Any

from rasp import library
from rasp.errors import RaspParseError
from rasp.language import (
    Aggregate,
    Comparison,
    Full,
    LinearSequenceMap,
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
    categorical,
    indices,
    length,
    numerical,
    tokens,
)
from rasp.safe_eval import BINARY_OPS, CONSTANT_TYPES, compile_lambda, reject

#: Longest program text accepted, and most syntax-tree nodes.
MAX_CHARS = 20_000
MAX_NODES = 5_000

CONSTRUCTORS: dict[str, Any] = {
    "Map": Map,
    "SequenceMap": SequenceMap,
    "LinearSequenceMap": LinearSequenceMap,
    "Full": Full,
    "ConstantSOp": Full,
    "Select": Select,
    "Aggregate": Aggregate,
    "SelectorWidth": SelectorWidth,
    "SelectorAnd": SelectorAnd,
    "SelectorOr": SelectorOr,
    "SelectorNot": SelectorNot,
    "numerical": numerical,
    "categorical": categorical,
}
LIBRARY_FUNCTIONS: dict[str, Any] = {
    name: fn
    for name, fn in vars(library).items()
    if name.startswith("make_") and inspect.isfunction(fn) and fn.__module__ == library.__name__
}
PRIMITIVES: dict[str, Any] = {"tokens": tokens, "indices": indices, "length": length}
RESERVED = {*CONSTRUCTORS, *LIBRARY_FUNCTIONS, *PRIMITIVES, "Comparison"}
ALLOWED = (
    "assignments 'name = expr' and a final expression made of tokens, indices, length, "
    "earlier names, constants, tuples/lists of constants, Comparison.<"
    + "|".join(c.name for c in Comparison)
    + ">, lambdas, .named('x'), + - * on s-ops, & | ~ on selectors, and calls to "
    + ", ".join([*CONSTRUCTORS, *LIBRARY_FUNCTIONS])
)
#: Example programs for the dashboard, keyed by the library program each one equals.
PROGRAM_EXAMPLES: dict[str, str] = {
    "reverse": """\
# reverse, from primitives: position i reads position length - i - 1
opp = (length - indices).named("opp_idx")
opp = (opp - 1).named("opp_idx-1")
flip = Select(indices, opp, Comparison.EQ).named("flip")
reverse = Aggregate(flip, tokens).named("reverse")
""",
    "hist": """\
# how often each position's token occurs
same = Select(tokens, tokens, Comparison.EQ).named("same_tok")
SelectorWidth(same).named("hist")
""",
    "count_less": """\
# earlier tokens smaller than this one: one head, causal-safe
smaller = Select(tokens, tokens, Comparison.LT).named("smaller_tok")
earlier = Select(indices, indices, Comparison.LT).named("earlier")
program = SelectorWidth((smaller & earlier).named("earlier_smaller")).named("count_less")
""",
    "sort": """\
# sort with repeated keys: make keys unique with key + i / max_seq_len, then rank
max_seq_len = 5
uniq = SequenceMap(lambda k, i: k + i / max_seq_len, tokens, indices).named("uniq_key")
rank = SelectorWidth(Select(uniq, uniq, Comparison.LT).named("smaller")).named("rank")
Aggregate(Select(rank, indices, Comparison.EQ).named("by_rank"), tokens).named("sort")
""",
    "frac_prevs": """\
# fraction of 'x' tokens so far (numerical)
is_x = numerical(Map(lambda t: 1 if t == "x" else 0, tokens)).named("is_x")
prevs = Select(indices, indices, Comparison.LEQ).named("frac_prevs_prevs")
numerical(Aggregate(prevs, is_x, default=0)).named("frac_prevs")
""",
    "shuffle_dyck": """\
# a library function called directly
make_shuffle_dyck(["()"])
""",
}
_SOP_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul}
_SELECTOR_OPS = {ast.BitAnd: operator.and_, ast.BitOr: operator.or_}


def parse_program(text: str) -> SOp:
    """Build the s-op a program text describes, accepting only a safe subset of Python.

    The output is the final expression, else the name ``program``, else the last name assigned.

    Args:
        text: the program, e.g. ``"hist = SelectorWidth(Select(tokens, tokens, Comparison.EQ))"``.

    Returns:
        The program's output s-op.

    Raises:
        RaspParseError: for a syntax error or a construct outside the subset (the message
            names it, its line and column, and what is allowed), or when a constructor
            rejects its arguments.

    Example:
        >>> parse_program("SelectorWidth(Select(tokens, tokens, Comparison.EQ))").kind
        'selector_width'
    """
    if not isinstance(text, str):
        raise RaspParseError(f"a program must be text, got {type(text).__name__}")
    if len(text) > MAX_CHARS:
        raise RaspParseError(f"a program may have at most {MAX_CHARS} characters, got {len(text)}")
    try:
        tree = ast.parse(text, mode="exec")
    except SyntaxError as err:
        raise RaspParseError(
            f"syntax error: {err.msg}", line=err.lineno, column=err.offset, construct="syntax"
        ) from err
    except (ValueError, RecursionError, MemoryError) as err:
        raise RaspParseError(f"cannot parse the program: {err}") from err
    nodes = list(ast.walk(tree))
    if len(nodes) > MAX_NODES:
        raise RaspParseError(f"a program may have at most {MAX_NODES} syntax nodes")
    for node in nodes:  # dunders first, so '__import__(...).system' names '__import__'
        name = getattr(node, "id", None) or getattr(node, "attr", None) or getattr(node, "arg", "")
        if isinstance(name, str) and name.startswith("__"):
            raise reject(node, "(dunder names are never allowed)", ALLOWED)
    try:
        return _Builder(text).program(tree)
    except RecursionError as err:
        raise RaspParseError("the program is nested too deeply") from err


class _Builder:
    def __init__(self, text: str) -> None:
        self.text = text
        self.env: dict[str, Any] = {}

    def program(self, tree: ast.Module) -> SOp:
        output: Any = None
        last_node: ast.AST | None = None
        final_expr = False
        for i, stmt in enumerate(tree.body):
            last_node = stmt
            if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1:
                target = stmt.targets[0]
                if not isinstance(target, ast.Name):
                    raise reject(target, "as an assignment target", "a plain name")
                if target.id in RESERVED:
                    raise reject(target, "as an assignment target (reserved)", "other names")
                output = self.env[target.id] = self.expr(stmt.value)
            elif isinstance(stmt, ast.Expr) and i == len(tree.body) - 1:
                output, final_expr = self.expr(stmt.value), True
            else:
                where = "before the end" if isinstance(stmt, ast.Expr) else "as a statement"
                raise reject(stmt, where, ALLOWED)
        if "program" in self.env and not final_expr:
            output = self.env["program"]
        if last_node is None:
            raise RaspParseError(f"the program is empty; write {ALLOWED}")
        if not isinstance(output, SOp):
            raise RaspParseError(
                f"the program's output must be an s-op, got {type(output).__name__} {output!r}",
                line=last_node.lineno,
                column=last_node.col_offset + 1,
            )
        return output

    def expr(self, node: ast.AST) -> Any:
        if isinstance(node, ast.Constant):
            if not isinstance(node.value, CONSTANT_TYPES):
                raise reject(node, "", "int, float, str, bool or None constants")
            return node.value
        if isinstance(node, ast.Name):
            if node.id in self.env:
                return self.env[node.id]
            if node.id in PRIMITIVES:
                return PRIMITIVES[node.id]
            raise reject(node, "(not defined earlier, or not a value)", ALLOWED)
        if isinstance(node, ast.Attribute):
            value = node.value
            if (
                isinstance(value, ast.Name)
                and value.id == "Comparison"
                and node.attr in Comparison.__members__
            ):
                return Comparison[node.attr]
            raise reject(node, "", ALLOWED)
        if isinstance(node, ast.Tuple | ast.List):
            values = [self.expr(elt) for elt in node.elts]
            if not all(isinstance(v, CONSTANT_TYPES) for v in values):
                raise reject(node, "with non-constant items", "tuples/lists of constants")
            return tuple(values) if isinstance(node, ast.Tuple) else values
        if isinstance(node, ast.Lambda):
            constants = {k: v for k, v in self.env.items() if isinstance(v, CONSTANT_TYPES)}
            source = ast.get_source_segment(self.text, node) or "lambda"
            return compile_lambda(node, source, constants)
        if isinstance(node, ast.Call):
            return self.call(node)
        if isinstance(node, ast.BinOp):
            return self.binop(node)
        if isinstance(node, ast.UnaryOp):
            operand = self.expr(node.operand)
            if isinstance(node.op, ast.Invert) and isinstance(operand, Selector):
                return self.guard(node, lambda: ~operand)
            if isinstance(node.op, ast.USub | ast.UAdd) and _is_number(operand):
                return -operand if isinstance(node.op, ast.USub) else operand
            raise reject(node, "on this operand", "~ on selectors, unary - on numbers")
        if isinstance(node, ast.Compare):
            raise reject(node, "outside a lambda", "Map(lambda x: x == 1, tokens) or Select(...)")
        raise reject(node, "", ALLOWED)

    def call(self, node: ast.Call) -> Any:
        func = node.func
        if isinstance(func, ast.Attribute) and func.attr == "named":
            target = self.expr(func.value)
            if not isinstance(target, RASPExpr):
                raise reject(func, f"on a {type(target).__name__}", ".named on s-ops/selectors")
            fn: Any = target.named
        elif isinstance(func, ast.Name) and func.id in CONSTRUCTORS | LIBRARY_FUNCTIONS:
            fn = (CONSTRUCTORS | LIBRARY_FUNCTIONS)[func.id]
        else:
            raise reject(node if isinstance(func, ast.Name) else func, "", ALLOWED)
        args = []
        for arg in node.args:
            if isinstance(arg, ast.Starred):
                raise reject(arg, "", "positional and name=value arguments")
            args.append(self.expr(arg))
        kwargs = {}
        for kw in node.keywords:
            if kw.arg is None:
                raise reject(kw.value, "(**kwargs)", "positional and name=value arguments")
            kwargs[kw.arg] = self.expr(kw.value)
        return self.guard(node, lambda: fn(*args, **kwargs))

    def binop(self, node: ast.BinOp) -> Any:
        left, right = self.expr(node.left), self.expr(node.right)
        op = type(node.op)
        operands = (left, right)
        if (
            op in _SOP_OPS
            and any(isinstance(v, SOp) for v in operands)
            and all(isinstance(v, SOp) or _is_number(v) for v in operands)
        ):
            return self.guard(node, lambda: _SOP_OPS[op](left, right))
        if op in _SELECTOR_OPS and isinstance(left, Selector) and isinstance(right, Selector):
            return self.guard(node, lambda: _SELECTOR_OPS[op](left, right))
        if op in BINARY_OPS and _is_number(left) and _is_number(right):
            return self.guard(node, lambda: BINARY_OPS[op](left, right))
        raise reject(
            node,
            f"on {type(left).__name__} and {type(right).__name__}",
            "+ - * with s-ops and numbers, & | on selectors, arithmetic on numbers",
        )

    def guard(self, node: ast.AST, build: Any) -> Any:
        """Run a constructor, turning its errors into a located ``RaspParseError``."""
        try:
            return build()
        except Exception as err:
            code = ast.get_source_segment(self.text, node) or type(node).__name__
            raise RaspParseError(
                f"{code[:80]} failed: {err}",
                line=getattr(node, "lineno", None),
                column=getattr(node, "col_offset", -1) + 1,
                construct=code[:80],
            ) from err


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)
