"""``DiscreteProgram``: the argmax of every choice of a trained ``ProgramModel``, as plain data.

This is what the decompiler, the RASP emitter and the weight builder read: which variables
each head and MLP reads, each head's predicate (query value -> key value), each MLP's lookup
table over every reachable input, and the rounded classifier. Value sets are propagated
forward (``reachable``) so that unreachable query values and table rows can be dropped.

Example:
    >>> program = discretise(model, vocab)                  # doctest: +SKIP
    >>> program.heads[0].name, program.heads[0].q_var       # doctest: +SKIP
    ('attn_0_0', 'positions')
"""

from __future__ import annotations

import itertools
from collections.abc import Hashable
from dataclasses import dataclass, field

import torch

from rasp.programs.data import ProgramVocab
from rasp.programs.model import ProgramModel


@dataclass(frozen=True)
class Head:
    """One head. ``pred[q] = k``: query value index ``q`` matches key value index ``k``.

    ``kind`` is ``cat`` (copy ``v_var`` from the closest match, BOS by default) or ``num``
    (count the matching keys other than BOS).
    """

    name: str
    layer: int
    kind: str
    q_var: str
    k_var: str
    v_var: str | None
    pred: tuple[int, ...]


@dataclass(frozen=True)
class Mlp:
    """One MLP: ``table[(x, y)]`` is the output value index for input values ``x``, ``y``
    (indices for categorical inputs, the numbers themselves for numerical ones)."""

    name: str
    layer: int
    kind: str
    inputs: tuple[str, str]
    table: dict[tuple[int, int], int]


@dataclass(frozen=True)
class DiscreteProgram:
    """A discretised Transformer Program.

    Attributes:
        vocab: token ids and output classes.
        causal: whether queries see only earlier keys.
        cat_vars: categorical variable names in residual order.
        num_vars: numerical variable names in residual order.
        labels: value label of each index of each categorical variable (``None``: never taken).
        heads: every head, in execution order.
        mlps: every MLP, in execution order.
        classifier: ``{var: [[score per class] per value]}`` for categorical variables.
        classifier_num: ``{var: [score per class]}`` (times the variable's value).
        reachable: value indices (categorical) or values (numerical) each variable can take.
    """

    vocab: ProgramVocab
    causal: bool
    cat_vars: tuple[str, ...]
    num_vars: tuple[str, ...]
    labels: dict[str, tuple[Hashable | None, ...]]
    heads: tuple[Head, ...]
    mlps: tuple[Mlp, ...]
    classifier: dict[str, list[list[float]]]
    classifier_num: dict[str, list[float]]
    reachable: dict[str, tuple[int, ...]] = field(default_factory=dict)

    @property
    def n_ctx(self) -> int:
        """Positions including BOS."""
        return self.vocab.n_ctx

    @property
    def d_var(self) -> int:
        """Values of each categorical variable."""
        return self.vocab.d_var

    def n_layers(self) -> int:
        """Layers (1 + the highest layer of any head or MLP)."""
        return 1 + max([h.layer for h in self.heads] + [m.layer for m in self.mlps])

    def layer_parts(self, layer: int) -> tuple[list[Head], list[Mlp]]:
        """The heads and MLPs of one layer."""
        return (
            [h for h in self.heads if h.layer == layer],
            [m for m in self.mlps if m.layer == layer],
        )


@torch.no_grad()
def discretise(model: ProgramModel, vocab: ProgramVocab) -> DiscreteProgram:
    """Read the argmax program out of a trained model.

    Args:
        model: a trained ``ProgramModel``.
        vocab: the vocabulary it was trained with.

    Returns:
        The discrete program, with reachable value sets filled in.
    """
    cat_vars, num_vars = model.variables()
    d, t = model.d_var, model.n_ctx
    labels: dict[str, tuple] = {
        "tokens": tuple(vocab.token_labels) + (None,) * (d - vocab.n_tokens),
        "positions": tuple(range(t)) + (None,) * (d - t),
    }
    reach: dict[str, tuple[int, ...]] = {
        "tokens": tuple(range(vocab.n_tokens)),
        "positions": tuple(range(t)),
        "ones": (1,),
    }
    heads: list[Head] = []
    mlps: list[Mlp] = []
    n_cat, n_num = 2, 1
    arch = model.arch
    for li, layer in enumerate(model.layers):
        cat_in, num_in = list(cat_vars[:n_cat]), list(num_vars[:n_num])
        cr = layer.cat_read.argmax(-1)  # [3, H]
        cp = layer.cat_pred.argmax(-1)  # [H, d]
        for h in range(arch.n_heads_cat):
            name = f"attn_{li}_{h}"
            v_var = cat_in[int(cr[2, h])]
            head = Head(name, li, "cat", cat_in[int(cr[0, h])], cat_in[int(cr[1, h])], v_var,
                        tuple(int(x) for x in cp[h]))  # fmt: skip
            heads.append(head)
            labels[name], reach[name] = labels[v_var], reach[v_var]
        nr, npred = layer.num_read.argmax(-1), layer.num_pred.argmax(-1)
        for h in range(arch.n_heads_num):
            name = f"num_attn_{li}_{h}"
            heads.append(Head(name, li, "num", cat_in[int(nr[0, h])], cat_in[int(nr[1, h])], None,
                              tuple(int(x) for x in npred[h])))  # fmt: skip
            reach[name] = tuple(range(t))  # at most t - 1 keys besides BOS
        mid_cat = cat_in + [f"attn_{li}_{h}" for h in range(arch.n_heads_cat)]
        mid_num = num_in + [f"num_attn_{li}_{h}" for h in range(arch.n_heads_num)]
        reads = layer.mlp_read.argmax(-1)  # [M, 2]
        eye = torch.eye(d)
        for m in range(arch.n_mlps_cat):
            a, b = (mid_cat[int(i)] for i in reads[m])
            pairs = list(itertools.product(range(d), range(d)))
            x = torch.stack([torch.cat([eye[i], eye[j]]) for i, j in pairs])
            out = layer.mlp_logits("mlp", m, x).argmax(-1).tolist()
            table = {pair: int(o) for pair, o in zip(pairs, out)}
            mlps.append(_finish_mlp(f"mlp_{li}_{m}", li, "cat", (a, b), table, reach, labels, d))
        reads = layer.num_mlp_read.argmax(-1)
        for m in range(arch.n_mlps_num):
            a, b = (mid_num[int(i)] for i in reads[m])
            pairs = list(itertools.product(reach[a], reach[b]))
            x = torch.tensor(pairs, dtype=torch.float32)
            out = layer.mlp_logits("num_mlp", m, x).argmax(-1).tolist()
            table = {pair: int(o) for pair, o in zip(pairs, out)}
            mlps.append(
                _finish_mlp(f"num_mlp_{li}_{m}", li, "num", (a, b), table, reach, labels, d)
            )
        n_cat += arch.n_heads_cat + arch.mlps_per_layer
        n_num += arch.n_heads_num
    w_cat, w_num = model.classifier_weights(hard=True)
    classifier = {v: w_cat[i].double().tolist() for i, v in enumerate(cat_vars)}
    classifier_num = {v: w_num[i].double().tolist() for i, v in enumerate(num_vars)}
    return DiscreteProgram(
        vocab=vocab,
        causal=bool(model.causal),
        cat_vars=tuple(cat_vars),
        num_vars=tuple(num_vars),
        labels=labels,
        heads=tuple(heads),
        mlps=tuple(mlps),
        classifier=classifier,
        classifier_num=classifier_num,
        reachable=reach,
    )


def _finish_mlp(name, layer, kind, inputs, table, reach, labels, d) -> Mlp:
    a, b = inputs
    live = {(x, y): o for (x, y), o in table.items() if x in reach[a] and y in reach[b]}
    if a == b:  # both inputs read the same variable: only the diagonal is reachable
        live = {(x, y): o for (x, y), o in live.items() if x == y}
    reach[name] = tuple(sorted(set(live.values())))
    labels[name] = tuple(range(d))
    return Mlp(name, layer, kind, inputs, live)
