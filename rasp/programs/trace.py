"""What each head of a program did on one input: which keys matched its predicate, which it chose.

``trace_program(program, seq)`` runs the decompiled program and, for every head, rebuilds the
``[query, key]`` match matrix from the variables it read, the key each categorical head
selected (nearest match, BOS by default) or the count of a numerical head, and the value it
wrote: the data behind the app's "which head fired where" view.

Example:
    >>> trace = trace_program(program, [3, 1, 2, "EOS"])        # doctest: +SKIP
    >>> trace.heads["attn_0_0"].selected                        # doctest: +SKIP
    [2, 3, 1, 0, 4]
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass

from rasp.programs.decompile import decompile_program
from rasp.programs.discrete import DiscreteProgram, Head


@dataclass(frozen=True)
class HeadTrace:
    """One head on one input (positions include BOS at 0).

    Attributes:
        name: ``attn_<layer>_<i>`` or ``num_attn_<layer>_<i>``.
        kind: ``cat`` (selects one key) or ``num`` (counts matching keys other than BOS).
        q_var, k_var, v_var: the variables read for queries, keys and values.
        tokens: ``["BOS", *input]`` as strings.
        queries, keys: the query and key variable's value at each position.
        matched: ``[query][key]`` whether the predicate matches (and the key is visible).
        selected: the chosen key per query (``cat``), else ``None``.
        output: the value written at each position (copied value or count).
        rule: ``{query value: key value it looks for}`` over the query values seen.
    """

    name: str
    kind: str
    q_var: str
    k_var: str
    v_var: str | None
    tokens: tuple[str, ...]
    queries: tuple[Hashable, ...]
    keys: tuple[Hashable, ...]
    matched: tuple[tuple[bool, ...], ...]
    selected: tuple[int, ...] | None
    output: tuple[Hashable, ...]
    rule: dict[Hashable, Hashable | None]


@dataclass(frozen=True)
class ProgramTrace:
    """Every head of a program on one input, and the program's outputs (heads whose inputs
    no longer matter to the output may be missing from ``heads``)."""

    tokens: tuple[str, ...]
    outputs: tuple[Hashable, ...]
    heads: dict[str, HeadTrace]


def trace_program(
    program: DiscreteProgram, seq: Sequence[Hashable], *, source: str | None = None
) -> ProgramTrace:
    """Run the program on ``seq`` and record every head.

    Args:
        program: the discretised program.
        seq: the input values (no BOS).
        source: its decompiled source, when already made.

    Raises:
        ProgramDataError: for a value outside the vocabulary or an input too long.
    """
    program.vocab.encode(seq)  # validates
    namespace: dict = {}
    exec(compile(source or decompile_program(program), "<program>", "exec"), namespace)
    values = namespace["variables"](list(seq))
    outputs = namespace["run"](list(seq))
    full = _all_variables(program, values)
    tokens = tuple(str(v) for v in full["tokens"])
    heads = {h.name: _head(program, h, full, tokens) for h in program.heads if h.name in full}
    return ProgramTrace(tokens, tuple(outputs), heads)


def _all_variables(program: DiscreteProgram, values: dict) -> dict[str, list]:
    """The decompiled module keeps live variables only; dead ones are recomputed here."""
    out = dict(values)
    n = len(out["tokens"])
    for h in program.heads:
        if h.name in out:
            continue
        if any(v not in out for v in (h.q_var, h.k_var, h.v_var) if v):
            continue
        matched = _matched(program, h, out, n)
        if h.kind == "cat":
            out[h.name] = [out[h.v_var][j] for j in _select(matched)]
        else:
            out[h.name] = [sum(row) for row in matched]
    return out


def _matched(program: DiscreteProgram, h: Head, values: dict, n: int) -> list[list[bool]]:
    q_labels, k_labels = program.labels[h.q_var], program.labels[h.k_var]
    q_index = {q_labels[x]: x for x in program.reachable[h.q_var]}
    k_reach = set(program.reachable[h.k_var])
    wanted = [h.pred[q_index[q]] for q in values[h.q_var]]
    wanted_labels = [k_labels[w] if w in k_reach else object() for w in wanted]
    rows = []
    for i in range(n):
        row = []
        for j in range(n):
            visible = (j <= i or not program.causal) and (j > 0 or h.kind == "cat")
            row.append(visible and values[h.k_var][j] == wanted_labels[i])
        rows.append(row)
    return rows


def _select(matched: list[list[bool]]) -> list[int]:
    picked = []
    for i, row in enumerate(matched):
        hits = [j for j, m in enumerate(row) if m]
        picked.append(min(hits, key=lambda j: (j == i, abs(i - j), j > i)) if hits else 0)
    return picked


def _head(program: DiscreteProgram, h: Head, values: dict, tokens: tuple) -> HeadTrace:
    n = len(tokens)
    matched = _matched(program, h, values, n)
    q_labels, k_labels = program.labels[h.q_var], program.labels[h.k_var]
    rule = {}
    for x in program.reachable[h.q_var]:
        if q_labels[x] in values[h.q_var]:
            k = h.pred[x]
            rule[q_labels[x]] = k_labels[k] if k in program.reachable[h.k_var] else None
    return HeadTrace(
        name=h.name,
        kind=h.kind,
        q_var=h.q_var,
        k_var=h.k_var,
        v_var=h.v_var,
        tokens=tokens,
        queries=tuple(values[h.q_var]),
        keys=tuple(values[h.k_var]),
        matched=tuple(tuple(r) for r in matched),
        selected=tuple(_select(matched)) if h.kind == "cat" else None,
        output=tuple(values[h.name]),
        rule=rule,
    )
