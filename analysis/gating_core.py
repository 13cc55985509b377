"""The machinery under head gating: gate hooks on ``hook_z``, the gated loss, batch sampling.

Several gate sets ("seeds") are evaluated in one forward pass, seed major: row ``s * b + i``
is row ``i`` of gate set ``s``'s batch. A batch is either shared (one ``[b, pos]`` batch
repeated for every gate set, as the authors do) or per seed (``[seeds * b, pos]``, a different
draw for each gate set). Gates and batches live on the model's device.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from analysis.errors import OptionError
from analysis.gating_data import GatingData
from analysis.hooks import attn_z, require_hooks
from analysis.protocol import hooked_module, model_device

#: ``progress(stage, done, total)``; stages ``none``, ``g_plus``, ``g_minus``, ``contrastive``,
#: ``evaluate``, ``ablate``.
Progress = Callable[[str, int, int], None]

Batch = tuple[Tensor, Tensor, Tensor, Tensor | None]


def check_data(model: Any, data: GatingData) -> None:
    """Raise ``OptionError`` when ``data`` does not fit ``model`` (ids, outputs, hooks)."""
    cfg = model.cfg
    if len(data) == 0 or data.n_supervised == 0:
        raise OptionError(f"dataset {data.name!r} is empty: no supervised position")
    if data.tokens.shape != data.targets.shape:
        raise OptionError(
            f"tokens {tuple(data.tokens.shape)} and targets {tuple(data.targets.shape)} differ in shape"
        )
    if int(data.tokens.max()) >= cfg.d_vocab:
        raise OptionError(
            f"token id {int(data.tokens.max())} is outside the model's input vocabulary 0..{cfg.d_vocab - 1}"
        )
    if int(data.lengths.max()) > cfg.n_ctx:
        raise OptionError(
            f"rows of {int(data.lengths.max())} tokens exceed the context {cfg.n_ctx}"
        )
    if data.is_numerical:
        if cfg.d_vocab_out != 1:
            raise OptionError(
                f"numerical targets need a model with one output; this one has {cfg.d_vocab_out}"
            )
    elif int(data.targets.max()) >= cfg.d_vocab_out:
        raise OptionError(
            f"target id {int(data.targets.max())} is outside the model's output vocabulary "
            f"0..{cfg.d_vocab_out - 1} (d_vocab_out = {cfg.d_vocab_out})"
        )
    require_hooks(model, [attn_z(layer) for layer in range(cfg.n_layers)])


def gate_hooks(gates: Float[Tensor, "seed layer head"], rows: int) -> list[tuple[str, Callable]]:
    """Forward hooks multiplying each head's ``hook_z`` by its gate, one gate set per block of
    ``rows`` batch rows."""

    def make(layer: int) -> Callable:
        def hook(z: Tensor, hook: Any) -> Tensor:
            g = gates[:, layer].repeat_interleave(rows, dim=0)
            return z * g[:, None, :, None].to(z.dtype)

        return hook

    return [(attn_z(layer), make(layer)) for layer in range(gates.shape[1])]


def gated_nll(
    model: Any, gates: Tensor | None, batch: Batch, *, per_seed: bool = False
) -> tuple[Float[Tensor, " seed"], Float[Tensor, " seed"]]:
    """Mean loss on the supervised positions of ``batch`` under each gate set, and accuracy.

    The loss is the unsaturated ``-log_softmax(logits)[target]`` from raw logits (squared
    error for numerical targets, whose accuracy is NaN). ``gates=None`` runs the model ungated.
    With ``per_seed`` the batch holds ``seeds * b`` rows, gate set ``s`` seeing rows
    ``s * b .. s * b + b - 1``; otherwise one batch is repeated for every gate set. Results
    stay on the model's device.
    """
    inner = hooked_module(model)
    device = model_device(model)
    tokens, targets, mask, numerical = (
        None if t is None else t.to(device, non_blocking=True) for t in batch
    )
    n_sets = 1 if gates is None else gates.shape[0]
    rows = tokens.shape[0] // n_sets if per_seed else tokens.shape[0]
    if gates is None:
        logits = inner(tokens)
    else:
        gates = gates.to(device)
        with inner.hooks(fwd_hooks=gate_hooks(gates, rows)):
            logits = inner(tokens if per_seed else tokens.repeat(n_sets, 1))
    logits = logits.float().reshape(n_sets, rows, *logits.shape[1:])

    def by_set(t: Tensor) -> Tensor:
        return t.reshape(n_sets, rows, *t.shape[1:]) if per_seed else t.expand(n_sets, *t.shape)

    weight = by_set(mask.float())
    count = weight.sum(dim=(1, 2)).clamp(min=1)
    if numerical is not None:
        err = (logits[..., 0] - by_set(numerical)) ** 2
        loss = (err * weight).sum(dim=(1, 2)) / count
        return loss, torch.full_like(loss, float("nan"))
    safe = by_set(targets.clamp(min=0))
    logp = torch.log_softmax(logits, dim=-1)
    picked = logp.gather(-1, safe.unsqueeze(-1)).squeeze(-1)
    loss = -(picked * weight).sum(dim=(1, 2)) / count
    correct = (logits.argmax(-1) == safe).float()
    return loss, (correct * weight).sum(dim=(1, 2)) / count


@torch.no_grad()
def evaluate_gates(
    model: Any,
    data: GatingData,
    gates: Float[Tensor, "seed layer head"] | None = None,
    *,
    max_rows: int = 64,
    progress: Progress | None = None,
    stage: str = "evaluate",
) -> tuple[Float[Tensor, " seed"], Float[Tensor, " seed"]]:
    """Loss and accuracy on all of ``data`` under each gate set (token-weighted means).

    More than ``max_rows`` gate sets are evaluated ``max_rows`` sets at a time, so memory stays
    bounded however many sets (ablations, candidate reverts) are asked for.

    Args:
        model: the model.
        data: the dataset.
        gates: ``[seed, layer, head]`` gate values in [0, 1], or ``None`` for the ungated model.
        max_rows: most rows in one forward pass (batch rows x gate sets), to bound memory.
        progress: called as ``progress(stage, done, total)`` per chunk of gate sets.
        stage: the stage name passed to ``progress``.

    Example:
        >>> loss, acc = evaluate_gates(lm, data, torch.ones(1, 2, 4))   # doctest: +SKIP
    """
    if gates is not None and gates.shape[0] > max_rows:
        chunks = gates.split(max_rows)
        parts = []
        for done, chunk in enumerate(chunks, start=1):
            parts.append(evaluate_gates(model, data, chunk, max_rows=max_rows))
            if progress is not None:
                progress(stage, done, len(chunks))
        return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])
    n_sets = 1 if gates is None else gates.shape[0]
    per_pass = max(1, max_rows // n_sets)
    total_loss = torch.zeros(n_sets)
    total_correct = torch.zeros(n_sets)
    total = 0.0
    for batch in data.batches(per_pass):
        n = float(batch[2].sum())
        if n == 0:
            continue
        loss, acc = gated_nll(model, gates, batch)
        total_loss += loss.cpu() * n
        total_correct += acc.cpu() * n
        total += n
    if progress is not None:
        progress(stage, 1, 1)
    return total_loss / total, total_correct / total


class BatchSampler:
    """Random batches of ``size`` rows of one length, a length drawn in proportion to its rows.

    With ``draws > 1`` each call returns ``draws`` independent batches of the same length
    stacked draw major (``[draws * size, pos]``): one batch per gate set.
    """

    def __init__(
        self, data: GatingData, size: int, generator: torch.Generator, draws: int = 1
    ) -> None:
        self.data = data
        self.size = size
        self.gen = generator
        self.draws = draws
        self.groups = list(data.length_groups().items())
        self.weights = torch.tensor([float(len(rows)) for _, rows in self.groups])

    def __call__(self) -> Batch:
        pick = int(torch.multinomial(self.weights, 1, generator=self.gen))
        length, rows = self.groups[pick]
        size = min(self.size, len(rows))
        picks = [
            rows[torch.randperm(len(rows), generator=self.gen)[:size]] for _ in range(self.draws)
        ]
        return self.data.rows(torch.cat(picks), length)


def clip_per_seed(grad: Tensor, max_norm: float | None) -> Tensor:
    """Clip each seed's gradient norm separately, so seeds stay independent fits."""
    if max_norm is None:
        return grad
    norms = grad.flatten(1).norm(dim=1).clamp(min=1e-12)
    scale = (max_norm / norms).clamp(max=1.0)
    return grad * scale[:, None, None]


def regulariser(logits: Tensor, clamp: float) -> Float[Tensor, " seed"]:
    """Mean clamped gate logit per seed (the clipped inverse sigmoid of the gates)."""
    return logits.clamp(-clamp, clamp).mean(dim=(1, 2))
