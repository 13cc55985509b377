"""Decompile a ``DiscreteProgram`` to a self-contained Python module (source text).

One function per head (its predicate as a rule such as ``k_position == q_position - 1`` or
``k_token == q_token``, else as a table of query values grouped by the key value they
select), one per MLP (a lookup table with the most common output as the default branch),
the classifier as a table of scores, and ``run(tokens)`` executing them in order. The
paper's compression is applied: query values selecting the same key value are merged, the
most frequent branch becomes the default, and unreachable values and rows are dropped (value
sets are propagated forward by ``discretise``).

Example:
    >>> source = decompile_program(program, "sort")           # doctest: +SKIP
    >>> namespace = {}; exec(source, namespace)                 # doctest: +SKIP
    >>> namespace["run"]([3, 1, 2, "EOS"])                      # doctest: +SKIP
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable

from rasp.programs.discrete import DiscreteProgram, Head, Mlp

_RUNTIME = '''
def select_closest(keys, queries, predicate):
    """Per query, the index of the matching key nearest to it (the earlier of two equally
    near, itself last), or 0 (BOS) when no key matches."""
    picked = []
    for i, q in enumerate(queries):
        seen = range(i + 1) if CAUSAL else range(len(keys))
        matches = [j for j in seen if predicate(q, keys[j])]
        picked.append(min(matches, key=lambda j: (j == i, abs(i - j), j > i)) if matches else 0)
    return picked


def aggregate(picked, values):
    """The value at each query's selected key."""
    return [values[j] for j in picked]


def count(keys, queries, predicate):
    """Per query, how many keys other than BOS match (RASP selector width)."""
    out = []
    for i, q in enumerate(queries):
        seen = range(1, i + 1) if CAUSAL else range(1, len(keys))
        out.append(sum(1 for j in seen if predicate(q, keys[j])))
    return out


def classify(variables):
    """The class with the highest summed score at every position (first one on ties)."""
    n = len(OUTPUTS)
    out = []
    for pos in range(len(variables["tokens"])):
        scores = [0.0] * n
        for name, table in CLASSIFIER.items():
            row = table.get(variables[name][pos])
            if row is not None:
                scores = [s + w for s, w in zip(scores, row)]
        for name, row in CLASSIFIER_NUM.items():
            value = variables[name][pos]
            scores = [s + value * w for s, w in zip(scores, row)]
        out.append(OUTPUTS[max(range(n), key=lambda c: scores[c])])
    return out
'''


def _short(var: str) -> str:
    return {"tokens": "token", "positions": "position"}.get(var, var)


def _arg_names(a: str, b: str, prefix: tuple[str, str] = ("", "")) -> tuple[str, str]:
    x, y = prefix[0] + _short(a), prefix[1] + _short(b)
    return (x, y) if x != y else (x + "_1", y + "_2")


def _shift(q: Hashable, k: Hashable) -> int | None:
    """``k - q`` when both are (non-bool) ints."""
    ints = all(isinstance(v, int) and not isinstance(v, bool) for v in (q, k))
    return k - q if ints else None  # type: ignore[operator]


def _rule(qn: str, kn: str, shift: int) -> str:
    sign = f" + {shift}" if shift > 0 else (f" - {-shift}" if shift < 0 else "")
    return f"{kn} == {qn}{sign}"


def head_predicate_source(program: DiscreteProgram, head: Head) -> list[str]:
    """``def predicate_<layer>_<i>(q, k)`` for one head, compressed: query values selecting
    the same key value are merged, and the largest group, or a shift rule
    ``k == q + c`` when it covers more queries, is the default branch."""
    qn, kn = _arg_names(head.q_var, head.k_var, ("q_", "k_"))
    q_labels, k_labels = program.labels[head.q_var], program.labels[head.k_var]
    k_reach = set(program.reachable[head.k_var])
    rows = []  # (query label, key label or None when it can never match)
    for q in program.reachable[head.q_var]:
        k = head.pred[q]
        rows.append((q_labels[q], k_labels[k] if k in k_reach else None))
    fname = f"predicate_{head.name.removeprefix('num_').removeprefix('attn_')}"
    if head.kind == "num":
        fname = "num_" + fname
    lines = [f"def {fname}({qn}, {kn}):"]
    groups: dict[Hashable, list[Hashable]] = {}
    for q, k in rows:
        groups.setdefault(k, []).append(q)
    same_domain = q_labels == k_labels  # a shift rule only reads well within one domain
    shifts = Counter(
        d for q, k in rows if same_domain and k is not None and (d := _shift(q, k)) is not None
    )
    best_shift, covered = shifts.most_common(1)[0] if shifts else (None, 0)
    largest = max(groups, key=lambda k: (len(groups[k]), repr(k)))
    if best_shift is not None and covered > len(groups[largest]) and covered >= 2:
        default = _rule(qn, kn, best_shift)
        groups = {}
        for q, k in rows:
            if k is None or _shift(q, k) != best_shift:
                groups.setdefault(k, []).append(q)
    else:
        default = "False" if largest is None else f"{kn} == {largest!r}"
        groups.pop(largest)
    order = sorted(groups, key=lambda k: (-len(groups[k]), repr(k)))
    for i, k in enumerate(order):
        test = "if" if i == 0 else "elif"
        result = "False" if k is None else f"{kn} == {k!r}"
        lines += [f"    {test} {qn} in {_set(groups[k])}:", f"        return {result}"]
    return [*lines, f"    return {default}"]


def _set(values: list) -> str:
    try:
        ordered = sorted(values)
    except TypeError:
        ordered = sorted(values, key=repr)
    return "{" + ", ".join(repr(v) for v in ordered) + "}"


def mlp_source(program: DiscreteProgram, mlp: Mlp) -> tuple[list[str], list[str]]:
    """``def <mlp name>(a, b)`` as a lookup with a default branch (one argument when the
    output depends on one input only), and the variables to call it with."""
    a, b = mlp.inputs

    def label(var: str, x: int) -> Hashable:
        return program.labels[var][x] if var in program.labels else x

    rows = [((label(a, x), label(b, y)), o) for (x, y), o in mlp.table.items()]
    an, bn = (_short(a), _short(a)) if a == b else _arg_names(a, b)
    used = [0, 1]
    for drop in (1, 0):
        by_kept: dict = {}
        ok = True
        for key, o in rows:
            if by_kept.setdefault(key[1 - drop], o) != o:
                ok = False
                break
        if ok and len(used) == 2:
            used = [1 - drop]
    if a == b:
        used = [0]
    names = [an, bn]
    params = ", ".join(names[i] for i in used)
    lines = [f"def {mlp.name}_lookup({params}):"]
    table: dict = {}
    for key, o in rows:
        table[tuple(key[i] for i in used)] = o
    counts = Counter(table.values())
    args = [mlp.inputs[i] for i in used]
    if len(counts) == 1:
        return [*lines, f"    return {next(iter(counts))!r}"], args
    default = max(sorted(counts), key=lambda o: counts[o])
    key_expr = names[used[0]] if len(used) == 1 else f"({params})"
    lines.append(f"    key = {key_expr}")
    first = True
    for out in sorted(counts, key=lambda o: (-counts[o], o)):
        if out == default:
            continue
        keys = [k[0] if len(used) == 1 else k for k, o in table.items() if o == out]
        lines += [
            f"    {'if' if first else 'elif'} key in {_set(keys)}:",
            f"        return {out!r}",
        ]
        first = False
    lines.append(f"    return {default!r}")
    return lines, args


def _classifier_literal(program: DiscreteProgram, live: set[str]) -> list[str]:
    lines = ["CLASSIFIER = {"]
    for var in program.cat_vars:
        if var not in live:
            continue
        lines.append(f"    {var!r}: {{")
        for x in program.reachable[var]:
            row = ", ".join(_num(w) for w in program.classifier[var][x])
            lines.append(f"        {program.labels[var][x]!r}: ({row}),")
        lines.append("    },")
    lines += ["}", "CLASSIFIER_NUM = {"]
    for var in program.num_vars:
        if var in live:
            lines.append(
                f"    {var!r}: ({', '.join(_num(w) for w in program.classifier_num[var])}),"
            )
    return [*lines, "}"]


def _num(w: float) -> str:
    return repr(int(w)) if w == int(w) else repr(w)


def live_variables(program: DiscreteProgram) -> set[str]:
    """Variables that can change the output: read by a live part, or with a classifier row
    that is not the same for every class (a constant row shifts all scores alike)."""

    def matters(var: str) -> bool:
        if var in program.classifier_num:
            row = program.classifier_num[var]
            return len(set(row)) > 1
        rows = program.classifier[var]
        return any(len(set(rows[x])) > 1 for x in program.reachable[var])

    live = {v for v in (*program.cat_vars, *program.num_vars) if matters(v)}
    live.add("tokens")  # run() always needs the input
    parts = [(h.name, [h.q_var, h.k_var] + ([h.v_var] if h.v_var else [])) for h in program.heads]
    parts += [(m.name, list(m.inputs)) for m in program.mlps]
    changed = True
    while changed:
        changed = False
        for name, reads in parts:
            if name in live and not set(reads) <= live:
                live |= set(reads)
                changed = True
    return live


def decompile_program(program: DiscreteProgram, name: str = "program") -> str:
    """Python source of a module whose ``run(tokens)`` computes the program.

    Args:
        program: the discretised program.
        name: the task's name, for the docstring.

    Returns:
        Source text; ``run(tokens)`` takes the input values (no BOS) and returns one output
        value per position. It imports nothing.
    """
    live = live_variables(program)
    v = program.vocab
    out = [
        f'"""Transformer Program for {name!r}, decompiled by mechscope from a trained model.',
        "",
        f"Inputs: {', '.join(map(repr, v.input_values))} (at most {v.n_ctx - 1}); BOS is prepended.",
        f"Outputs: {', '.join(map(repr, v.output_values))}.",
        '"""',
        "",
        f"CAUSAL = {program.causal}",
        f"OUTPUTS = {tuple(v.output_values)!r}",
        *_RUNTIME.splitlines(),
        "",
        *_classifier_literal(program, live),
        "",
        "",
        "def run(tokens):",
        '    """The output value at every position of ``tokens`` (BOS not included)."""',
        "    return classify(variables(tokens))[1:]",
        "",
        "",
        "def variables(tokens):",
        '    """Every variable at every position of ``["BOS", *tokens]``."""',
        '    tokens = ["BOS", *tokens]',
        "    positions = list(range(len(tokens)))",
        "    ones = [1] * len(tokens)",
    ]
    n_layers = program.n_layers()
    for layer in range(n_layers):
        heads, mlps = program.layer_parts(layer)
        for head in heads:
            if head.name not in live:
                continue
            out.append("")
            out += ["    " + line for line in head_predicate_source(program, head)]
            pname = out[-1 - _body_len(out)].split("(")[0].removeprefix("    def ")
            if head.kind == "cat":
                out.append(
                    f"    {head.name} = aggregate(select_closest({head.k_var}, {head.q_var}, "
                    f"{pname}), {head.v_var})"
                )
            else:
                out.append(f"    {head.name} = count({head.k_var}, {head.q_var}, {pname})")
        for mlp in mlps:
            if mlp.name not in live:
                continue
            src, args = mlp_source(program, mlp)
            out.append("")
            out += ["    " + line for line in src]
            zipped = f"zip({', '.join(args)})" if len(args) > 1 else args[0]
            call = f"{mlp.name}_lookup(*xs)" if len(args) > 1 else f"{mlp.name}_lookup(xs)"
            out.append(f"    {mlp.name} = [{call} for xs in {zipped}]")
    live_names = [n for n in (*program.cat_vars, *program.num_vars) if n in live]
    out += [
        "",
        "    return {" + ", ".join(f"{n!r}: {n}" for n in live_names) + "}",
        "",
    ]
    return "\n".join(out)


def _body_len(lines: list[str]) -> int:
    n = 0
    for line in reversed(lines):
        if line.startswith("    def "):
            return n
        n += 1
    return n
