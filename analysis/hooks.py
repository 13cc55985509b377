"""TransformerLens hook names, built in one typed place (no string parsing elsewhere).

HookedTransformer and TransformerBridge share this vocabulary, so analyses written against it
run on every model kind.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from analysis.errors import HookNotFoundError, OptionError
from analysis.protocol import hooked_module


def attn_pattern(layer: int) -> str:
    """Attention probabilities ``[batch, head, query, key]``."""
    return f"blocks.{layer}.attn.hook_pattern"


def attn_z(layer: int) -> str:
    """Per-head mixed values before W_O ``[batch, pos, head, d_head]``."""
    return f"blocks.{layer}.attn.hook_z"


def resid_pre(layer: int) -> str:
    """The residual stream entering block ``layer`` ``[batch, pos, d_model]``."""
    return f"blocks.{layer}.hook_resid_pre"


def resid_post(layer: int) -> str:
    """The residual stream leaving block ``layer``."""
    return f"blocks.{layer}.hook_resid_post"


def mlp_post(layer: int) -> str:
    """MLP hidden activations after the non-linearity ``[batch, pos, d_mlp]``."""
    return f"blocks.{layer}.mlp.hook_post"


def mlp_out(layer: int) -> str:
    """The MLP's output written to the residual stream."""
    return f"blocks.{layer}.hook_mlp_out"


def attn_out(layer: int) -> str:
    """The attention sub-layer's output written to the residual stream."""
    return f"blocks.{layer}.hook_attn_out"


def hook_names(model: Any) -> list[str]:
    """Every hook name the model has."""
    return sorted(hooked_module(model).hook_dict)


def require_hooks(model: Any, names: Iterable[str]) -> None:
    """Raise ``HookNotFoundError`` for the first name the model lacks, listing similar valid ones."""
    valid = set(hook_names(model))
    for name in names:
        if name not in valid:
            stem = name.rsplit(".", 1)[-1]
            similar = sorted(n for n in valid if n.endswith(stem))[:6] or sorted(valid)[:6]
            raise HookNotFoundError(
                f"model has no hook {name!r}; valid names include {', '.join(similar)}"
            )


def check_layers(model: Any, layers: Iterable[int] | None) -> list[int]:
    """The requested layers (all when ``None``), each checked against ``cfg.n_layers``."""
    n = model.cfg.n_layers
    chosen = list(range(n)) if layers is None else list(layers)
    for layer in chosen:
        if not 0 <= layer < n:
            raise OptionError(f"layer {layer} is out of range; this model has layers 0..{n - 1}")
    if not chosen:
        raise OptionError("no layers chosen; pick at least one")
    return chosen


def check_heads(model: Any, heads: Iterable[int] | None) -> list[int]:
    """The requested heads (all when ``None``), each checked against ``cfg.n_heads``."""
    n = model.cfg.n_heads
    chosen = list(range(n)) if heads is None else list(heads)
    for head in chosen:
        if not 0 <= head < n:
            raise OptionError(f"head {head} is out of range; this model has heads 0..{n - 1}")
    if not chosen:
        raise OptionError("no heads chosen; pick at least one")
    return chosen


def head_label(layer: int, head: int) -> str:
    """``L3H2``."""
    return f"L{layer}H{head}"
