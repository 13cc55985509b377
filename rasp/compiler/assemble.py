"""``compile_program``: RASP expression -> ``CompiledProgram`` (numpy weights with TL names).

Pipeline: graph and value sets (``graph``) -> residual layout (one labelled subspace per
s-op) -> layer allocation (each expression at the earliest attention or MLP sub-layer after
all its inputs, i.e. by longest path) -> per-expression blocks (``blocks``) -> stacked weights.
"""

from __future__ import annotations

import math
import time
from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np

from rasp.compiler import blocks
from rasp.compiler.graph import Analysis, analyse, causal_safe, describe_selector, selector_terms
from rasp.compiler.program import CompiledProgram
from rasp.errors import CompileError, UnsupportedProgramError
from rasp.language import (
    Aggregate,
    Full,
    IndicesType,
    Map,
    RASPExpr,
    Selector,
    SelectorWidth,
    SequenceMap,
    SOp,
    TokensType,
)


def compile_program(
    program: SOp,
    vocab: Sequence[Hashable],
    max_seq_len: int,
    *,
    compiler_bos: str = "BOS",
    causal: bool = False,
    also_compile: Sequence[SOp] = (),
) -> CompiledProgram:
    """Compile a RASP s-op to transformer weights.

    Args:
        program: the output s-op.
        vocab: the input values (BOS excluded); the token of id ``i + 1`` is ``vocab[i]``.
        max_seq_len: longest input; the model's context is ``max_seq_len + 1`` (BOS).
        compiler_bos: the BOS token's name in ``input_vocab``.
        causal: build causal attention; only for programs whose every selector picks keys
            at or before the query (``Select(indices, indices, LEQ/LT/EQ)`` in an And).
        also_compile: extra s-ops to compute in the residual stream even if the output
            does not read them (dead branches, for ablation controls).

    Returns:
        The compiled program; see ``CompiledProgram``.

    Raises:
        CompileError: for a bad vocabulary, length or duplicate expression names.
        UnsupportedProgramError: listing every expression that cannot be compiled.

    Example:
        >>> from rasp import compile_program, library
        >>> compile_program(library.make_hist(), [1, 2, 3], 5).sizes()["heads"]
        1
    """
    start = time.perf_counter()
    _check_args(program, vocab, max_seq_len, compiler_bos, also_compile)
    an = analyse([program, *also_compile], vocab, max_seq_len)
    problems = list(an.problems)
    if causal:
        problems += [
            (
                e.selector.label,
                f"selector {describe_selector(e.selector)} may pick later keys; "
                "causal=True needs every selector to contain Select(indices, indices, LEQ/LT/EQ)",
            )
            for e in an.nodes
            if isinstance(e, Aggregate | SelectorWidth) and not causal_safe(e.selector)
        ]
    if problems:
        raise UnsupportedProgramError(problems)
    labels = _layout(an, vocab, max_seq_len, compiler_bos)
    space = {label: i for i, label in enumerate(labels)}
    sub = _allocate(an.nodes)
    n_layers = max(1, max(sub.values(), default=0) // 2 + 1)
    heads: list[list[tuple[SOp, blocks.Head]]] = [[] for _ in range(n_layers)]
    mlps: list[list[tuple[SOp, blocks.Mlp]]] = [[] for _ in range(n_layers)]
    for expr in an.nodes:
        if isinstance(expr, Aggregate | SelectorWidth):
            heads[_attn_layer(sub, expr)].append((expr, _head(expr, an, space)))
        if isinstance(expr, Map | SequenceMap | SelectorWidth):
            mlps[sub[expr.label] // 2].append((expr, _mlp(expr, an, space)))
    weights, config = _stack(heads, mlps, labels, max_seq_len, vocab, causal)
    output_space = None if program.is_numerical else an.values[program.label]
    weights.update(_embed_unembed(an, program, space, max_seq_len, vocab, output_space))
    config["d_vocab_out"] = 1 if output_space is None else max(1, len(output_space))
    config["model_name"] = f"rasp-{program.label}"
    roles, head_exprs, mlp_exprs = _roles(heads, mlps)
    return CompiledProgram(
        config=config,
        weights={k: v.astype(np.float32) for k, v in weights.items()},
        input_vocab=(compiler_bos, *vocab),
        output_space=None if output_space is None else tuple(output_space),
        residual_labels=labels,
        head_roles=roles,
        head_exprs=head_exprs,
        mlp_exprs=mlp_exprs,
        layer_of={k: v // 2 for k, v in sub.items() if v >= 0},
        program=program.label,
        max_seq_len=max_seq_len,
        causal=causal,
        compile_seconds=time.perf_counter() - start,
    )


def _check_args(program: Any, vocab: Any, max_seq_len: Any, bos: str, extra: Any) -> None:
    for sop in (program, *extra):
        if not isinstance(sop, SOp):
            raise CompileError(f"can only compile an s-op (SOp), got {type(sop).__name__} {sop!r}")
    if isinstance(max_seq_len, bool) or not isinstance(max_seq_len, int) or max_seq_len < 1:
        raise CompileError(f"max_seq_len must be an int >= 1, got {max_seq_len!r}")
    vocab = list(vocab)
    if not vocab:
        raise CompileError("vocab is empty; give at least one input value")
    bad = [v for v in vocab if v is None or v == bos or not isinstance(v, Hashable)]
    if bad or len(set(vocab)) != len(vocab):
        raise CompileError(
            f"vocab must hold distinct hashable values other than None and the BOS token {bos!r}; "
            f"got {vocab!r}"
        )


def _layout(an: Analysis, vocab: Sequence, n: int, bos: str) -> list[str]:
    labels = [
        "one",
        "tokens:BOS",
        *(f"tokens:{v}" for v in vocab),
        *(f"indices:{i}" for i in range(n)),
    ]
    del bos  # the BOS dim is always "tokens:BOS" so heads can find it
    for expr in an.nodes:
        if not isinstance(expr, SOp) or (
            isinstance(expr, TokensType | IndicesType) and not expr.is_numerical
        ):
            continue
        if expr.is_numerical:
            labels.append(expr.label)
        else:
            labels += [f"{expr.label}:{v}" for v in an.values[expr.label] or ()]
        if isinstance(expr, SelectorWidth):
            labels.append(_scratch(expr))
    if len(set(labels)) != len(labels):
        dup = sorted({x for x in labels if labels.count(x) > 1})
        raise CompileError(f"residual labels collide: {dup}; rename the expressions involved")
    return labels


def _scratch(expr: SelectorWidth) -> str:
    return f"_{expr.label}_bos_share"


def _allocate(nodes: list[RASPExpr]) -> dict[str, int]:
    """Sub-layer of each expression's value: -1 embedding, 2l attention of layer l, 2l+1 MLP."""
    sub: dict[str, int] = {}
    for expr in nodes:
        deps = max((sub[c.label] for c in expr.children), default=-1)
        if isinstance(expr, TokensType | IndicesType | Full):
            sub[expr.label] = -1
        elif isinstance(expr, Selector):
            sub[expr.label] = deps
        elif isinstance(expr, Aggregate):
            sub[expr.label] = deps + 1 if deps % 2 else deps + 2
        elif isinstance(expr, SelectorWidth):
            sub[expr.label] = (deps + 1 if deps % 2 else deps + 2) + 1
        else:
            sub[expr.label] = deps + 2 if deps % 2 else deps + 1
    return sub


def _attn_layer(sub: dict[str, int], expr: SOp) -> int:
    return sub[expr.label] // 2


def _head(expr: Aggregate | SelectorWidth, an: Analysis, space: dict[str, int]) -> blocks.Head:
    terms = selector_terms(expr.selector)
    if isinstance(expr, SelectorWidth):
        return blocks.selector_width_head(terms, _scratch(expr), an.values, space)
    return blocks.aggregate_head(
        terms, expr.sop.label, expr.label, expr.is_numerical, an.values, space
    )


def _mlp(expr: SOp, an: Analysis, space: dict[str, int]) -> blocks.Mlp:
    vals, num = an.values, expr.is_numerical
    if isinstance(expr, SelectorWidth):
        n = len(vals[expr.label] or ())
        grid = [1.0 / (k + 1) for k in reversed(range(n))]
        outs = list(reversed(range(n)))
        return blocks.discretising_mlp(_scratch(expr), grid, outs, expr.label, num, space, 1.0)
    if isinstance(expr, Map):
        inner = expr.inner
        xs = vals[inner.label] or ()
        if inner.is_numerical:
            outs = [expr.f(x) for x in xs]
            return blocks.discretising_mlp(inner.label, xs, outs, expr.label, num, space)
        rows = [([f"{inner.label}:{x}"], expr.f(x)) for x in xs]
        return blocks.lookup_mlp(rows, expr.label, num, space)
    assert isinstance(expr, SequenceMap)
    a, b = expr.fst, expr.snd
    if a.is_numerical:
        assert expr.linear is not None
        return blocks.linear_mlp(a.label, b.label, expr.linear, expr.label, space)
    if a is b:
        rows = [([f"{a.label}:{x}"], expr.f(x, x)) for x in vals[a.label] or ()]
    else:
        rows = [
            ([f"{a.label}:{x}", f"{b.label}:{y}"], expr.f(x, y))
            for x in vals[a.label] or ()
            for y in vals[b.label] or ()
        ]
    return blocks.lookup_mlp(rows, expr.label, num, space)


def _stack(heads, mlps, labels, n, vocab, causal) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    d_model, n_layers = len(labels), len(heads)
    n_heads = max(1, *(len(h) for h in heads))
    d_head = max([1, *(max(h.q.shape[1], h.v.shape[1]) for layer in heads for _, h in layer)])
    merged = [blocks.Mlp.concat([m for _, m in layer], d_model) for layer in mlps]
    d_mlp = max([1, *(m.b_in.size for m in merged)])
    w: dict[str, np.ndarray] = {}
    for layer in range(n_layers):
        p = f"blocks.{layer}."
        wq, wk, wv = (np.zeros((n_heads, d_model, d_head)) for _ in range(3))
        wo = np.zeros((n_heads, d_head, d_model))
        for i, (_, h) in enumerate(heads[layer]):
            wq[i, :, : h.q.shape[1]] = h.q * math.sqrt(d_head)  # TL divides scores by sqrt(d_head)
            wk[i, :, : h.k.shape[1]] = h.k
            wv[i, :, : h.v.shape[1]] = h.v
            wo[i, : h.o.shape[0], :] = h.o
        w |= {p + "attn.W_Q": wq, p + "attn.W_K": wk, p + "attn.W_V": wv, p + "attn.W_O": wo}
        for b in ("b_Q", "b_K", "b_V"):
            w[p + "attn." + b] = np.zeros((n_heads, d_head))
        w[p + "attn.b_O"] = np.zeros(d_model)
        m, h_used = merged[layer], merged[layer].b_in.size
        w_in, b_in, w_out = np.zeros((d_model, d_mlp)), np.zeros(d_mlp), np.zeros((d_mlp, d_model))
        w_in[:, :h_used], b_in[:h_used], w_out[:h_used] = m.w_in, m.b_in, m.w_out
        w |= {p + "mlp.W_in": w_in, p + "mlp.b_in": b_in, p + "mlp.W_out": w_out}
        w[p + "mlp.b_out"] = np.zeros(d_model)
    config = {
        "n_layers": n_layers,
        "n_heads": n_heads,
        "d_model": d_model,
        "d_head": d_head,
        "d_mlp": d_mlp,
        "n_ctx": n + 1,
        "d_vocab": len(vocab) + 1,
        "act_fn": "relu",
        "normalization_type": None,
        "attention_dir": "causal" if causal else "bidirectional",
        "positional_embedding_type": "standard",
        "attn_only": False,
        "default_prepend_bos": False,
    }
    return w, config


def _embed_unembed(an, program, space, n, vocab, output_space) -> dict[str, np.ndarray]:
    d_model = len(space)
    w_e, w_pos = np.zeros((len(vocab) + 1, d_model)), np.zeros((n + 1, d_model))
    w_e[:, space["one"]] = 1.0
    w_e[0, space["tokens:BOS"]] = 1.0
    numerical = {e.label: e for e in an.nodes if isinstance(e, SOp) and e.is_numerical}
    for i, v in enumerate(vocab):
        w_e[i + 1, space[f"tokens:{v}"]] = 1.0
        if "tokens" in numerical:
            w_e[i + 1, space["tokens"]] = float(v)
    for p in range(n):
        w_pos[p + 1, space[f"indices:{p}"]] = 1.0
        if "indices" in numerical:
            w_pos[p + 1, space["indices"]] = float(p)
        for e in an.nodes:
            if isinstance(e, Full):  # constants live off BOS, like every s-op
                key = e.label if e.is_numerical else f"{e.label}:{e.fill}"
                w_pos[p + 1, space[key]] = float(e.fill) if e.is_numerical else 1.0
    if output_space is None:
        w_u = np.zeros((d_model, 1))
        w_u[space[program.label], 0] = 1.0
    else:
        w_u = np.zeros((d_model, max(1, len(output_space))))
        for j, v in enumerate(output_space):
            w_u[space[f"{program.label}:{v}"], j] = 1.0
    return {
        "embed.W_E": w_e,
        "pos_embed.W_pos": w_pos,
        "unembed.W_U": w_u,
        "unembed.b_U": np.zeros(w_u.shape[1]),
    }


def _roles(heads, mlps) -> tuple[dict[str, str], dict[str, str], dict[str, tuple[str, ...]]]:
    roles: dict[str, str] = {}
    head_exprs: dict[str, str] = {}
    mlp_exprs: dict[str, tuple[str, ...]] = {}
    for layer, layer_heads in enumerate(heads):
        for i, (expr, _) in enumerate(layer_heads):
            name = f"L{layer}H{i}"
            sel = describe_selector(expr.selector)
            if isinstance(expr, SelectorWidth):
                roles[name] = f"selector_width({sel}) -> {expr.label} (attention: BOS share)"
            else:
                roles[name] = f"{sel} aggregate {expr.sop.label} -> {expr.label}"
            head_exprs[name] = expr.label
    for layer, parts in enumerate(mlps):
        if parts:
            name = f"L{layer}.mlp"
            roles[name] = "; ".join(_mlp_role(e) for e, _ in parts)
            mlp_exprs[name] = tuple(e.label for e, _ in parts)
    return roles, head_exprs, mlp_exprs


def _mlp_role(expr: SOp) -> str:
    if isinstance(expr, SelectorWidth):
        return f"selector_width decode count -> {expr.label}"
    if isinstance(expr, Map):
        return f"map {expr.inner.label} -> {expr.label}"
    assert isinstance(expr, SequenceMap)
    kind = "linear_sequence_map" if expr.linear else "sequence_map"
    return f"{kind}({expr.fst.label}, {expr.snd.label}) -> {expr.label}"
