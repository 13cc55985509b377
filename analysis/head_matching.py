"""Align the attention heads of two models by role (Hungarian matching on a similarity).

Both models read the same task inputs (each through its own ``to_tokens``, BOS at position
0 and one token per element, so positions line up). Two similarities between a head ``a`` of
model A and a head ``b`` of model B:

* ``attention``: the mean, over inputs and query positions, of ``1 - JS distance`` between
  the two heads' attention rows (base-2 Jensen-Shannon, so in ``[0, 1]``; 1 = identical
  rows). JS rather than cosine: it is a bounded metric on distributions, defined where a row
  has zeros (compiled models attend with exact zeros), and it tells a uniform row from a
  one-hot one (cosine of a uniform row with a one-hot row over ``k`` keys is ``1/sqrt(k)``,
  far from 0, and depends on the length). A causal model's BOS query (one key) is skipped.
* ``effect``: each head is ablated and its effect on the model's own output recorded per
  (input, output position 1..len): the drop in log-prob of the model's clean argmax class
  (``logprob``, signed: negative where the head hurts) or ``KL(clean || ablated)`` (``kl``).
  Heads are compared by the Pearson or Spearman correlation of those vectors; a head whose
  effect is the same everywhere (or nil) correlates 0 with everything. This aligns heads by
  what they do to the output, whatever their attention looks like. Mean-ablation (the
  head's per-position mean ``hook_z`` over the inputs) is the default: zero-ablating either
  needed head of compiled ``rasp:sort`` flattens every output to uniform, the same drop
  (0.55 nats) at every position, so its effect vector holds no information.
* ``both``: the mean of the two matrices.

``scipy.optimize.linear_sum_assignment`` maximises the total similarity; with unequal head
counts the smaller side is matched fully. Confidence per matched pair:

1. the similarity;
2. the margin over the best alternative in the pair's row and column
   (``similarity - max(others)``; a 1 x 1 matching has margin = its similarity);
3. a permutation null: the pair's similarity recomputed ``n_null`` times with model B's
   inputs shuffled among inputs of the same length, reported as an empirical one-sided
   p-value ``(1 + #{null >= s}) / (1 + n_null)`` (the rule's test) and, for scale, a
   z-score ``(s - mean) / max(std, 1e-6)``.

A pair is *confident* when its margin exceeds ``min_margin`` (0.05: it beats every rival in
its row and column by that much), its p-value is at most ``alpha`` (0.05; with the default
50 shuffles the smallest p is 1/51) and its similarity is at least ``min_similarity``. The
shuffle null asks whether two heads agree *input by input*: a head doing the same on every
input (uniform attention, an unused compiled head) cannot pass it, however similar it looks.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
from jaxtyping import Float
from scipy.optimize import linear_sum_assignment
from scipy.stats import rankdata
from torch import Tensor

from analysis.errors import OptionError
from analysis.hooks import attn_pattern, attn_z, head_label
from analysis.protocol import hooked_module, model_device, model_name

SIMILARITIES = ("attention", "effect", "both")
Similarity = Literal["attention", "effect", "both"]


@dataclass(frozen=True)
class HeadMatchingOptions:
    """How heads are compared and when a match counts as confident.

    Attributes:
        ablation: ``zero`` or ``mean`` (per-position mean of ``hook_z`` over the inputs).
        effect_metric: ``logprob`` (drop in log-prob of the clean argmax) or ``kl``.
        correlation: ``pearson`` or ``spearman`` between effect vectors.
        n_null: input shuffles in the permutation null (0: no null, p = NaN, never confident).
        alpha: largest null p-value of a confident pair.
        min_margin: a confident pair's margin must exceed this.
        min_similarity: a confident pair's similarity must be at least this.
        heads_per_pass: ablated heads stacked in one forward pass.
        seed: seed of the shuffles.
    """

    ablation: Literal["zero", "mean"] = "mean"
    effect_metric: Literal["logprob", "kl"] = "logprob"
    correlation: Literal["pearson", "spearman"] = "pearson"
    n_null: int = 50
    alpha: float = 0.05
    min_margin: float = 0.05
    min_similarity: float = 0.0
    heads_per_pass: int = 8
    seed: int = 0

    def check(self) -> None:
        """Raise ``OptionError`` for a value out of range."""
        choices = {"ablation": ("zero", "mean"), "effect_metric": ("logprob", "kl"),
                   "correlation": ("pearson", "spearman")}  # fmt: skip
        for name, valid in choices.items():
            if getattr(self, name) not in valid:
                raise OptionError(
                    f"{name} {getattr(self, name)!r} is not valid; valid: {', '.join(valid)}"
                )
        if self.n_null < 0:
            raise OptionError(f"n_null must be >= 0 (0: no null), got {self.n_null}")
        if self.heads_per_pass < 1:
            raise OptionError(f"heads_per_pass must be >= 1, got {self.heads_per_pass}")
        if not 0 < self.alpha <= 1:
            raise OptionError(f"alpha must be in (0, 1], got {self.alpha}")


@dataclass(frozen=True)
class MatchedPair:
    """One matched pair of heads and its confidence (see the module docstring)."""

    head_a: str
    head_b: str
    similarity: float
    margin: float
    null_mean: float
    null_z: float
    null_p: float
    confident: bool


@dataclass(frozen=True)
class HeadMatching:
    """Heads of model B aligned to heads of model A.

    Attributes:
        model_a, model_b: the models' names.
        heads_a, heads_b: head ids (``L1H0``) in forward order; rows / columns below.
        similarity: ``[a, b]`` the similarity the assignment maximised.
        similarities: ``{"attention" | "effect": [a, b]}`` each one computed.
        kind: ``attention``, ``effect`` or ``both``.
        pairs: the matched pairs, in the order of ``heads_a``.
        n_inputs: how many inputs were compared.
        options: the options used.

    Example:
        >>> m = match_heads(lm_a, lm_b, [[1, 2], [2, 1]], similarity="attention")  # doctest: +SKIP
        >>> m.alignment()   # doctest: +SKIP
        {'L0H1': 'L0H0', 'L0H0': 'L0H1'}
    """

    model_a: str
    model_b: str
    heads_a: tuple[str, ...]
    heads_b: tuple[str, ...]
    similarity: Float[Tensor, "a b"]
    similarities: dict[str, Float[Tensor, "a b"]]
    kind: str
    pairs: tuple[MatchedPair, ...]
    n_inputs: int
    options: HeadMatchingOptions = field(default_factory=HeadMatchingOptions)

    def alignment(self, *, include_all: bool = False) -> dict[str, str]:
        """``{head of B: head of A}`` for the confident pairs (every pair with ``include_all``)."""
        return {p.head_b: p.head_a for p in self.pairs if include_all or p.confident}

    def pair(self, head: str) -> MatchedPair | None:
        """The pair holding ``head`` (an id of either model; A first), or ``None``."""
        for p in self.pairs:
            if head in (p.head_a, p.head_b):
                return p
        return None

    def pair_frame(self) -> pd.DataFrame:
        """One row per matched pair."""
        return pd.DataFrame([asdict(p) for p in self.pairs], columns=list(MatchedPair.__dataclass_fields__))  # fmt: skip

    def to_frame(self) -> pd.DataFrame:
        """One row per (head of A, head of B): every similarity, matched, confident."""
        matched = {(p.head_a, p.head_b): p for p in self.pairs}
        rows = []
        for i, a in enumerate(self.heads_a):
            for j, b in enumerate(self.heads_b):
                p = matched.get((a, b))
                row = {"head_a": a, "head_b": b, "similarity": float(self.similarity[i, j])}
                row |= {k: float(v[i, j]) for k, v in self.similarities.items()}
                rows.append(row | {"matched": p is not None, "confident": bool(p and p.confident)})
        return pd.DataFrame(rows)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form (non-finite numbers become ``None``)."""
        return {
            "model_a": self.model_a,
            "model_b": self.model_b,
            "kind": self.kind,
            "n_inputs": self.n_inputs,
            "heads_a": list(self.heads_a),
            "heads_b": list(self.heads_b),
            "similarity": self.similarity.tolist(),
            "similarities": {k: v.tolist() for k, v in self.similarities.items()},
            "pairs": [{k: _finite(v) for k, v in asdict(p).items()} for p in self.pairs],
            "alignment": self.alignment(),
            "options": asdict(self.options),
        }


def _finite(v: Any) -> Any:
    return None if isinstance(v, float) and not np.isfinite(v) else v


def match_heads(
    model_a: Any,
    model_b: Any,
    inputs: Sequence[Sequence[Hashable]],
    *,
    similarity: Similarity = "effect",
    options: HeadMatchingOptions | None = None,
) -> HeadMatching:
    """Match the heads of ``model_b`` to those of ``model_a`` by what they do on ``inputs``.

    Args:
        model_a, model_b: hooked models with ``to_tokens`` (``LoadedModel``s).
        inputs: task sequences both models accept (no BOS), e.g. ``[[3, 1, 2], [2, 2]]``.
        similarity: ``effect`` (default), ``attention`` or ``both`` (module docstring). Effect
            is the default because it aligns heads across architectures: compiled
            ``rasp:sort``'s sort head L2H0 has attention similarity <= 0.21 to every head of
            the trained ``task:sort`` (a one-hot gather against diffuse rows) but an effect
            correlation of 0.72 with its L0H0, the head the trained model needs most.
        options: ablation, correlation, null size and the confidence rule.

    Returns:
        A ``HeadMatching``: the similarity matrices, the pairs with confidence, ``alignment()``.

    Raises:
        OptionError: an unknown similarity or option, no inputs, an empty input, or an input
            a model does not encode as BOS plus one token per element.

    Example:
        >>> m = match_heads(load_model("rasp:sort"), load_model("task:sort"), seqs)  # doctest: +SKIP
        >>> m.alignment()                                                       # doctest: +SKIP
        {'L0H0': 'L2H0'}
    """
    opts = options or HeadMatchingOptions()
    opts.check()
    if similarity not in SIMILARITIES:
        raise OptionError(f"unknown similarity {similarity!r}; valid: {', '.join(SIMILARITIES)}")
    if not inputs:
        raise OptionError("no inputs: give at least one sequence both models accept")
    groups = _length_groups(inputs)
    toks_a, toks_b = _tokens(model_a, inputs, groups), _tokens(model_b, inputs, groups)
    causal = _causal(model_a) or _causal(model_b)
    rng = np.random.default_rng(opts.seed)
    # one shuffle of B's inputs = one permutation inside every length group
    perms = [[torch.as_tensor(rng.permutation(len(g))) for g in groups] for _ in range(opts.n_null)]
    sims: dict[str, Tensor] = {}
    feats: dict[str, tuple[Any, Any]] = {}
    if similarity in ("attention", "both"):
        pa, pb = _patterns(model_a, toks_a), _patterns(model_b, toks_b)
        feats["attention"] = (pa, pb)
        sims["attention"] = _attention_sim(pa, pb, causal)
    if similarity in ("effect", "both"):
        ea, eb = _effects(model_a, toks_a, opts), _effects(model_b, toks_b, opts)
        feats["effect"] = (_standardise(ea, opts.correlation), _standardise(eb, opts.correlation))
        sims["effect"] = feats["effect"][0] @ feats["effect"][1].T
    matrix = sims[similarity] if similarity != "both" else (sims["attention"] + sims["effect"]) / 2
    rows, cols = (torch.as_tensor(x) for x in linear_sum_assignment(matrix.numpy(), maximize=True))
    null = torch.zeros(opts.n_null, len(rows))
    for k, perm in enumerate(perms):
        null[k] = _pair_sims(feats, rows, cols, perm, toks_b, causal)
    heads_a, heads_b = _heads(model_a), _heads(model_b)
    pairs = tuple(_pair(matrix, int(i), int(j), null[:, k], heads_a, heads_b, opts)
                  for k, (i, j) in enumerate(zip(rows.tolist(), cols.tolist())))  # fmt: skip
    return HeadMatching(model_name(model_a), model_name(model_b), heads_a, heads_b, matrix, sims,
                        similarity, pairs, len(inputs), opts)  # fmt: skip


def _heads(model: Any) -> tuple[str, ...]:
    cfg = model.cfg
    return tuple(head_label(i, h) for i in range(cfg.n_layers) for h in range(cfg.n_heads))


def _causal(model: Any) -> bool:
    return getattr(model.cfg, "attention_dir", "causal") == "causal"


def _length_groups(inputs: Sequence[Sequence[Hashable]]) -> list[list[int]]:
    """Input indices by length, shortest first (a batch is one length: no padding anywhere)."""
    groups: dict[int, list[int]] = {}
    for i, seq in enumerate(inputs):
        if len(seq) == 0:
            raise OptionError(f"input {i} is empty; give sequences of at least one element")
        groups.setdefault(len(seq), []).append(i)
    return [groups[n] for n in sorted(groups)]


def _tokens(
    model: Any, inputs: Sequence[Sequence[Hashable]], groups: list[list[int]]
) -> list[Tensor]:
    """``[n_g, 1 + len]`` tokens per length group; checks BOS + one token per element."""
    out = []
    for idx in groups:
        rows = []
        for i in idx:
            t = model.to_tokens(list(inputs[i]))
            if tuple(t.shape) != (1, 1 + len(inputs[i])):
                raise OptionError(
                    f"{model_name(model)} encodes input {i} ({list(inputs[i])[:8]}) as shape "
                    f"{tuple(t.shape)}; matching needs [1, {1 + len(inputs[i])}]: BOS + one token each"
                )  # fmt: skip
            rows.append(t)
        out.append(torch.cat(rows).to(model_device(model)))
    return out


@torch.inference_mode()
def _patterns(model: Any, tokens: list[Tensor]) -> list[Tensor]:
    """``[n_g, layer * head, query, key]`` attention patterns per length group."""
    inner = hooked_module(model)
    names = [attn_pattern(i) for i in range(model.cfg.n_layers)]
    out = []
    for t in tokens:
        _, cache = inner.run_with_cache(t, names_filter=lambda n: n in names)
        out.append(torch.cat([cache[n] for n in names], dim=1).float().cpu())
    return out


def _row_sim(p: Tensor, q: Tensor) -> Tensor:
    """``1 - JS distance`` (base 2) between attention rows, over the last dimension."""
    m = (p + q) / 2
    kl_p = (torch.xlogy(p, p) - torch.xlogy(p, m)).sum(-1)  # xlogy: 0 log 0 = 0
    kl_q = (torch.xlogy(q, q) - torch.xlogy(q, m)).sum(-1)
    js = (kl_p + kl_q) / (2 * np.log(2))
    return 1 - js.clamp(0, 1).sqrt()


def _attention_sim(pa: list[Tensor], pb: list[Tensor], causal: bool) -> Tensor:
    """``[a, b]`` mean row similarity over inputs and query positions."""
    q0 = int(causal)  # a causal BOS query has one key: identical in every head
    total = torch.zeros(pa[0].shape[1], pb[0].shape[1])
    n_rows = 0
    for a, b in zip(pa, pb):
        a, b = a[:, :, q0:], b[:, :, q0:]
        for i in range(a.shape[1]):
            total[i] += _row_sim(a[:, i : i + 1], b).sum(dim=(0, 2))
        n_rows += a.shape[0] * a.shape[2]
    return total / n_rows


def _pair_sims(
    feats: dict, rows: Tensor, cols: Tensor, perm: list[Tensor], toks_b: list[Tensor], causal: bool
) -> Tensor:
    """``[pair]`` similarity of the matched pairs when B sees its inputs shuffled by ``perm``."""
    out = []
    if "attention" in feats:
        pa, pb = feats["attention"]
        q0, total, n_rows = int(causal), torch.zeros(len(rows)), 0
        for a, b, p in zip(pa, pb, perm):
            a, b = a[:, rows, q0:], b[p][:, cols, q0:]
            total += _row_sim(a, b).sum(dim=(0, 2))
            n_rows += a.shape[0] * a.shape[2]
        out.append(total / n_rows)
    if "effect" in feats:
        ea, eb = feats["effect"]
        out.append((ea[rows] * eb[cols][:, _shuffled_columns(toks_b, perm)]).sum(-1))
    return torch.stack(out).mean(0)


def _shuffled_columns(tokens: list[Tensor], perm: list[Tensor]) -> Tensor:
    """Effect-vector columns (inputs by length group, then positions) after shuffling inputs."""
    idx, offset = [], 0
    for t, p in zip(tokens, perm):
        n, length = t.shape[0], t.shape[1] - 1
        idx.append(offset + (p[:, None] * length + torch.arange(length)).flatten())
        offset += n * length
    return torch.cat(idx)


def _standardise(x: Tensor, correlation: str) -> Tensor:
    """Rows (ranked for Spearman) centred and scaled to unit norm, so ``x @ y.T`` is the
    correlation. A row that is constant up to float noise (a compiled head whose ablation
    does the same thing everywhere) carries no signal and becomes 0 (correlation 0)."""
    spread = x.max(-1, keepdim=True).values - x.min(-1, keepdim=True).values
    flat = spread <= 1e-5 * (x.abs().amax(-1, keepdim=True) + 1e-3)
    if correlation == "spearman":
        x = torch.as_tensor(rankdata(x.numpy(), axis=1), dtype=torch.float32)
    x = x - x.mean(-1, keepdim=True)
    norm = x.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return torch.where(flat, torch.zeros_like(x), x / norm)


@torch.inference_mode()
def _effects(model: Any, tokens: list[Tensor], opts: HeadMatchingOptions) -> Tensor:
    """``[head, (input, position)]`` effect of ablating each head, inputs by length group."""
    inner = hooked_module(model)
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    means = _mean_z(inner, tokens, n_layers) if opts.ablation == "mean" else None
    every = [(i, h) for i in range(n_layers) for h in range(n_heads)]
    dead = _dead_heads(inner, n_layers)
    heads = [ih for ih in every if ih not in dead]  # a head writing nothing has effect 0
    columns = []
    for t in tokens:
        n, pos = t.shape
        logp = torch.log_softmax(inner(t).float(), -1)[:, 1:]
        pred = logp.argmax(-1, keepdim=True)
        per_head = []
        for start in range(0, len(heads), opts.heads_per_pass):
            chunk = heads[start : start + opts.heads_per_pass]
            layers = sorted({layer for layer, _ in chunk})
            hooks = [
                (attn_z(i), _ablate(chunk, i, n, None if means is None else means[i][:pos]))
                for i in layers
            ]
            out = inner.run_with_hooks(t.repeat(len(chunk), 1), fwd_hooks=hooks).float()
            ablated = torch.log_softmax(out, -1)[:, 1:].view(len(chunk), n, pos - 1, -1)
            if opts.effect_metric == "kl":
                p = logp.exp()
                effect = torch.where(p > 0, p * (logp - ablated), 0.0).sum(-1)
            else:
                picked = ablated.gather(-1, pred.expand(len(chunk), -1, -1, -1))[..., 0]
                effect = logp.gather(-1, pred)[..., 0] - picked
            per_head.append(effect.reshape(len(chunk), -1).cpu())
        live = torch.cat(per_head) if per_head else torch.zeros(0, n * (pos - 1))
        full = torch.zeros(len(every), n * (pos - 1))
        full[[every.index(ih) for ih in heads]] = live
        columns.append(full)
    return torch.cat(columns, dim=1)


def _dead_heads(inner: Any, n_layers: int) -> set[tuple[int, int]]:
    """Heads whose ``W_O`` is exactly zero (unused slots of compiled models)."""
    dead = set()
    for layer in range(n_layers):
        w_o = getattr(getattr(inner.blocks[layer], "attn", None), "W_O", None)
        if isinstance(w_o, Tensor) and w_o.ndim == 3:
            dead |= {
                (layer, int(h)) for h in torch.nonzero(w_o.abs().sum(dim=(1, 2)) == 0).flatten()
            }
    return dead


def _ablate(chunk: list[tuple[int, int]], layer: int, n: int, mean: Tensor | None):
    """A ``hook_z`` hook: copy ``c`` of the batch has head ``chunk[c]`` ablated."""

    def hook(z: Tensor, hook: Any) -> Tensor:
        z = z.clone()
        for c, (at, h) in enumerate(chunk):
            if at == layer:
                z[c * n : (c + 1) * n, :, h] = 0.0 if mean is None else mean[:, h]
        return z

    return hook


def _mean_z(inner: Any, tokens: list[Tensor], n_layers: int) -> list[Tensor]:
    """``[layer][pos, head, d_head]``: each position's mean ``hook_z`` over the inputs reaching it."""
    names = [attn_z(i) for i in range(n_layers)]
    longest = max(t.shape[1] for t in tokens)
    sums: list[Tensor | None] = [None] * n_layers
    counts = torch.zeros(longest)
    for t in tokens:
        _, cache = inner.run_with_cache(t, names_filter=lambda n: n in names)
        for i, name in enumerate(names):
            z = cache[name].float().sum(0)
            if sums[i] is None:
                sums[i] = torch.zeros(longest, *z.shape[1:], device=z.device)
            sums[i][: t.shape[1]] += z
        counts[: t.shape[1]] += t.shape[0]
    return [s / counts.to(s.device)[:, None, None] for s in sums]


def _pair(
    matrix: Tensor,
    i: int,
    j: int,
    null: Tensor,
    heads_a: tuple,
    heads_b: tuple,
    opts: HeadMatchingOptions,
) -> MatchedPair:
    """Pair ``(i, j)`` with its margin, null z and p, and the confidence rule applied."""
    s = float(matrix[i, j])
    others = torch.cat(
        [
            torch.cat([matrix[i, :j], matrix[i, j + 1 :]]),
            torch.cat([matrix[:i, j], matrix[i + 1 :, j]]),
        ]
    )
    margin = s - float(others.max()) if others.numel() else s
    if null.numel() == 0:
        mean = z = p = float("nan")
    else:
        mean, std = float(null.mean()), float(null.std(unbiased=False)) if null.numel() > 1 else 0.0
        z = (s - mean) / max(std, 1e-6)
        p = (1 + int((null >= s - 1e-6).sum())) / (1 + null.numel())
    confident = margin > opts.min_margin and p <= opts.alpha and s >= opts.min_similarity
    return MatchedPair(heads_a[i], heads_b[j], s, margin, mean, z, p, bool(confident))
