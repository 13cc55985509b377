"""Logit-lens accuracy by layer over a dataset: from which layer on is the answer readable?

For every supervised position of a ``GatingData`` set (task inputs with their exact outputs,
or text with its next tokens), each layer's residual is decoded with the logit lens (final
norm + unembedding, as ``analysis.lens``). Per layer: top-1 accuracy against the target,
agreement with the model's own top-1, the mean target probability and the mean
KL(final || lens). The ``final`` row is the model itself, so its accuracy is the model's.

Example:
    >>> acc = run_lens_accuracy(lm, task_data(lm, seqs, outs))     # doctest: +SKIP
    >>> acc.first_layer_reaching(0.9)                               # doctest: +SKIP
    'L2 in'
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor

from analysis.errors import OptionError
from analysis.gating_data import GatingData
from analysis.hooks import require_hooks
from analysis.lens import lens_hooks
from analysis.protocol import hooked_module, model_device, model_name, unembed


@dataclass(frozen=True)
class LensAccuracyOptions:
    """Attributes:
    batch_size: rows per forward pass (rows of one length each, never padded).
    """

    batch_size: int = 16

    def check(self) -> None:
        """Raise ``OptionError`` for a value out of range."""
        if self.batch_size < 1:
            raise OptionError(f"batch_size must be >= 1, got {self.batch_size}")


@dataclass(frozen=True)
class LensAccuracyResult:
    """Per-layer logit-lens statistics over every supervised position of a dataset.

    Attributes:
        model_name, data_name: what was measured.
        layer_labels: ``L0 in`` .. ``L{n-1} in`` then ``final``.
        accuracy: ``[layer]`` fraction of positions whose lens top-1 is the target.
        agreement: ``[layer]`` fraction whose lens top-1 equals the model's final top-1.
        target_prob: ``[layer]`` mean lens probability of the target.
        kl_to_final: ``[layer]`` mean KL(final || lens), nats.
        n_positions: supervised positions measured.
        options: the options used.
    """

    model_name: str
    data_name: str
    layer_labels: list[str]
    accuracy: Float[Tensor, " layer"]
    agreement: Float[Tensor, " layer"]
    target_prob: Float[Tensor, " layer"]
    kl_to_final: Float[Tensor, " layer"]
    n_positions: int
    options: LensAccuracyOptions

    def first_layer_reaching(self, fraction: float) -> str | None:
        """The first row whose accuracy is at least ``fraction`` of the final accuracy."""
        goal = fraction * float(self.accuracy[-1])
        for label, value in zip(self.layer_labels, self.accuracy.tolist()):
            if value >= goal:
                return label
        return None

    def to_frame(self) -> pd.DataFrame:
        """One row per layer."""
        return pd.DataFrame(
            {
                "layer": self.layer_labels,
                "accuracy": self.accuracy.tolist(),
                "agreement": self.agreement.tolist(),
                "target_prob": self.target_prob.tolist(),
                "kl_to_final": self.kl_to_final.tolist(),
            }
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form."""
        return {
            "model_name": self.model_name,
            "data_name": self.data_name,
            "layer_labels": self.layer_labels,
            "accuracy": self.accuracy.tolist(),
            "agreement": self.agreement.tolist(),
            "target_prob": self.target_prob.tolist(),
            "kl_to_final": self.kl_to_final.tolist(),
            "n_positions": self.n_positions,
            "options": asdict(self.options),
        }


@torch.inference_mode()
def run_lens_accuracy(
    model: Any, data: GatingData, *, options: LensAccuracyOptions | None = None
) -> LensAccuracyResult:
    """Logit-lens accuracy, agreement, target probability and KL per layer over ``data``.

    Args:
        model: a hooked model.
        data: token rows with a class target per supervised position (``analysis.gating_data``:
            ``task_data`` for task inputs, ``next_token_data`` for text).
        options: ``LensAccuracyOptions`` (defaults if ``None``).

    Returns:
        A ``LensAccuracyResult``; its ``final`` row is the model's own accuracy.

    Raises:
        OptionError: numerical targets (a lens reads classes) or a target outside the output.

    Example:
        >>> run_lens_accuracy(lm, data).accuracy[-1]          # doctest: +SKIP
        tensor(0.98)
    """
    options = options or LensAccuracyOptions()
    options.check()
    if data.is_numerical:
        raise OptionError(
            f"data {data.name!r} has numerical targets; the lens accuracy needs class targets"
        )
    n_out = model.cfg.d_vocab_out
    if int(data.targets.max()) >= n_out:
        raise OptionError(
            f"target id {int(data.targets.max())} is outside the model's outputs 0..{n_out - 1}"
        )
    names = lens_hooks(model.cfg.n_layers)
    require_hooks(model, names)
    inner = hooked_module(model)
    device = model_device(model)
    n_rows = len(names)
    sums = {key: torch.zeros(n_rows, dtype=torch.float64) for key in ("acc", "agr", "tp", "kl")}
    count = 0
    for tokens, targets, mask, _ in data.batches(options.batch_size):
        if not bool(mask.any()):
            continue
        _, cache = inner.run_with_cache(tokens.to(device), names_filter=lambda n: n in names)
        target = targets[mask].to(device)
        final_logp = unembed(model, cache[names[-1]][mask.to(device)]).float().log_softmax(-1)
        final_top = final_logp.argmax(-1)
        for row, name in enumerate(names):
            last = row == n_rows - 1
            logp = final_logp if last else unembed(model, cache[name][mask.to(device)]).float()
            logp = logp if last else logp.log_softmax(-1)
            top = logp.argmax(-1)
            sums["acc"][row] += float((top == target).sum())
            sums["agr"][row] += float((top == final_top).sum())
            sums["tp"][row] += float(logp.gather(-1, target[:, None]).exp().sum())
            kl = (final_logp.exp() * (final_logp - logp)).sum(-1).clamp_min(0)
            sums["kl"][row] += float(kl.sum())
        count += int(mask.sum())
        del cache
    means = {key: (value / max(count, 1)).float() for key, value in sums.items()}
    n_layers = model.cfg.n_layers
    return LensAccuracyResult(
        model_name=model_name(model),
        data_name=data.name,
        layer_labels=[f"L{layer} in" for layer in range(n_layers)] + ["final"],
        accuracy=means["acc"],
        agreement=means["agr"],
        target_prob=means["tp"],
        kl_to_final=means["kl"],
        n_positions=count,
        options=options,
    )
