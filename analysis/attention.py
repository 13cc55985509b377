"""Attention patterns and per-head scores (previous-token, duplicate-token, induction, sink)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor

from analysis.errors import OptionError
from analysis.hooks import attn_pattern, check_heads, check_layers, head_label, require_hooks
from analysis.protocol import Inputs, input_labels, model_name, tokens_of

#: Per-head summaries of one prompt's patterns, in the order of ``AttentionResult.summary``.
SUMMARY_NAMES = ("entropy", "max_weight", "first_token_mass", "previous_token_mass", "self_mass")


@dataclass(frozen=True)
class AttentionResult:
    """Attention patterns of the requested heads on one input.

    Attributes:
        model_name: the model they come from.
        tokens: one label per position (the text of each token).
        layers, heads: the layers and heads held, in order.
        patterns: ``[layer, head, query, key]`` attention probabilities.
        summary: ``{name: [layer, head]}`` per-head summaries averaged over query positions:
            entropy (nats), max weight, mass on the first token, on the previous token, on itself.
    """

    model_name: str
    tokens: list[str]
    layers: tuple[int, ...]
    heads: tuple[int, ...]
    patterns: Float[Tensor, "layer head query key"]
    summary: dict[str, Float[Tensor, "layer head"]] = field(repr=False)

    def pattern(self, layer: int, head: int) -> Float[Tensor, "query key"]:
        """The ``[query, key]`` pattern of one head (which must be held)."""
        if layer not in self.layers or head not in self.heads:
            raise OptionError(
                f"{head_label(layer, head)} is not in this result; it holds layers "
                f"{list(self.layers)} and heads {list(self.heads)}"
            )
        return self.patterns[self.layers.index(layer), self.heads.index(head)]

    def to_frame(self) -> pd.DataFrame:
        """One row per head: layer, head, label and every summary."""
        rows = []
        for i, layer in enumerate(self.layers):
            for j, head in enumerate(self.heads):
                row = {"layer": layer, "head": head, "label": head_label(layer, head)}
                row |= {name: float(values[i, j]) for name, values in self.summary.items()}
                rows.append(row)
        return pd.DataFrame(rows)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form (patterns as nested lists)."""
        return {
            "model_name": self.model_name,
            "tokens": self.tokens,
            "layers": list(self.layers),
            "heads": list(self.heads),
            "patterns": self.patterns.tolist(),
            "summary": {k: v.tolist() for k, v in self.summary.items()},
        }


@torch.inference_mode()
def run_attention(
    model: Any,
    inputs: Inputs,
    *,
    layers: list[int] | None = None,
    heads: list[int] | None = None,
) -> AttentionResult:
    """Attention patterns of the chosen heads on one prompt or task sequence.

    Only the chosen layers' pattern hooks are cached, so a 1,000-token prompt on a 30-layer
    model costs one layer's patterns, not the whole cache.

    Args:
        model: a hooked model (``models.LoadedModel`` or a TransformerLens model).
        inputs: a text prompt, a task sequence, or a ``[1, pos]`` token tensor.
        layers: layers to keep (default all); heads: heads to keep (default all).

    Returns:
        An ``AttentionResult``.

    Raises:
        OptionError: a layer or head out of range.

    Example:
        >>> result = run_attention(load_model("task:sort"), [3, 1, 2], layers=[0])  # doctest: +SKIP
        >>> result.pattern(0, 1).shape                                              # doctest: +SKIP
        torch.Size([4, 4])
    """
    chosen_layers = check_layers(model, layers)
    chosen_heads = check_heads(model, heads)
    names = [attn_pattern(layer) for layer in chosen_layers]
    require_hooks(model, names)
    tokens = tokens_of(model, inputs)
    _, cache = model.run_with_cache(tokens, names_filter=lambda name: name in names)
    patterns = torch.stack(
        [cache[attn_pattern(layer)][0, chosen_heads].float().cpu() for layer in chosen_layers]
    )
    return AttentionResult(
        model_name=model_name(model),
        tokens=input_labels(model, tokens),
        layers=tuple(chosen_layers),
        heads=tuple(chosen_heads),
        patterns=patterns,
        summary=summarise_patterns(patterns),
    )


def summarise_patterns(patterns: Float[Tensor, "... query key"]) -> dict[str, Tensor]:
    """Per-head summaries averaged over query positions (``SUMMARY_NAMES``)."""
    n = patterns.shape[-1]
    entropy = -(patterns * patterns.clamp_min(1e-12).log()).sum(-1)
    previous = patterns.diagonal(offset=-1, dim1=-2, dim2=-1) if n > 1 else patterns[..., :0, 0]
    return {
        "entropy": entropy.mean(-1),
        "max_weight": patterns.amax(-1).mean(-1),
        "first_token_mass": patterns[..., 1:, 0].mean(-1) if n > 1 else patterns[..., 0, 0],
        "previous_token_mass": previous.mean(-1) if n > 1 else torch.zeros(patterns.shape[:-2]),
        "self_mass": patterns.diagonal(dim1=-2, dim2=-1).mean(-1),
    }
