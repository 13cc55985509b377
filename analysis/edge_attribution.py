"""Edge attribution patching (EAP, EAP-IG) over the residual-stream graph, as ``Circuit``s.

The graph is the residual-stream decomposition of a HookedTransformer. Upstream nodes write to
the residual stream: ``embed`` (all of ``blocks.0.hook_resid_pre``), each head
(``z[..., h, :] @ W_O[h]``) and each MLP (``hook_mlp_out``). Downstream nodes read it: each
head's q/k/v inputs (TL's ``use_split_qkv_input``), each MLP (``hook_mlp_in``) and ``logits``
(the last ``hook_resid_post``). ``u->v`` is an edge when ``u`` writes before ``v`` reads: a head
of layer ``l`` feeds the MLP of layer ``l`` (unless the two run in parallel), all later layers
and the logits. An edge into a head is its q, k and v inputs together. Grouped-query models run
with ``ungroup_grouped_query_attention``, so each query head has its own k/v input copy and its
k/v edges are its share of the kv group's (a group's score is the sum over its heads).

EAP (Syed et al. 2023): ``score(u->v) = sum_{batch,pos} (a_u(corrupted) - a_u(clean)) .
dM/d(input_v)`` on the clean run: two forward passes and one backward pass for all edges. A node
scores ``(a_u' - a_u) . dM/d(a_u)``; the residual stream is a sum, so that is the sum of its
outgoing edges. EAP-IG (Hanna et al. 2024) averages the gradient over ``m`` inputs interpolated
at ``resid_pre 0`` from corrupted towards clean (``k/m``, ``k = 1..m``), stacked in one pass.
Activation patching (``analysis.activation_patching``) measures the same things exactly: ``M(patched) - M(clean)`` with only that
edge's (or node's) contribution moved to its corrupted value. The metric maps ``[batch, pos,
vocab]`` logits to one number, normally a batch mean; scores are changes of it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch
from jaxtyping import Float, Int
from torch import Tensor

from analysis.circuits import (
    EMBED,
    LOGITS,
    Circuit,
    edge_label,
    mlp_label,
    parse_node,
    select_members,
    split_edge,
)
from analysis.errors import OptionError
from analysis.hooks import attn_z, head_label, mlp_out, require_hooks, resid_post, resid_pre
from analysis.protocol import hooked_module, model_device, model_name

Metric = Callable[[Tensor], Tensor]
LETTERS = ("q", "k", "v")
Patch = tuple[int, tuple[str, ...], int | None, Tensor]  # start layer, hooks, head, delta


def _qkv_input(layer: int, letter: str) -> str:
    return f"blocks.{layer}.hook_{letter}_input"


def _mlp_in(layer: int) -> str:
    return f"blocks.{layer}.hook_mlp_in"


@dataclass(frozen=True)
class EdgeGraph:
    """The nodes and edges of a model's residual-stream graph.

    Attributes:
        upstream: writers: ``embed``, then heads and MLPs in forward order.
        downstream: readers: heads and MLPs in forward order, then ``logits``.
        edges: ``src->dst`` ids, grouped by source in forward order.
        src, dst: ``[edge]`` indices into ``upstream`` and ``downstream``.
        n_layers, n_heads: the model's shape.
    """

    upstream: tuple[str, ...]
    downstream: tuple[str, ...]
    edges: tuple[str, ...]
    src: Int[Tensor, " edge"]
    dst: Int[Tensor, " edge"]
    n_layers: int
    n_heads: int

    @property
    def nodes(self) -> tuple[str, ...]:
        """The heads and MLPs (``Circuit.nodes``)."""
        return self.upstream[1:]


def edge_graph(model: Any) -> EdgeGraph:
    """The residual-stream graph of a hooked model.

    Example:
        >>> edge_graph(load_model("task:induction")).edges   # doctest: +SKIP
        ('embed->L0H0', 'embed->L1H0', 'embed->logits', 'L0H0->L1H0', 'L0H0->logits', 'L1H0->logits')
    """
    cfg = hooked_module(model).cfg
    parallel = bool(getattr(cfg, "parallel_attn_mlp", False))
    up: list[tuple[str, float]] = [(EMBED, -1)]  # (node, stage it writes at)
    down: list[tuple[str, float]] = []  # (node, it reads the writers of lower stages)
    for layer in range(cfg.n_layers):
        up += [(head_label(layer, h), 2 * layer) for h in range(cfg.n_heads)]
        down += [(head_label(layer, h), 2 * layer) for h in range(cfg.n_heads)]
        if not cfg.attn_only:
            up.append((mlp_label(layer), 2 * layer + 1))
            down.append((mlp_label(layer), 2 * layer + (0 if parallel else 1)))
    down.append((LOGITS, math.inf))
    pairs = [(i, j) for i, (_, s) in enumerate(up) for j, (_, r) in enumerate(down) if s < r]
    return EdgeGraph(
        tuple(n for n, _ in up), tuple(n for n, _ in down),
        tuple(edge_label(up[i][0], down[j][0]) for i, j in pairs),
        torch.tensor([i for i, _ in pairs]), torch.tensor([j for _, j in pairs]),
        cfg.n_layers, cfg.n_heads,
    )  # fmt: skip


# -- metrics and inputs ----------------------------------------------------------------------
def logit_diff_metric(correct_ids: Any, wrong_ids: Any, positions: Any = -1) -> Metric:
    """Mean over the batch of ``logit[correct] - logit[wrong]`` at one position per row.

    Args:
        correct_ids, wrong_ids: ``[batch]`` output ids (or one id for every row).
        positions: ``[batch]`` positions, or one for every row (default: the last).

    Returns:
        ``metric(logits) -> scalar tensor``.

    Raises:
        OptionError: (when called) for id lists whose length is not the batch size.

    Example:
        >>> logit_diff_metric([1], [0])(torch.tensor([[[0.0, 2.0]]])).item()
        2.0
    """
    ids = [torch.as_tensor(x).long().reshape(-1) for x in (correct_ids, wrong_ids, positions)]

    def metric(logits: Tensor) -> Tensor:
        rows = torch.arange(logits.shape[0], device=logits.device)
        if bad := [x.numel() for x in ids if x.numel() not in (1, len(rows))]:
            raise OptionError(f"{bad[0]} ids or positions for a batch of {len(rows)} rows")
        correct, wrong, pos = (x.to(logits.device).expand(len(rows)) for x in ids)
        picked = logits[rows, pos]
        return (picked[rows, correct] - picked[rows, wrong]).mean()

    return metric


def answer_metric(model: Any, clean: Tensor, corrupted: Tensor) -> Metric:
    """Logit difference at the last position between the model's answer on each clean row and
    its answer on the corrupted row (the runner-up where both agree): what patching moves.

    Example:
        >>> m = answer_metric(lm, clean, corrupted)   # doctest: +SKIP
    """
    inner = hooked_module(model)
    with torch.no_grad():
        right, wrong = inner(clean)[:, -1], inner(corrupted)[:, -1]
    right_id = right.argmax(-1)
    wrong[torch.arange(len(right_id)), right_id] = -1e9
    return logit_diff_metric(right_id, wrong.argmax(-1), -1)


def target_logprob_metric(targets: Tensor, mask: Tensor | None = None) -> Metric:
    """Mean log-probability of the targets over supervised positions (``GatingData`` layout).

    Args:
        targets: ``[n, pos]`` output ids, ``-100`` where a position is not supervised.
        mask: ``[n, pos]`` a further selection of positions (default: all supervised ones).

    Raises:
        OptionError: when no position is supervised; (when called) for logits of another shape.

    Example:
        >>> m = target_logprob_metric(torch.tensor([[-100, 1]]))
        >>> round(m(torch.zeros(1, 2, 2)).item(), 4)
        -0.6931
    """
    targets = torch.as_tensor(targets).long()
    keep = targets != -100
    keep = keep if mask is None else keep & torch.as_tensor(mask).bool()
    if not bool(keep.any()):
        raise OptionError("no supervised position: every target is -100 or masked out")

    def metric(logits: Tensor) -> Tensor:
        if tuple(logits.shape[:2]) != tuple(targets.shape):
            raise OptionError(f"logits {tuple(logits.shape)} for targets {tuple(targets.shape)}")
        logp = logits.log_softmax(-1)
        picked = logp.gather(-1, targets.clamp(min=0).to(logits.device)[..., None])[..., 0]
        return picked[keep.to(logits.device)].mean()

    return metric


def corrupt_tokens(
    tokens: Tensor,
    vocab_size: int,
    *,
    lengths: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> Int[Tensor, "batch pos"]:
    """``tokens`` with every real token (positions ``1..length-1``, after BOS) redrawn
    uniformly from ids ``1..vocab_size-1``; BOS and padding stay.

    Raises:
        OptionError: for ``vocab_size < 2`` or tokens that are not ``[batch, pos]``.

    Example:
        >>> corrupt_tokens(torch.tensor([[0, 3, 1]]), 4)[0, 0].item()
        0
    """
    tokens = torch.as_tensor(tokens)
    if vocab_size < 2 or tokens.ndim != 2:
        raise OptionError(f"need [batch, pos] tokens and vocab_size >= 2, got "
                          f"{tuple(tokens.shape)} and {vocab_size}")  # fmt: skip
    n, pos = tokens.shape
    lengths = torch.full((n,), pos) if lengths is None else torch.as_tensor(lengths)
    where = torch.arange(pos)[None, :]
    real = ((where >= 1) & (where < lengths[:, None])).to(tokens.device)
    fresh = torch.randint(1, vocab_size, tokens.shape, generator=generator).to(tokens.device)
    return torch.where(real, fresh, tokens)


# -- shared plumbing -------------------------------------------------------------------------
def _check_inputs(model: Any, clean: Any, corrupted: Any) -> tuple[Any, Tensor, Tensor]:
    inner = hooked_module(model)
    needs = ("set_use_split_qkv_input", "set_ungroup_grouped_query_attention", "input_to_embed")
    if not all(hasattr(inner, n) for n in needs):
        raise OptionError(f"edge attribution needs a HookedTransformer, got "
                          f"{type(inner).__name__}; load pretrained models with backend='hooked'")  # fmt: skip
    clean, corrupted = torch.as_tensor(clean), torch.as_tensor(corrupted)
    if clean.ndim != 2 or clean.shape != corrupted.shape or clean.numel() == 0:
        raise OptionError(
            f"clean and corrupted must be [batch, pos] token tensors of one shape, got "
            f"{tuple(clean.shape)} and {tuple(corrupted.shape)}"
        )
    if clean.dtype.is_floating_point or corrupted.dtype.is_floating_point:
        raise OptionError(f"clean and corrupted must be token ids, got {clean.dtype}")
    device = model_device(inner)
    return inner, clean.long().to(device), corrupted.long().to(device)


def _scalar(value: Any) -> Tensor:
    if not isinstance(value, Tensor) or value.numel() != 1:
        shape = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
        raise OptionError(f"the metric must return a scalar tensor, got {shape}")
    return value.reshape(())


@contextmanager
def _edge_mode(inner: Any) -> Iterator[None]:
    """Split q/k/v inputs, hook MLP inputs, ungroup GQA's k/v heads; restore them afterwards."""
    cfg = inner.cfg
    old = (cfg.use_split_qkv_input, cfg.use_hook_mlp_in, cfg.ungroup_grouped_query_attention)
    try:
        inner.set_use_split_qkv_input(True)
        if not cfg.attn_only:
            inner.set_use_hook_mlp_in(True)
        if cfg.n_key_value_heads is not None:
            inner.set_ungroup_grouped_query_attention(True)  # same function, per-head k/v
        yield
    finally:
        inner.set_use_split_qkv_input(old[0])
        if not cfg.attn_only:
            inner.set_use_hook_mlp_in(old[1])
        inner.set_ungroup_grouped_query_attention(old[2])


def _writer_hooks(cfg: Any) -> list[str]:
    names = [resid_pre(0)] + [attn_z(i) for i in range(cfg.n_layers)]
    names += [] if cfg.attn_only else [mlp_out(i) for i in range(cfg.n_layers)]
    return [*names, resid_post(cfg.n_layers - 1)]


def _reader_hooks(cfg: Any) -> list[str]:
    names = [_qkv_input(i, c) for i in range(cfg.n_layers) for c in LETTERS]
    return names + ([] if cfg.attn_only else [_mlp_in(i) for i in range(cfg.n_layers)])


@torch.no_grad()
def _writes(inner: Any, acts: dict[str, Tensor]) -> Float[Tensor, "up batch pos d_model"]:
    """Each upstream node's contribution to the residual stream, in ``upstream`` order."""
    out = [acts[resid_pre(0)]]
    for layer in range(inner.cfg.n_layers):
        w_o = inner.blocks[layer].attn.W_O  # [head, d_head, d_model]
        out += list(torch.einsum("bphz,hzd->hbpd", acts[attn_z(layer)], w_o))
        out += [] if inner.cfg.attn_only else [acts[mlp_out(layer)]]
    return torch.stack(out)


def _check_additive(delta: Tensor, final_delta: Tensor) -> None:
    """The residual stream must be the sum of the node outputs (no post-norm or sandwich LN)."""
    err = float((delta.sum(0) - final_delta).abs().max())
    if err > 1e-3 * (float(final_delta.abs().max()) + 1.0):
        raise OptionError(
            f"the final residual stream differs from the sum of the embedding, head and MLP "
            f"outputs by {err:.3g}: the components are not additive (post-norm or sandwich "
            "LayerNorm), so this model has no residual-stream graph"
        )


def _circuit(name: str, graph: EdgeGraph, nodes: tuple[str, ...], node_scores: Tensor,
             edges: tuple[str, ...], edge_scores: Tensor | None, method: str, data_name: str,
             score_name: str, top_k: int | None, threshold: float | None) -> Circuit:  # fmt: skip
    """Members: the top 10% of edges (or, without edges, nodes) by magnitude, at least one,
    unless ``top_k``/``threshold`` say otherwise; member nodes are those member edges touch."""
    scored = edges or nodes
    if top_k is None and threshold is None:
        top_k = max(1, math.ceil(0.1 * len(scored)))
    chosen = select_members(scored, node_scores if not edges else edge_scores, top_k=top_k,
                            threshold=threshold)  # fmt: skip
    members = {n for e in chosen for n in split_edge(e)} & set(nodes) if edges else chosen
    return Circuit(name, graph.n_layers, graph.n_heads, nodes, node_scores.float(),
                   frozenset(members), method, data_name, score_name, edges,
                   None if edge_scores is None else edge_scores.float(),
                   chosen if edges else frozenset())  # fmt: skip


# -- edge attribution patching ---------------------------------------------------------------
@dataclass(frozen=True)
class EdgeAttribution:
    """EAP (or EAP-IG) scores of every edge and node of one model on one clean/corrupted pair.

    Attributes:
        model_name: the model scored.
        graph: its residual-stream graph (node and edge ids).
        edge_scores: ``[edge]`` first-order change of the metric when the edge is patched.
        qkv_scores: ``[letter edge]`` the q, k and v parts of edges into heads (they sum to the
            edge score); NaN for edges into MLPs and logits.
        node_scores: ``[node]`` the same for each head and MLP (``graph.nodes``).
        metric_clean, metric_corrupted: the metric on the two inputs.
        ig_steps: gradient points averaged (1: plain EAP).
    """

    model_name: str
    graph: EdgeGraph
    edge_scores: Float[Tensor, " edge"]
    qkv_scores: Float[Tensor, "letter edge"]
    node_scores: Float[Tensor, " node"]
    metric_clean: float
    metric_corrupted: float
    ig_steps: int

    def to_frame(self) -> pd.DataFrame:
        """One row per edge: edge, src, dst, score, q, k, v."""
        q, k, v = self.qkv_scores.tolist()
        src, dst = zip(*map(split_edge, self.graph.edges), strict=True)
        return pd.DataFrame({"edge": self.graph.edges, "src": src, "dst": dst,
                             "score": self.edge_scores.tolist(), "q": q, "k": k, "v": v})  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form (NaN letter scores become ``None``)."""
        qkv = [[None if math.isnan(x) else x for x in r] for r in self.qkv_scores.tolist()]
        return {"model_name": self.model_name, "edges": list(self.graph.edges),
                "edge_scores": self.edge_scores.tolist(), "qkv_scores": dict(zip(LETTERS, qkv)),
                "nodes": list(self.graph.nodes), "node_scores": self.node_scores.tolist(),
                "metric_clean": self.metric_clean, "metric_corrupted": self.metric_corrupted,
                "ig_steps": self.ig_steps}  # fmt: skip

    def to_circuit(self, *, top_k: int | None = None, threshold: float | None = None,
                   data_name: str = "clean vs corrupted") -> Circuit:  # fmt: skip
        """The ``Circuit`` (method ``eap`` or ``eap-ig``), members as in
        ``edge_attribution_patching``."""
        return _circuit(self.model_name, self.graph, self.graph.nodes, self.node_scores,
                        self.graph.edges, self.edge_scores, "eap" if self.ig_steps == 1 else
                        "eap-ig", data_name, "attribution", top_k, threshold)  # fmt: skip


def edge_attribution_scores(
    model: Any, clean: Tensor, corrupted: Tensor, metric: Metric, *, ig_steps: int = 1
) -> EdgeAttribution:
    """EAP scores of every edge (with its q/k/v parts) and node.

    Args, Raises: as ``edge_attribution_patching``.

    Returns:
        An ``EdgeAttribution``.

    Example:
        >>> edge_attribution_scores(lm, clean, corrupted, metric).to_frame()   # doctest: +SKIP
    """
    inner, clean, corrupted = _check_inputs(model, clean, corrupted)
    if ig_steps < 1:
        raise OptionError(f"ig_steps must be at least 1, got {ig_steps}")
    cfg, graph, m, b = inner.cfg, edge_graph(inner), ig_steps, clean.shape[0]
    writers, last = _writer_hooks(cfg), resid_post(cfg.n_layers - 1)
    down = {n: j for j, n in enumerate(graph.downstream)}
    n_src = torch.bincount(graph.dst, minlength=len(down)).tolist()  # sources: a prefix
    scores = torch.zeros(3, len(graph.upstream), len(down))  # letter 0 only off heads
    node_scores = torch.zeros(len(graph.nodes))
    corr: dict[str, Tensor] = {}
    acts: dict[str, Tensor] = {}
    state: dict[str, Tensor] = {}
    alpha = (torch.arange(1, m + 1, device=clean.device) / m).view(m, 1, 1, 1)

    def store(x: Tensor, hook: Any) -> None:
        corr[hook.name] = x.detach()

    def interpolate(x: Tensor, hook: Any) -> Tensor:
        x = x.view(m, b, *x.shape[1:])
        acts[hook.name] = x[-1].detach()  # alpha = 1 is the clean run itself, exactly
        state["leaf"] = (x - (1 - alpha) * (x - corr[hook.name])).flatten(0, 1).detach()
        return state["leaf"].requires_grad_(True)

    def reads(letter: int, cols: list[int]) -> Callable[[Tensor], None]:
        def fn(g: Tensor) -> None:  # g: [batch, pos, head, d_model], summed over the m copies
            for h, j in enumerate(cols):
                part = torch.einsum("ubpd,bpd->u", state["delta"][: n_src[j]], g[:, :, h])
                scores[letter, : n_src[j], j] = part.cpu()

        return fn

    def writes(name: str, rows: list[int]) -> Callable[[Tensor], None]:
        def fn(g: Tensor) -> None:
            delta = corr[name] - acts[name]
            delta = delta if delta.ndim == 4 else delta[:, :, None]
            node_scores[rows] = torch.einsum("bphz,bphz->h", delta, g).cpu()

        return fn

    def grad_hook(name: str, fn: Callable[[Tensor], None]) -> tuple[str, Callable]:
        def hook(x: Tensor, hook: Any) -> None:
            if name in writers:
                acts[name] = x.detach().view(m, b, *x.shape[1:])[-1]
            x.register_hook(lambda g: fn(g.view(m, b, *g.shape[1:]).sum(0).reshape(
                b, g.shape[1], -1, g.shape[-1])))  # fmt: skip

        return name, hook

    hooks = [(resid_pre(0), interpolate), grad_hook(last, reads(0, [down[LOGITS]]))]
    for layer in range(cfg.n_layers):
        heads = [head_label(layer, h) for h in range(cfg.n_heads)]
        hooks += [grad_hook(_qkv_input(layer, c), reads(i, [down[n] for n in heads]))
                  for i, c in enumerate(LETTERS)]  # fmt: skip
        hooks.append(grad_hook(attn_z(layer), writes(attn_z(layer),
                                                     [graph.nodes.index(n) for n in heads])))  # fmt: skip
        if not cfg.attn_only:
            mlp = mlp_label(layer)
            hooks.append(grad_hook(_mlp_in(layer), reads(0, [down[mlp]])))
            hooks.append(
                grad_hook(mlp_out(layer), writes(mlp_out(layer), [graph.nodes.index(mlp)]))
            )
    with _edge_mode(inner):
        require_hooks(inner, writers + _reader_hooks(cfg))
        with torch.no_grad(), inner.hooks(fwd_hooks=[(n, store) for n in writers]):
            metric_corrupted = float(_scalar(metric(inner(corrupted))))
        with torch.enable_grad(), inner.hooks(fwd_hooks=hooks):
            logits = inner(clean.repeat(m, 1))
            values = torch.stack([_scalar(metric(x)) for x in logits.view(m, b, *logits.shape[1:])])
            with torch.no_grad():
                state["delta"] = _writes(inner, corr) - _writes(inner, acts)
                _check_additive(state["delta"], corr[last] - acts[last])
            if not values.requires_grad:
                raise OptionError("the metric's value does not depend on the logits")
            torch.autograd.grad(values.mean(), state["leaf"])
    into_head = torch.tensor([parse_node(graph.downstream[j])[0] == "head" for j in graph.dst])
    qkv = scores[:, graph.src, graph.dst].masked_fill(~into_head, float("nan"))
    return EdgeAttribution(model_name(model), graph, scores.sum(0)[graph.src, graph.dst], qkv,
                           node_scores, float(values[-1].detach()), metric_corrupted, m)  # fmt: skip


def edge_attribution_patching(
    model: Any,
    clean: Tensor,
    corrupted: Tensor,
    metric: Metric,
    *,
    ig_steps: int = 1,
    top_k: int | None = None,
    threshold: float | None = None,
    data_name: str = "clean vs corrupted",
) -> Circuit:
    """Score every edge of the model's residual-stream graph by edge attribution patching.

    Two forward passes (corrupted without gradient, clean with) and one backward pass; see the
    module docstring for the formula. An edge into a head sums its q, k and v parts
    (``edge_attribution_scores`` keeps them apart); node scores equal the sum of the node's
    outgoing edges. ``ig_steps = m > 1`` gives EAP-IG (``m`` stacked copies of the batch).

    Args:
        model: a HookedTransformer or a ``LoadedModel`` around one.
        clean, corrupted: ``[batch, pos]`` token ids of one shape (rows of one real length).
        metric: ``logits [batch, pos, vocab] -> scalar tensor`` (``logit_diff_metric``,
            ``target_logprob_metric``). A saturated metric (log-prob near 0) has near-zero
            gradients: prefer a logit difference.
        ig_steps: gradient points (1: plain EAP).
        top_k, threshold: which edges are members (``select_members``); default the top 10%
            by magnitude (at least one). Member nodes are the heads/MLPs member edges touch.
        data_name: what the pair is, for display.

    Returns:
        A ``Circuit`` (method ``eap`` or ``eap-ig``) with node and edge scores.

    Raises:
        OptionError: inputs not ``[batch, pos]`` ids of one shape, a metric that does not
            return one number, ``ig_steps < 1``, a model that is no HookedTransformer or whose
            residual stream is not the sum of its components.

    Example:
        >>> edge_attribution_patching(lm, clean, corrupted, metric).top_edges(1)   # doctest: +SKIP
        ['L1H0->logits']
    """
    scores = edge_attribution_scores(model, clean, corrupted, metric, ig_steps=ig_steps)
    return scores.to_circuit(top_k=top_k, threshold=threshold, data_name=data_name)
