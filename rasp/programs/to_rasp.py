"""Emit a ``DiscreteProgram`` as RASP (``rasp.language``) where the mapping is direct.

The RASP program reads the token *ids* of ``[BOS, *input]`` (BOS is id 0, an ordinary value
here), so that the learned program's BOS position exists in RASP too. Direct mappings:

* numerical head -> ``SelectorWidth(Select(k, q, k == pred[q]) & Select(indices, indices,
  0 < k (<= q when causal)))`` (the count of matching keys other than BOS);
* categorical head whose keys are ``positions`` (each key value occurs once) or whose every
  query selects a value that occurs at most once (BOS's token) -> the selected position as
  a ``SequenceMap`` of the query and ``length`` (or ``indices`` when causal; BOS when the
  position does not exist or is not visible) and ``Aggregate(Select(indices, target, EQ), v)``;
* MLP -> ``SequenceMap`` (or ``Map`` when both inputs are the same variable) of its table.

A categorical head choosing the *closest* of several matching keys has no RASP equivalent
(RASP selectors are pairwise predicates), so it and everything reading it are left out and
reported in ``RaspProgram.skipped``. The final linear classifier is a readout, applied to
the RASP variables by ``RaspProgram.outputs``.

Example:
    >>> emitted = program_to_rasp(program)                                 # doctest: +SKIP
    >>> evaluate(emitted.sops["num_attn_0_0"], [0, 3, 1, 3])               # doctest: +SKIP
    [0, 2, 1, 2]
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field

from rasp.interpreter import evaluate
from rasp.language import (
    Aggregate,
    Comparison,
    Full,
    Map,
    Select,
    SelectorAnd,
    SelectorWidth,
    SequenceMap,
    SOp,
    indices,
    length,
    tokens,
)
from rasp.programs.discrete import DiscreteProgram, Head, Mlp


@dataclass
class RaspProgram:
    """The RASP s-ops of a program's variables.

    Attributes:
        program: the discrete program.
        sops: variable name -> its s-op (values: value indices, counts for numerical heads).
        skipped: variable name -> why it has no direct RASP form.
    """

    program: DiscreteProgram
    sops: dict[str, SOp] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)

    @property
    def complete(self) -> bool:
        """Whether every variable the output reads has a RASP form."""
        return not self.skipped

    def ids(self, seq: Sequence[Hashable]) -> list[int]:
        """The RASP input of an input sequence: token ids of ``[BOS, *seq]``."""
        index = {v: i + 1 for i, v in enumerate(self.program.vocab.input_values)}
        return [0, *(index[v] for v in seq)]

    def evaluate_variables(self, seq: Sequence[Hashable]) -> dict[str, list]:
        """Every emitted variable on ``seq``, by the reference interpreter (BOS position first)."""
        ids = self.ids(seq)
        return {name: evaluate(sop, ids) for name, sop in self.sops.items()}

    def outputs(self, seq: Sequence[Hashable]) -> list:
        """The program's output on ``seq``: the classifier over the interpreted variables.

        Raises:
            KeyError: when the program is not ``complete``.
        """
        p = self.program
        values = self.evaluate_variables(seq)
        values["ones"] = [1] * (len(seq) + 1)
        n_out = len(p.vocab.output_values)
        out = []
        for pos in range(1, len(seq) + 1):
            scores = [0.0] * n_out
            for var in p.cat_vars:
                row = p.classifier[var][values[var][pos]]
                scores = [s + w for s, w in zip(scores, row)]
            for var in p.num_vars:
                scores = [s + values[var][pos] * w for s, w in zip(scores, p.classifier_num[var])]
            out.append(p.vocab.output_values[max(range(n_out), key=lambda c: scores[c])])
        return out


def program_to_rasp(program: DiscreteProgram) -> RaspProgram:
    """RASP s-ops for every variable of ``program`` with a direct RASP form.

    Returns:
        The emitted s-ops (named like the variables) and the variables skipped, with why.
    """
    out = RaspProgram(program)
    out.sops["tokens"], out.sops["positions"] = tokens, indices
    out.sops["ones"] = Full(1).named("ones")
    for layer in range(program.n_layers()):
        heads, mlps = program.layer_parts(layer)
        for h in heads:
            _emit(out, h.name, [h.q_var, h.k_var, *([h.v_var] if h.v_var else [])],
                  lambda h=h: _head(out, h))  # fmt: skip
        for m in mlps:
            _emit(out, m.name, list(m.inputs), lambda m=m: _mlp(out, m))
    return out


def _emit(out: RaspProgram, name: str, reads: list[str], build) -> None:
    missing = [r for r in reads if r not in out.sops]
    if missing:
        out.skipped[name] = f"reads {', '.join(missing)}, which has no direct RASP form"
        return
    sop = build()
    if isinstance(sop, str):
        out.skipped[name] = sop
    else:
        out.sops[name] = sop


def _matches(h: Head):
    pred = h.pred
    return lambda k, q: k == pred[q]


def _head(out: RaspProgram, h: Head) -> SOp | str:
    p = out.program
    q, k = out.sops[h.q_var], out.sops[h.k_var]
    causal = p.causal
    if h.kind == "num":
        keys_ok = (lambda key, qi: 0 < key <= qi) if causal else (lambda key, qi: key > 0)
        selector = SelectorAnd(
            Select(k, q, _matches(h)).named(f"{h.name}_match"),
            Select(indices, indices, keys_ok).named(f"{h.name}_not_bos"),
        ).named(f"{h.name}_selector")
        return SelectorWidth(selector).named(h.name)
    unique = _unique_key_values(p, h.k_var)
    targets = {h.pred[x] for x in p.reachable[h.q_var]} & set(p.reachable[h.k_var])
    if not targets <= unique:
        return (
            f"selects the closest of possibly several keys with {h.k_var} in "
            f"{sorted(targets - unique)} (no RASP selector picks the closest match)"
        )
    pred = dict(enumerate(h.pred))
    reach = set(p.reachable[h.k_var])
    if h.k_var == "positions":
        if causal:

            def where(qv, i):
                j = pred[qv]
                return j if j in reach and j <= i else 0

            target = SequenceMap(where, q, indices)
        else:

            def where(qv, n):
                j = pred[qv]
                return j if j in reach and j < n else 0

            target = SequenceMap(where, q, length)
    else:  # every reachable query selects BOS's token or nothing: BOS either way
        target = Map(lambda qv: 0, q)
    target = target.named(f"{h.name}_target")
    return Aggregate(Select(indices, target, Comparison.EQ).named(f"{h.name}_select"),
                     out.sops[h.v_var]).named(h.name)  # fmt: skip


def _unique_key_values(p: DiscreteProgram, var: str) -> set[int]:
    """Values of ``var`` that occur at most once in any input."""
    if var == "positions":
        return set(p.reachable[var])
    if var == "tokens":
        return {0}  # BOS
    return set()


def _mlp(out: RaspProgram, m: Mlp) -> SOp:
    a, b = m.inputs
    table = dict(m.table)
    default = next(iter(table.values()))
    if a == b:
        return Map(lambda x: table.get((x, x), default), out.sops[a]).named(m.name)
    return SequenceMap(lambda x, y: table.get((x, y), default), out.sops[a], out.sops[b]).named(
        m.name
    )
