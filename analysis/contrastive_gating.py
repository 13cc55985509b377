"""Contrastive causal head gating (CCHG): the heads one dataset needs and another does not.

One gate set is fitted to keep the loss on ``keep`` data low while raising the loss on
``forget`` data, with the same retention regulariser as G+ so that only heads whose removal
serves the contrast are closed. The forget term is the rise of the forget loss over the
ungated model, capped at ``max_diff`` so that it cannot dominate once forgetting is done.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor

from analysis.errors import OptionError
from analysis.gating_core import (
    BatchSampler,
    Progress,
    check_data,
    clip_per_seed,
    evaluate_gates,
    gated_nll,
    regulariser,
)
from analysis.gating_data import GatingData
from analysis.head_gating import HeadGatingOptions, initial_logits
from analysis.hooks import head_label
from analysis.protocol import model_name


@dataclass(frozen=True)
class ContrastiveGatingResult:
    """Gates fitted to keep one dataset and forget another.

    Attributes:
        gates: ``[seed, layer, head]`` final gates; low = needed for forget, not for keep.
        mean_gates: ``[layer, head]`` mean over seeds.
        keep_loss, forget_loss: ``{"ungated" | "gated": value}`` on all of each dataset
            (gated: with the mean gates).
        loss_curves: ``{"keep" | "forget": [step, seed]}``.
    """

    model_name: str
    keep_name: str
    forget_name: str
    gates: Float[Tensor, "seed layer head"]
    mean_gates: Float[Tensor, "layer head"]
    keep_loss: dict[str, float]
    forget_loss: dict[str, float]
    loss_curves: dict[str, Float[Tensor, "step seed"]]
    options: HeadGatingOptions
    max_diff: float
    seconds: float

    def forget_heads(self, threshold: float | None = None) -> list[str]:
        """Heads whose mean gate fell below ``threshold`` (default: the options' threshold)."""
        t = self.options.threshold if threshold is None else threshold
        return [
            head_label(layer, head)
            for layer in range(self.mean_gates.shape[0])
            for head in range(self.mean_gates.shape[1])
            if self.mean_gates[layer, head] < t
        ]

    def to_frame(self) -> pd.DataFrame:
        """One row per head: mean gate, spread, and whether it is a forget head."""
        rows = []
        std = (
            self.gates.std(dim=0) if self.gates.shape[0] > 1 else torch.zeros_like(self.mean_gates)
        )
        for layer in range(self.mean_gates.shape[0]):
            for head in range(self.mean_gates.shape[1]):
                g = float(self.mean_gates[layer, head])
                rows.append({"layer": layer, "head": head, "label": head_label(layer, head),
                             "gate": g, "gate_std": float(std[layer, head]),
                             "forget_head": g < self.options.threshold})  # fmt: skip
        return pd.DataFrame(rows)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form."""
        return {
            "model_name": self.model_name, "keep_name": self.keep_name,
            "forget_name": self.forget_name, "gates": self.gates.tolist(),
            "mean_gates": self.mean_gates.tolist(), "keep_loss": self.keep_loss,
            "forget_loss": self.forget_loss, "forget_heads": self.forget_heads(),
            "loss_curves": {k: v.tolist() for k, v in self.loss_curves.items()},
            "options": asdict(self.options), "max_diff": self.max_diff, "seconds": self.seconds,
        }  # fmt: skip


def fit_contrastive_head_gates(
    model: Any,
    keep_data: GatingData,
    forget_data: GatingData,
    *,
    options: HeadGatingOptions | None = None,
    max_diff: float = 5.0,
    progress: Progress | None = None,
) -> ContrastiveGatingResult:
    """Fit one gate set minimising ``NLL(keep) - min(NLL(forget) - NLL0(forget), max_diff)
    - lam * mean(clamp(logit))`` (``options.steps`` updates from ``options.init``).

    Args:
        model: a hooked model.
        keep_data: what the gated model must still do.
        forget_data: what it must stop doing.
        options: fit settings (``lam``, ``lr``, ``steps``, ``n_seeds``, ...).
        max_diff: cap on the rise of the forget loss that is rewarded.
        progress: ``progress("contrastive", done, total)``.

    Raises:
        OptionError: bad options or data that does not fit the model.

    Example:
        >>> fit_contrastive_head_gates(lm, icl, instr).forget_heads()   # doctest: +SKIP
    """
    options = options or HeadGatingOptions()
    options.check()
    if max_diff <= 0:
        raise OptionError(f"max_diff must be > 0, got {max_diff}")
    check_data(model, keep_data)
    check_data(model, forget_data)
    start_time = time.perf_counter()
    gen = torch.Generator().manual_seed(options.seed)
    per_seed = options.batches == "per_seed"
    draws = options.n_seeds if per_seed else 1
    keep_sample = BatchSampler(keep_data, options.batch_size, gen, draws=draws)
    forget_sample = BatchSampler(forget_data, options.batch_size, gen, draws=draws)
    keep0, _ = evaluate_gates(model, keep_data, None, max_rows=options.eval_rows)
    forget0, _ = evaluate_gates(model, forget_data, None, max_rows=options.eval_rows)
    logits = initial_logits(model, options, gen).requires_grad_(True)
    opt = torch.optim.Adam([logits], lr=options.lr)
    curves = {"keep": torch.zeros(options.steps, options.n_seeds),
              "forget": torch.zeros(options.steps, options.n_seeds)}  # fmt: skip
    for step in range(options.steps):
        gates = torch.sigmoid(logits)
        keep_nll, _ = gated_nll(model, gates, keep_sample(), per_seed=per_seed)
        forget_nll, _ = gated_nll(model, gates, forget_sample(), per_seed=per_seed)
        forget_term = (forget_nll - float(forget0[0])).clamp(max=max_diff)
        loss = (keep_nll - forget_term - options.lam * regulariser(logits, options.clamp)).sum()
        (grad,) = torch.autograd.grad(loss, [logits])
        logits.grad = clip_per_seed(grad, options.grad_clip)
        opt.step()
        curves["keep"][step] = keep_nll.detach()
        curves["forget"][step] = forget_nll.detach()
        if progress is not None:
            progress("contrastive", step + 1, options.steps)
    gates = torch.sigmoid(logits.detach()).cpu()
    mean = gates.mean(dim=0)
    keep1, _ = evaluate_gates(model, keep_data, mean[None], max_rows=options.eval_rows)
    forget1, _ = evaluate_gates(model, forget_data, mean[None], max_rows=options.eval_rows)
    return ContrastiveGatingResult(
        model_name=model_name(model),
        keep_name=keep_data.name,
        forget_name=forget_data.name,
        gates=gates,
        mean_gates=mean,
        keep_loss={"ungated": float(keep0[0]), "gated": float(keep1[0])},
        forget_loss={"ungated": float(forget0[0]), "gated": float(forget1[0])},
        loss_curves=curves,
        options=options,
        max_diff=max_diff,
        seconds=time.perf_counter() - start_time,
    )
