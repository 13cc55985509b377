"""The residual stream at every layer, with dimension labels where they are known."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor

from analysis.hooks import require_hooks
from analysis.lens import lens_hooks
from analysis.protocol import Inputs, input_labels, model_name, tokens_of


@dataclass(frozen=True)
class ResidualResult:
    """``[layer, pos, d_model]`` residual streams (entering each block, then final).

    Attributes:
        dim_labels: one label per residual dimension (``"tokens:3"`` for compiled models,
            ``"d17"`` otherwise).
    """

    model_name: str
    tokens: list[str]
    layer_labels: list[str]
    dim_labels: list[str]
    resid: Float[Tensor, "layer pos d_model"]

    def to_frame(self) -> pd.DataFrame:
        """Long frame of non-zero entries: layer, position, token, dimension, value."""
        idx = self.resid.abs().gt(1e-6).nonzero().tolist()
        return pd.DataFrame(
            [{"layer": self.layer_labels[i], "position": p, "token": self.tokens[p],
              "dimension": self.dim_labels[d], "value": float(self.resid[i, p, d])} for i, p, d in idx]
        )  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form."""
        return {"model_name": self.model_name, "tokens": self.tokens, "layer_labels": self.layer_labels,
                "dim_labels": self.dim_labels, "resid": self.resid.tolist()}  # fmt: skip


@torch.inference_mode()
def run_residual(model: Any, inputs: Inputs) -> ResidualResult:
    """The residual stream entering every block and the final one, for one input.

    Example:
        >>> run_residual(load_model("rasp:reverse"), [3, 1, 2]).dim_labels[:3]   # doctest: +SKIP
        ['one', 'tokens:1', 'tokens:2']
    """
    names = lens_hooks(model.cfg.n_layers)
    require_hooks(model, names)
    tokens = tokens_of(model, inputs)
    _, cache = model.run_with_cache(tokens, names_filter=lambda name: name in names)
    resid = torch.stack([cache[name][0].float().cpu() for name in names])
    labels = getattr(model, "residual_labels", None) or [f"d{i}" for i in range(model.cfg.d_model)]
    return ResidualResult(
        model_name=model_name(model),
        tokens=input_labels(model, tokens),
        layer_labels=[f"L{layer} in" for layer in range(model.cfg.n_layers)] + ["final"],
        dim_labels=list(labels),
        resid=resid,
    )
