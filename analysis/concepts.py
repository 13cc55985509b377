"""Concept tracing under controlled uncertainty ("From Noise to Narrative", Suresh et al. 2025).

Real text is degraded step by step, from intact to pure noise, in one of two ways:

* ``shuffle``: cut each input into n-grams and shuffle their order; smaller ``n`` keeps less
  structure (``n = 1`` is a bag of tokens), then pure noise.
* ``replace``: replace a growing fraction of tokens by uniformly random ones (1.0 is pure noise;
  the replaced positions are nested, so level ``0.5`` contains level ``0.25``'s replacements).

At each level and layer the input's *concepts* are the SAE latents that fire (above
``threshold``) at any non-BOS position; we report how many there are, their overlap with the
intact input's concepts (Jaccard, "input sensitivity"), and which latents fire on most
pure-noise inputs regardless of content ("noise-robust concepts").

Example:
    >>> saes = load_layer_saes(lm)                                                # doctest: +SKIP
    >>> trace = run_concept_trace(lm, saes, token_windows(lm, texts, 64)[:32])    # doctest: +SKIP
    >>> trace.counts[:, -1] > trace.counts[:, 0]                                  # doctest: +SKIP
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import pandas as pd
import torch
from jaxtyping import Float, Int
from torch import Tensor

from analysis.activations import capture
from analysis.errors import OptionError
from analysis.protocol import model_name
from analysis.sae import SparseAutoencoder

Method = Literal["shuffle", "replace"]


@dataclass(frozen=True)
class UncertaintyLevel:
    """One degradation level: ``kind`` is ``intact``, ``shuffle`` (``value`` = n-gram size),
    ``replace`` (``value`` = fraction replaced) or ``noise``."""

    kind: Literal["intact", "shuffle", "replace", "noise"]
    value: float = 0.0

    @property
    def label(self) -> str:
        """``intact``, ``4-gram shuffle``, ``50% random``, ``noise``."""
        if self.kind == "shuffle":
            return f"{int(self.value)}-gram shuffle"
        if self.kind == "replace":
            return f"{round(100 * self.value)}% random"
        return self.kind


def default_levels(method: Method = "shuffle") -> tuple[UncertaintyLevel, ...]:
    """Intact, then decreasing n-gram size / increasing replaced fraction, then pure noise."""
    if method == "shuffle":
        middle = [UncertaintyLevel("shuffle", n) for n in (16, 8, 4, 2, 1)]
    elif method == "replace":
        middle = [UncertaintyLevel("replace", f) for f in (0.25, 0.5, 0.75)]
    else:
        raise OptionError(f"unknown method {method!r}; valid: shuffle, replace")
    return (UncertaintyLevel("intact"), *middle, UncertaintyLevel("noise"))


def ngram_shuffle(ids: Int[Tensor, " pos"], n: int, gen: torch.Generator) -> Int[Tensor, " pos"]:
    """``ids`` cut into consecutive n-grams (the last may be shorter), in a random order."""
    if n < 1:
        raise OptionError(f"n-gram size must be >= 1, got {n}")
    grams = list(ids.split(n))
    order = torch.randperm(len(grams), generator=gen).tolist()
    return torch.cat([grams[i] for i in order])


def random_replace(
    ids: Int[Tensor, " pos"], fraction: float, noise_ids: Tensor, gen: torch.Generator
) -> Int[Tensor, " pos"]:
    """``ids`` with ``round(fraction * pos)`` positions (a random prefix of one random
    permutation, so larger fractions nest smaller ones) set to random ``noise_ids``."""
    if not 0 <= fraction <= 1:
        raise OptionError(f"fraction must be in [0, 1], got {fraction}")
    order = torch.randperm(ids.shape[0], generator=gen)
    draws = noise_ids[torch.randint(0, noise_ids.shape[0], (ids.shape[0],), generator=gen)]
    out = ids.clone()
    chosen = order[: round(fraction * ids.shape[0])]
    out[chosen] = draws[chosen]
    return out


def degrade(
    tokens: Int[Tensor, "seq pos"], level: UncertaintyLevel, noise_ids: Tensor, *, seed: int = 0
) -> Int[Tensor, "seq pos"]:
    """Every row of ``tokens`` at ``level``; column 0 (BOS) is kept. Row ``i`` uses seed
    ``seed + i`` whatever the level, so the replaced positions nest across levels."""
    rows = []
    for i, row in enumerate(tokens):
        gen = torch.Generator().manual_seed(seed + i)
        body = row[1:]
        if level.kind == "shuffle":
            body = ngram_shuffle(body, int(level.value), gen)
        elif level.kind == "replace":
            body = random_replace(body, float(level.value), noise_ids, gen)
        elif level.kind == "noise":
            body = random_replace(body, 1.0, noise_ids, gen)
        rows.append(torch.cat([row[:1], body]))
    return torch.stack(rows)


@dataclass(frozen=True)
class ConceptTraceOptions:
    """How to trace concepts.

    Attributes:
        method: ``shuffle`` or ``replace`` (ignored when ``levels`` is given).
        levels: the levels, intact first (default: ``default_levels(method)``).
        threshold: a latent is active on an input when its activation exceeds this at some
            non-BOS position (in the SAE's scaled space, where inputs have unit mean square).
        robust_rate: a latent is noise-robust at a layer when it fires on at least this share
            of pure-noise inputs.
        max_robust: the most noise-robust latents listed per layer.
        batch_size: inputs per forward pass.
        seed: seed of the shuffles and random tokens.
    """

    method: Method = "shuffle"
    levels: tuple[UncertaintyLevel, ...] | None = None
    threshold: float = 0.0
    robust_rate: float = 0.5
    max_robust: int = 10
    batch_size: int = 8
    seed: int = 0

    def resolved_levels(self) -> tuple[UncertaintyLevel, ...]:
        """The levels in effect."""
        levels = self.levels or default_levels(self.method)
        if not levels or levels[0].kind != "intact":
            raise OptionError("the first level must be 'intact' (overlaps are measured against it)")
        return levels


@dataclass(frozen=True)
class ConceptTraceResult:
    """Concept counts and overlaps per layer and uncertainty level.

    Attributes:
        model_name: the model.
        layers: the layers traced (rows of every tensor).
        level_labels: the levels (columns), intact first.
        counts: ``[layer, level]`` mean number of active latents per input.
        count_std: ``[layer, level]`` their standard deviation over inputs.
        overlap: ``[layer, level]`` mean Jaccard overlap with the same input's intact concepts.
        per_input_counts: ``[layer, level, input]`` the raw counts.
        noise_rate: ``{layer: [d_sae]}`` share of pure-noise inputs each latent fires on
            (the last level).
        intact_rate: ``{layer: [d_sae]}`` the same on intact inputs.
        robust: ``{layer: [(latent, noise_rate, intact_rate)]}`` the noise-robust latents.
        n_inputs: inputs per level.
        options: the options used.
    """

    model_name: str
    layers: list[int]
    level_labels: list[str]
    counts: Float[Tensor, "layer level"]
    count_std: Float[Tensor, "layer level"]
    overlap: Float[Tensor, "layer level"]
    per_input_counts: Float[Tensor, "layer level input"] = field(repr=False)
    noise_rate: dict[int, Tensor] = field(repr=False)
    intact_rate: dict[int, Tensor] = field(repr=False)
    robust: dict[int, list[tuple[int, float, float]]]
    n_inputs: int
    options: ConceptTraceOptions

    def growth(self) -> Float[Tensor, " layer"]:
        """Per layer: count at the noisiest level divided by the intact count."""
        return self.counts[:, -1] / self.counts[:, 0].clamp_min(1e-9)

    def monotone_layers(self) -> list[int]:
        """Layers whose mean count never decreases from one level to the next."""
        diffs = self.counts[:, 1:] - self.counts[:, :-1]
        return [layer for layer, d in zip(self.layers, diffs) if bool((d >= 0).all())]

    def to_frame(self) -> pd.DataFrame:
        """One row per (layer, level): count, std and overlap."""
        rows = []
        for i, layer in enumerate(self.layers):
            for j, label in enumerate(self.level_labels):
                rows.append({"layer": layer, "level": label, "level_index": j,
                             "count": float(self.counts[i, j]), "std": float(self.count_std[i, j]),
                             "overlap": float(self.overlap[i, j])})  # fmt: skip
        return pd.DataFrame(rows)

    def robust_frame(self) -> pd.DataFrame:
        """One row per noise-robust latent: layer, latent, firing rate on noise and intact."""
        rows = [{"layer": layer, "latent": latent, "noise_rate": nr, "intact_rate": ir}
                for layer, entries in self.robust.items() for latent, nr, ir in entries]  # fmt: skip
        return pd.DataFrame(rows, columns=["layer", "latent", "noise_rate", "intact_rate"])

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form (without per-latent rates)."""
        opts = asdict(self.options)
        opts["levels"] = self.level_labels
        return {"model_name": self.model_name, "layers": self.layers,
                "level_labels": self.level_labels, "counts": self.counts.tolist(),
                "count_std": self.count_std.tolist(), "overlap": self.overlap.tolist(),
                "robust": {str(k): v for k, v in self.robust.items()},
                "n_inputs": self.n_inputs, "options": opts}  # fmt: skip


@torch.inference_mode()
def concept_sets(
    model: Any, saes: Mapping[int, SparseAutoencoder], tokens: Int[Tensor, "seq pos"],
    *, threshold: float = 0.0, batch_size: int = 8,
) -> dict[int, Tensor]:  # fmt: skip
    """``{layer: [seq, d_sae] bool}``: the latents active anywhere (past BOS) in each input."""
    hooks = {layer: sae.cfg.hook_name for layer, sae in saes.items()}
    for layer, hook in hooks.items():
        if not hook:
            raise OptionError(f"the SAE of layer {layer} names no hook")
    out: dict[int, list[Tensor]] = {layer: [] for layer in saes}
    for start in range(0, tokens.shape[0], batch_size):
        acts = capture(model, tokens[start : start + batch_size], list(hooks.values()))
        for layer, sae in saes.items():
            f = sae.encode(acts[hooks[layer]][:, 1:])  # [b, pos-1, d_sae]
            out[layer].append((f > threshold).any(1))
    return {layer: torch.cat(parts) for layer, parts in out.items()}


def run_concept_trace(
    model: Any,
    saes: Mapping[int, SparseAutoencoder],
    tokens: Int[Tensor, "seq pos"],
    *,
    options: ConceptTraceOptions | None = None,
    noise_ids: Sequence[int] | Tensor | None = None,
) -> ConceptTraceResult:
    """Count each input's active SAE concepts per layer as the input degrades to noise.

    Args:
        model: the hooked model.
        saes: ``{layer: SAE}``, each reading its layer's hook (``cfg.hook_name``).
        tokens: ``[seq, pos]`` intact inputs (real text windows or task inputs), BOS first.
        options: levels, threshold and seed.
        noise_ids: the ids random tokens are drawn from (default: every id but BOS's).

    Returns:
        Counts, overlaps and noise-robust latents per layer and level.

    Raises:
        OptionError: no SAEs, bad levels, or inputs shorter than 2 tokens.

    Example:
        >>> run_concept_trace(lm, saes, tokens).to_frame().head()     # doctest: +SKIP
    """
    options = options or ConceptTraceOptions()
    levels = options.resolved_levels()
    if not saes:
        raise OptionError("no SAEs given: pass {layer: SAE} for at least one layer")
    if tokens.ndim != 2 or tokens.shape[1] < 2 or tokens.shape[0] < 1:
        raise OptionError(f"tokens must be [seq>=1, pos>=2], got shape {tuple(tokens.shape)}")
    if noise_ids is None:
        bos = int(tokens[0, 0])
        noise_ids = torch.tensor([i for i in range(model.cfg.d_vocab) if i != bos])
    noise = torch.as_tensor(noise_ids, dtype=torch.long)
    layers = sorted(saes)
    per_level = []
    for level in levels:
        degraded = degrade(tokens, level, noise, seed=options.seed)
        per_level.append(concept_sets(model, {k: saes[k] for k in layers}, degraded,
                                      threshold=options.threshold, batch_size=options.batch_size))  # fmt: skip
    n = tokens.shape[0]
    counts = torch.zeros(len(layers), len(levels), n)
    overlap = torch.zeros(len(layers), len(levels))
    robust: dict[int, list[tuple[int, float, float]]] = {}
    noise_rate, intact_rate = {}, {}
    for i, layer in enumerate(layers):
        intact = per_level[0][layer]
        for j in range(len(levels)):
            sets = per_level[j][layer]
            counts[i, j] = sets.sum(-1).float()
            inter = (sets & intact).sum(-1).float()
            union = (sets | intact).sum(-1).float().clamp_min(1)
            overlap[i, j] = (inter / union).mean()
        noise_rate[layer] = per_level[-1][layer].float().mean(0)
        intact_rate[layer] = intact.float().mean(0)
        order = noise_rate[layer].argsort(descending=True)[: options.max_robust]
        robust[layer] = [(int(k), float(noise_rate[layer][k]), float(intact_rate[layer][k]))
                         for k in order if float(noise_rate[layer][k]) >= options.robust_rate]  # fmt: skip
    return ConceptTraceResult(
        model_name=model_name(model), layers=layers, level_labels=[lv.label for lv in levels],
        counts=counts.mean(-1), count_std=counts.std(-1) if n > 1 else torch.zeros_like(counts[..., 0]),
        overlap=overlap, per_input_counts=counts, noise_rate=noise_rate, intact_rate=intact_rate,
        robust=robust, n_inputs=n, options=options,
    )  # fmt: skip
