"""Exact activation patching of every edge or node of the residual-stream graph, as ``Circuit``s.

The ground truth that edge attribution patching (``analysis.edge_attribution``) estimates:
``M(patched) - M(clean)`` with only one edge's (or node's) contribution moved to its value on
the corrupted input. Patches share forward passes (one stacked copy of the batch each), and a
pass starts at the first layer its patches change, from the clean residual stream there.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor

from analysis.circuits import Circuit, parse_node, split_edge
from analysis.edge_attribution import (
    LETTERS,
    EdgeGraph,
    Metric,
    Patch,
    _check_additive,
    _check_inputs,
    _circuit,
    _edge_mode,
    _mlp_in,
    _qkv_input,
    _reader_hooks,
    _scalar,
    _writer_hooks,
    _writes,
    edge_graph,
)
from analysis.errors import OptionError
from analysis.hooks import attn_z, mlp_out, require_hooks, resid_post, resid_pre
from analysis.protocol import model_name


def _patch_deltas(inner: Any, clean: Tensor, corrupted: Tensor, metric: Metric,
                  scale: float) -> tuple[float, Tensor, dict[str, Tensor], list[Tensor]]:  # fmt: skip
    """``M(clean)``, ``scale *`` the writes' delta ``[up, batch, pos, d_model]`` and each
    ``attn_z`` delta, and the clean residual entering each layer (and the final one)."""
    cfg, runs = inner.cfg, []
    names = _writer_hooks(cfg) + [resid_pre(i) for i in range(1, cfg.n_layers)]
    for tokens in (clean, corrupted):
        acts: dict[str, Tensor] = {}

        def store(x: Tensor, hook: Any, acts: dict = acts) -> None:
            acts[hook.name] = x.detach()

        with torch.no_grad(), inner.hooks(fwd_hooks=[(n, store) for n in names]):
            runs.append((float(_scalar(metric(inner(tokens)))), acts))
    (value, clean_acts), (_, corr_acts) = runs
    delta = _writes(inner, corr_acts) - _writes(inner, clean_acts)
    last = resid_post(cfg.n_layers - 1)
    _check_additive(delta, corr_acts[last] - clean_acts[last])
    z = {n: scale * (corr_acts[n] - clean_acts[n]) for n in map(attn_z, range(cfg.n_layers))}
    starts = [clean_acts[resid_pre(i)] for i in range(cfg.n_layers)] + [clean_acts[last]]
    return value, scale * delta, z, starts


def _edge_patch(cfg: Any, graph: EdgeGraph, edge: str, delta: Tensor) -> Patch:
    src, dst = split_edge(edge)
    kind, layer, head = parse_node(dst)
    added = delta[graph.upstream.index(src)]
    if kind == "head":
        return layer, tuple(_qkv_input(layer, c) for c in LETTERS), head, added
    return (
        (layer, (_mlp_in(layer),), None, added)
        if kind == "mlp"
        else (cfg.n_layers, (), None, added)
    )


def _node_patch(graph: EdgeGraph, node: str, delta: Tensor, z: dict[str, Tensor]) -> Patch:
    kind, layer, head = parse_node(node)
    if kind == "head":
        return layer, (attn_z(layer),), head, z[attn_z(layer)][:, :, head]
    return layer, (mlp_out(layer),), None, delta[graph.upstream.index(node)]


def _adder(entries: list[tuple[int, int | None, Tensor]], copies: int, b: int) -> Callable:
    index = torch.tensor([e[0] for e in entries])
    heads, deltas = [e[1] for e in entries], torch.stack([e[2] for e in entries])

    def hook(x: Tensor, hook: Any) -> Tensor:
        x = x.clone(memory_format=torch.contiguous_format)
        view = x.view(copies, b, *x.shape[1:])
        if heads[0] is None:
            view[index.to(x.device)] += deltas
        else:  # [copy, head, batch, pos, d]: each copy patches its own (copy, head) slot
            view.permute(0, 3, 1, 2, 4)[index.to(x.device), torch.tensor(heads)] += deltas
        return x

    return hook


def _run_patches(inner: Any, clean: Tensor, starts: list[Tensor], patches: list[Patch],
                 metric: Metric, batch: int) -> Tensor:  # fmt: skip
    """``M`` of the clean input with each patch applied alone. Patches share forward passes
    (one copy of the batch each), which start at the first layer they change, from the clean
    residual there; a patch into the logits is added to the final residual stream."""
    b, out = clean.shape[0], torch.zeros(len(patches))
    with torch.no_grad():
        _, _, short, mask = inner.input_to_embed(clean)  # what TL passes to every block
    per_pass = max(1, batch // b)
    for layer in sorted({p[0] for p in patches}):
        todo = [i for i, p in enumerate(patches) if p[0] == layer]
        for chunk in (todo[k : k + per_pass] for k in range(0, len(todo), per_pass)):
            c, x = len(chunk), starts[layer].repeat(len(chunk), 1, 1)
            by_hook: dict[str, list[tuple[int, int | None, Tensor]]] = {}
            for k, (_, names, head, delta) in enumerate(patches[i] for i in chunk):
                if not names:
                    x[k * b : (k + 1) * b] += delta
                for name in names:
                    by_hook.setdefault(name, []).append((k, head, delta))
            hooks = [(name, _adder(entries, c, b)) for name, entries in by_hook.items()]
            short_c, mask_c = (None if t is None else torch.cat([t] * c) for t in (short, mask))
            with torch.no_grad(), inner.hooks(fwd_hooks=hooks):
                logits = inner(x, start_at_layer=layer, shortformer_pos_embed=short_c,
                               attention_mask=mask_c)  # fmt: skip
            out[chunk] = torch.stack([_scalar(metric(y)).float().cpu()
                                      for y in logits.view(c, b, *logits.shape[1:])])  # fmt: skip
    return out


def _chosen(names: Sequence[str] | None, valid: tuple[str, ...], what: str) -> tuple[str, ...]:
    if names is None:
        return valid
    if unknown := sorted(set(names) - set(valid)):
        raise OptionError(f"unknown {what} {unknown[:5]}; valid e.g. {', '.join(valid[:4])}")
    if not names:
        raise OptionError(f"no {what} chosen; pick at least one, or None for all")
    return tuple(n for n in valid if n in set(names))


def activation_patching_edges(
    model: Any,
    clean: Tensor,
    corrupted: Tensor,
    metric: Metric,
    *,
    edges: Sequence[str] | None = None,
    scale: float = 1.0,
    batch: int = 256,
    top_k: int | None = None,
    threshold: float | None = None,
    data_name: str = "clean vs corrupted",
) -> Circuit:
    """The exact effect of each edge: ``M(patched) - M(clean)``, where only ``v``'s input (all
    of q, k and v for a head) moves by ``a_u(corrupted) - a_u(clean)``. Node scores are exact
    node effects (as ``activation_patching_nodes``), so both compare directly with EAP's.

    Args:
        model, clean, corrupted, metric: as ``edge_attribution_patching``.
        edges: the edge ids to patch (default: every edge of ``edge_graph``).
        scale: patch ``scale`` times the difference; ``(M(+e) - M(-e)) / 2e`` for a small
            ``e`` is the derivative that EAP computes.
        batch: rows per forward pass; each patch is a copy of the clean batch, so
            ``batch // clean.shape[0]`` patches (at least one) share a pass.
        top_k, threshold, data_name: as ``edge_attribution_patching``.

    Returns:
        A ``Circuit`` with method ``activation_patching``.

    Raises:
        OptionError: as ``edge_attribution_patching``, or for an edge id not in the graph.

    Example:
        >>> activation_patching_edges(lm, clean, corrupted, metric).top_edges(1)   # doctest: +SKIP
        ['L1H0->logits']
    """
    inner, clean, corrupted = _check_inputs(model, clean, corrupted)
    graph = edge_graph(inner)
    chosen = _chosen(edges, graph.edges, "edges")
    with _edge_mode(inner):
        require_hooks(inner, _writer_hooks(inner.cfg) + _reader_hooks(inner.cfg))
        base, delta, z, starts = _patch_deltas(inner, clean, corrupted, metric, scale)
        patches = [_edge_patch(inner.cfg, graph, e, delta) for e in chosen]
        patches += [_node_patch(graph, n, delta, z) for n in graph.nodes]
        values = _run_patches(inner, clean, starts, patches, metric, batch) - base
    return _circuit(model_name(model), graph, graph.nodes, values[len(chosen) :], chosen,
                    values[: len(chosen)], "activation_patching", data_name, "metric change",
                    top_k, threshold)  # fmt: skip


def activation_patching_nodes(
    model: Any,
    clean: Tensor,
    corrupted: Tensor,
    metric: Metric,
    *,
    nodes: Sequence[str] | None = None,
    scale: float = 1.0,
    batch: int = 256,
    top_k: int | None = None,
    threshold: float | None = None,
    data_name: str = "clean vs corrupted",
) -> Circuit:
    """The exact effect of each head or MLP: ``M(patched) - M(clean)`` with the node's output
    replaced by its corrupted value and everything after it recomputed.

    Args:
        model, clean, corrupted, metric, scale, batch, data_name: as
            ``activation_patching_edges``.
        nodes: the heads/MLPs to patch (default: all).
        top_k, threshold: which nodes are members; default the top 10% (at least one).

    Returns:
        A node-level ``Circuit`` with method ``activation_patching``.

    Raises:
        OptionError: as ``activation_patching_edges``, or for a node not in the model.

    Example:
        >>> activation_patching_nodes(lm, clean, corrupted, metric).top_nodes(1)   # doctest: +SKIP
        ['L1H0']
    """
    inner, clean, corrupted = _check_inputs(model, clean, corrupted)
    graph = edge_graph(inner)
    chosen = _chosen(nodes, graph.nodes, "nodes")
    with _edge_mode(inner):
        require_hooks(inner, _writer_hooks(inner.cfg))
        base, delta, z, starts = _patch_deltas(inner, clean, corrupted, metric, scale)
        patches = [_node_patch(graph, n, delta, z) for n in chosen]
        values = _run_patches(inner, clean, starts, patches, metric, batch) - base
    return _circuit(model_name(model), graph, chosen, values, (), None, "activation_patching",
                    data_name, "metric change", top_k, threshold)  # fmt: skip
