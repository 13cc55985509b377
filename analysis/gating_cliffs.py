"""Cliff check for head gating: undo gate moves that gradient descent made across a loss cliff.

A compiled or otherwise non-smooth model can have a head whose loss is flat while its gate
falls from 1 to ~0.98 and flat again, much higher, below that (a selector-width head read by
a thresholding MLP). Gradients see neither side of the cliff, so under removal pressure the
gate slides over it and stays: the head looks irrelevant although removing it costs far
more than the regulariser gains. The paper assumes smooth models; this check is ours.

After a stage, every gate that moved by more than ``min_move`` from the stage's start is put
back, one at a time, and kept back when that lowers the stage's objective on the whole
dataset (``NLL - lambda * mean(clamp(logit))``, deterministic, not a noisy batch). Several
rounds, because reverts can interact. Cost: one evaluation per crossed gate, so it is meant
for small models (``cliff_check=None`` turns it on up to 64 heads).
"""

from __future__ import annotations

from typing import Any

import torch
from jaxtyping import Float
from torch import Tensor

from analysis.gating_core import Progress, evaluate_gates, regulariser
from analysis.gating_data import GatingData


def revert_cliffs(
    model: Any,
    data: GatingData,
    start: Float[Tensor, "seed layer head"],
    final: Float[Tensor, "seed layer head"],
    lam: float,
    *,
    clamp: float,
    min_move: float = 0.1,
    max_rows: int = 64,
    rounds: int = 3,
    stage: str = "cliffs",
    progress: Progress | None = None,
) -> tuple[Float[Tensor, "seed layer head"], int]:
    """Put back gate logits that crossed ``threshold`` when that lowers the stage objective.

    Args:
        model: the gated model.
        data: the data the objective is measured on.
        start: logits the stage started from (the lambda=0 fit).
        final: logits the stage ended with.
        lam: the stage's signed regulariser weight.
        clamp: the regulariser's logit clamp.
        min_move: gates that moved less than this (in gate value) are left alone.
        max_rows: most rows x gate sets in one forward pass.
        rounds: most passes over the crossed gates.
        stage: name passed to ``progress``.
        progress: called as ``progress(stage, done, total)`` per round.

    Returns:
        ``(logits, n_reverted)``: the corrected logits and how many gates were put back.

    Example:
        >>> minus, n = revert_cliffs(lm, data, base, minus, -0.1, clamp=4)  # doctest: +SKIP
    """
    start = start.detach().cpu()
    final = final.detach().cpu().clone()
    n_seeds = final.shape[0]
    reverted = 0
    for done in range(1, rounds + 1):
        moved = (torch.sigmoid(final) - torch.sigmoid(start)).abs() > min_move
        idx = moved.nonzero()
        if len(idx) == 0:
            break
        seed, layer, head = idx.unbind(dim=1)
        cand = final[seed].clone()
        cand[torch.arange(len(idx)), layer, head] = start[seed, layer, head]
        sets = torch.cat([final, cand])
        loss, _ = evaluate_gates(model, data, torch.sigmoid(sets), max_rows=max_rows)
        objective = loss - lam * regulariser(sets, clamp)
        better = objective[n_seeds:] < objective[seed] - 1e-6
        if progress is not None:
            progress(stage, done, rounds)
        if not bool(better.any()):
            break
        keep = idx[better]
        final[keep[:, 0], keep[:, 1], keep[:, 2]] = start[keep[:, 0], keep[:, 1], keep[:, 2]]
        reverted += int(better.sum())
    return final, reverted
