"""Transformer weights (TransformerLens names) that compute a ``DiscreteProgram`` exactly.

Each program layer becomes one or two transformer blocks:

* block A: every head of the layer, then an MLP that decodes each numerical head's count,
  writes the non-BOS copies of the new head outputs, and runs the categorical MLPs;
* block B (only when the layer has numerical MLPs): no heads; an MLP running the numerical
  MLPs on the decoded counts.

Residual features are labelled ``var:value``; ``nb.var:value`` is the same one-hot with BOS
zeroed, which keys read so that BOS can be treated apart. A categorical head scores key
``j`` for query ``i`` as ``G * (M * match + prio(i, j))`` with BOS scoring ``M/2 *
(1 + match)``: a matching key always wins, the nearest (``model.closeness``) among matches
wins, and BOS wins when nothing matches. A numerical head attends equally to BOS and the
matching keys, so BOS's share is ``1 / (1 + count)``, which the next MLP decodes (the RASP
compiler's selector-width trick). MLPs are lookup tables, one ReLU unit per reachable input
pair. Softmax leakage is below ``exp(-40)``.

Example:
    >>> compiled = program_weights(program, "sort")        # doctest: +SKIP
    >>> compiled.sizes()["layers"]                          # doctest: +SKIP
    6
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np

from rasp.compiler.program import CompiledProgram
from rasp.programs.discrete import DiscreteProgram, Head, Mlp
from rasp.programs.model import closeness

#: Logit units between candidate keys of a categorical head.
GAP = 40.0
#: Logit gap between matching and other keys of a numerical head.
COUNT_LOGIT = 60.0
#: Input that switches a unit off at BOS.
BIG = 10.0


@dataclass
class _Block:
    heads: list[tuple[Head, np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = field(
        default_factory=list
    )
    units: list[tuple[dict[str, float], float, dict[str, float]]] = field(default_factory=list)
    head_roles: list[str] = field(default_factory=list)
    mlp_roles: list[str] = field(default_factory=list)


class _Layout:
    def __init__(self, program: DiscreteProgram) -> None:
        self.p = program
        keyed = {h.k_var for h in program.heads}
        counted = {x for m in program.mlps if m.kind == "num" for x in m.inputs}
        labels = ["ones"]
        for var in program.cat_vars:
            labels += [self.cat(var, x) for x in program.reachable[var]]
            if var in keyed:
                labels += [self.nb(var, x) for x in program.reachable[var]]
        for h in program.heads:
            if h.kind == "num":
                labels += [f"_{h.name}.bos_share", h.name]
                if h.name in counted:
                    labels += [f"{h.name}:{c}" for c in program.reachable[h.name]]
        self.labels, self.keyed = labels, keyed
        self.index = {label: i for i, label in enumerate(labels)}

    def cat(self, var: str, x: int) -> str:
        return f"{var}:{self.p.labels[var][x]}"

    def nb(self, var: str, x: int) -> str:
        return f"nb.{self.cat(var, x)}"

    def feature(self, var: str, value: int) -> str:
        """Residual feature of a table input (``ones`` has the single value 1)."""
        if var == "ones":
            return "ones"
        if var in self.p.num_vars:
            return f"{var}:{value}"
        return self.cat(var, value)

    def vec(self, weights: dict[str, float]) -> np.ndarray:
        out = np.zeros(len(self.labels))
        for label, w in weights.items():
            out[self.index[label]] += w
        return out


def program_weights(program: DiscreteProgram, name: str = "program") -> CompiledProgram:
    """Build TransformerLens-named weights computing ``program`` exactly.

    Args:
        program: the discretised program.
        name: the program's name (``CompiledProgram.program``).

    Returns:
        A ``CompiledProgram`` (``models.compiled.build_hooked`` loads it); its unembedding
        gives the program's classifier scores, whose argmax is the program's output.
    """
    start = time.perf_counter()
    lay = _Layout(program)
    t = program.n_ctx
    prio = closeness(t).numpy().astype(float)
    blocks: list[_Block] = []
    block_of: dict[str, int] = {}
    for layer in range(program.n_layers()):
        heads, mlps = program.layer_parts(layer)
        a = _Block()
        for h in heads:
            a.heads.append(
                (h, *(_cat_head(lay, h, prio) if h.kind == "cat" else _num_head(lay, h)))
            )
            a.head_roles.append(_head_role(program, h))
            if h.kind == "num":
                _decode_units(lay, h, a)
            elif h.name in lay.keyed:
                for x in program.reachable[h.name]:
                    a.units.append(({lay.cat(h.name, x): 1.0, "positions:0": -BIG}, 0.0,
                                    {lay.nb(h.name, x): 1.0}))  # fmt: skip
        for m in (m for m in mlps if m.kind == "cat"):
            _lookup_units(lay, m, a)
            a.mlp_roles.append(_mlp_role(m))
        blocks.append(a)
        block_of.update({h.name: len(blocks) - 1 for h in heads})
        num_mlps = [m for m in mlps if m.kind == "num"]
        if num_mlps:
            b = _Block()
            for m in num_mlps:
                _lookup_units(lay, m, b)
                b.mlp_roles.append(_mlp_role(m))
            blocks.append(b)
        block_of.update({m.name: len(blocks) - 1 for m in mlps})
    weights, config = _stack(lay, blocks, program)
    roles, head_exprs, mlp_exprs = {}, {}, {}
    for bi, block in enumerate(blocks):
        for hi, ((h, *_), role) in enumerate(zip(block.heads, block.head_roles)):
            roles[f"L{bi}H{hi}"] = role
            head_exprs[f"L{bi}H{hi}"] = h.name
        if block.mlp_roles or any(h.kind == "num" for h, *_ in block.heads):
            parts = [f"decode count of {h.name}" for h, *_ in block.heads if h.kind == "num"]
            roles[f"L{bi}.mlp"] = "; ".join(parts + block.mlp_roles)
            mlp_exprs[f"L{bi}.mlp"] = tuple(r.split(":")[0] for r in block.mlp_roles)
    v = program.vocab
    return CompiledProgram(
        config=config,
        weights={k: w.astype(np.float32) for k, w in weights.items()},
        input_vocab=v.token_labels,
        output_space=tuple(v.output_values),
        residual_labels=list(lay.labels),
        head_roles=roles,
        head_exprs=head_exprs,
        mlp_exprs=mlp_exprs,
        layer_of=block_of,
        program=name,
        max_seq_len=t - 1,
        causal=program.causal,
        compile_seconds=time.perf_counter() - start,
    )


def _cat_head(lay: _Layout, h: Head, prio: np.ndarray):
    p, t = lay.p, lay.p.n_ctx
    keys = list(p.reachable[h.k_var])
    col = {x: i for i, x in enumerate(keys)}
    width = len(keys) + t + 1
    match = 2.0 * (2 * t + 2)  # M: beats every priority and the BOS default
    q, k = np.zeros((len(lay.labels), width)), np.zeros((len(lay.labels), width))
    for x in p.reachable[h.q_var]:
        if h.pred[x] in col:
            q[lay.index[lay.cat(h.q_var, x)], col[h.pred[x]]] = GAP * match
    for i in range(t):
        q[lay.index[f"positions:{i}"], len(keys) : len(keys) + t] = GAP * prio[i]
        k[lay.index[f"positions:{i}"], len(keys) + i] = 1.0
    q[lay.index["ones"], -1] = GAP * match / 2
    k[lay.index["positions:0"], -1] = 1.0
    for x in keys:  # 1 off BOS, 1/2 at BOS: BOS's match counts half, its default the rest
        k[lay.index[lay.cat(h.k_var, x)], col[x]] = 0.5
        k[lay.index[lay.nb(h.k_var, x)], col[x]] = 0.5
    vals = list(p.reachable[h.v_var])
    v, o = np.zeros((len(lay.labels), len(vals))), np.zeros((len(vals), len(lay.labels)))
    for i, x in enumerate(vals):
        v[lay.index[lay.cat(h.v_var, x)], i] = 1.0
        o[i, lay.index[lay.cat(h.name, x)]] = 1.0
    return q, k, v, o


def _num_head(lay: _Layout, h: Head):
    p = lay.p
    keys = list(p.reachable[h.k_var])
    col = {x: i for i, x in enumerate(keys)}
    q, k = np.zeros((len(lay.labels), len(keys) + 1)), np.zeros((len(lay.labels), len(keys) + 1))
    for x in p.reachable[h.q_var]:
        if h.pred[x] in col:
            q[lay.index[lay.cat(h.q_var, x)], col[h.pred[x]]] = COUNT_LOGIT
    for x in keys:
        k[lay.index[lay.nb(h.k_var, x)], col[x]] = 1.0
    q[lay.index["ones"], -1] = COUNT_LOGIT
    k[lay.index["positions:0"], -1] = 1.0
    v, o = np.zeros((len(lay.labels), 1)), np.zeros((1, len(lay.labels)))
    v[lay.index["positions:0"], 0] = 1.0
    o[0, lay.index[f"_{h.name}.bos_share"]] = 1.0
    return q, k, v, o


def _decode_units(lay: _Layout, h: Head, block: _Block) -> None:
    """Ramps turning the BOS share ``1/(1+c)`` into ``c`` (scalar) and its one-hot."""
    counts = sorted(lay.p.reachable[h.name], reverse=True)  # grid ascending in 1/(1+c)
    grid = [1.0 / (1 + c) for c in counts]
    one_hot = f"{h.name}:{counts[0]}" in lay.index

    def row(c: int) -> dict[str, float]:
        out = {h.name: float(c)}
        if one_hot:
            out[f"{h.name}:{c}"] = 1.0
        return out

    share = f"_{h.name}.bos_share"
    block.units.append(({}, 1.0, row(counts[0])))
    for i in range(1, len(grid)):
        gap = grid[i] - grid[i - 1]
        slope, begin = 2.0 / gap, grid[i - 1] + gap / 4
        delta = {k: row(counts[i]).get(k, 0.0) - row(counts[i - 1]).get(k, 0.0)
                 for k in {*row(counts[i]), *row(counts[i - 1])}}  # fmt: skip
        block.units.append(({share: slope}, -slope * begin, delta))
        block.units.append(
            ({share: slope}, -slope * begin - 1.0, {k: -d for k, d in delta.items()})
        )


def _lookup_units(lay: _Layout, m: Mlp, block: _Block) -> None:
    """One unit per reachable input pair writing (output - default); one unit the default."""
    outs = list(m.table.values())
    default = max(sorted(set(outs)), key=outs.count)
    copies = [(lay.cat, 0.0)]
    if m.name in lay.keyed:
        copies.append((lay.nb, -BIG))
    for name_of, off_bos in copies:
        bos = {"positions:0": off_bos} if off_bos else {}
        block.units.append((dict(bos), 1.0, {name_of(m.name, default): 1.0}))
        for (x, y), o in m.table.items():
            if o == default:
                continue
            fa, fb = lay.feature(m.inputs[0], x), lay.feature(m.inputs[1], y)
            inputs = {fa: 1.0} if fa == fb else {fa: 1.0, fb: 1.0}
            bias = 0.0 if fa == fb else -1.0
            write = {name_of(m.name, o): 1.0, name_of(m.name, default): -1.0}
            for label, wt in bos.items():
                inputs[label] = inputs.get(label, 0.0) + wt
            block.units.append((inputs, bias, write))


def _stack(lay: _Layout, blocks: list[_Block], program: DiscreteProgram):
    d_model = len(lay.labels)
    n_heads = max(1, *(len(b.heads) for b in blocks))
    d_head = max([1, *(max(q.shape[1], v.shape[1]) for b in blocks for _, q, _, v, _ in b.heads)])
    d_mlp = max([1, *(len(b.units) for b in blocks)])
    w: dict[str, np.ndarray] = {}
    for bi, block in enumerate(blocks):
        p = f"blocks.{bi}."
        wq, wk, wv = (np.zeros((n_heads, d_model, d_head)) for _ in range(3))
        wo = np.zeros((n_heads, d_head, d_model))
        for i, (_, q, k, v, o) in enumerate(block.heads):
            wq[i, :, : q.shape[1]] = q * math.sqrt(d_head)  # TL divides scores by sqrt(d_head)
            wk[i, :, : k.shape[1]] = k
            wv[i, :, : v.shape[1]] = v
            wo[i, : o.shape[0]] = o
        w |= {p + "attn.W_Q": wq, p + "attn.W_K": wk, p + "attn.W_V": wv, p + "attn.W_O": wo}
        for b in ("b_Q", "b_K", "b_V"):
            w[p + "attn." + b] = np.zeros((n_heads, d_head))
        w[p + "attn.b_O"] = np.zeros(d_model)
        w_in, b_in, w_out = np.zeros((d_model, d_mlp)), np.zeros(d_mlp), np.zeros((d_mlp, d_model))
        for u, (inputs, bias, write) in enumerate(block.units):
            w_in[:, u], b_in[u], w_out[u] = lay.vec(inputs), bias, lay.vec(write)
        w |= {p + "mlp.W_in": w_in, p + "mlp.b_in": b_in, p + "mlp.W_out": w_out}
        w[p + "mlp.b_out"] = np.zeros(d_model)
    v = program.vocab
    t = program.n_ctx
    w_e, w_pos = np.zeros((v.n_tokens, d_model)), np.zeros((t, d_model))
    for i in range(v.n_tokens):
        w_e[i] = lay.vec({"ones": 1.0, lay.cat("tokens", i): 1.0})
        if "tokens" in lay.keyed and i:
            w_e[i] += lay.vec({lay.nb("tokens", i): 1.0})
    for i in range(t):
        w_pos[i] = lay.vec({lay.cat("positions", i): 1.0})
        if "positions" in lay.keyed and i:
            w_pos[i] += lay.vec({lay.nb("positions", i): 1.0})
    w_u = np.zeros((d_model, len(v.output_values)))
    for var in program.cat_vars:
        for x in program.reachable[var]:
            w_u[lay.index[lay.cat(var, x)]] = program.classifier[var][x]
    for var in program.num_vars:
        w_u[lay.index[var]] = program.classifier_num[var]
    w |= {"embed.W_E": w_e, "pos_embed.W_pos": w_pos, "unembed.W_U": w_u,
          "unembed.b_U": np.zeros(len(v.output_values))}  # fmt: skip
    config = {
        "n_layers": len(blocks),
        "n_heads": n_heads,
        "d_model": d_model,
        "d_head": d_head,
        "d_mlp": d_mlp,
        "n_ctx": t,
        "d_vocab": v.n_tokens,
        "d_vocab_out": len(v.output_values),
        "act_fn": "relu",
        "normalization_type": None,
        "attention_dir": "causal" if program.causal else "bidirectional",
        "positional_embedding_type": "standard",
        "attn_only": False,
        "default_prepend_bos": False,
        "model_name": "transformer-program",
    }
    return w, config


def _head_role(program: DiscreteProgram, h: Head) -> str:
    if h.kind == "cat":
        return (
            f"{h.name}: select_closest(keys={h.k_var}, queries={h.q_var}) "
            f"aggregate {h.v_var} (BOS if no match)"
        )
    return f"{h.name}: count(keys={h.k_var}, queries={h.q_var}) (selector width, via BOS share)"


def _mlp_role(m: Mlp) -> str:
    return f"{m.name}: lookup({m.inputs[0]}, {m.inputs[1]}) ({len(m.table)} rows)"
