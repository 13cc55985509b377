"""Ablation checks of head-gating classes: zero the heads of a class and measure the loss.

The paper validates CHG scores causally: ablating facilitating heads should raise the loss,
irrelevant heads should leave it unchanged, interfering heads should lower it. Exhaustive
one-at-a-time ablation is the slow baseline CHG is compared with.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pandas as pd
import torch
from jaxtyping import Float
from torch import Tensor

from analysis.errors import OptionError
from analysis.gating_core import Progress, check_data, evaluate_gates
from analysis.gating_data import GatingData
from analysis.head_gating import HEAD_CLASSES, HeadGatingResult


@dataclass(frozen=True)
class AblationCheck:
    """Loss and accuracy with the heads of each class zero-ablated together.

    Attributes:
        rows: one dict per class: ``class``, ``n_heads``, ``heads``, ``loss``, ``delta_loss``,
            ``accuracy``, ``delta_accuracy`` (deltas against the ungated model).
        base_loss, base_accuracy: the ungated model on the same data.
    """

    rows: tuple[dict[str, Any], ...]
    base_loss: float
    base_accuracy: float

    def delta(self, head_class: str) -> float:
        """Loss change when ``head_class`` is ablated (0 for an empty class)."""
        return next(r["delta_loss"] for r in self.rows if r["class"] == head_class)

    def to_frame(self) -> pd.DataFrame:
        """One row per class."""
        return pd.DataFrame([{**r, "heads": ",".join(r["heads"])} for r in self.rows])

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form."""
        return {"rows": [dict(r) for r in self.rows], "base_loss": self.base_loss,
                "base_accuracy": self.base_accuracy}  # fmt: skip


def ablation_check(
    model: Any, data: GatingData, result: HeadGatingResult, *, max_rows: int = 64
) -> AblationCheck:
    """Zero-ablate the heads of each class together and report the loss/accuracy change.

    Args:
        model: the model the gates were fitted on.
        data: the data to measure on (ideally held out from the fit).
        result: a ``fit_head_gates`` result.
        max_rows: most rows in one forward pass.

    Returns:
        An ``AblationCheck``; expected signs: facilitating > 0, irrelevant ~ 0, interfering < 0.

    Example:
        >>> ablation_check(lm, data, result).delta("facilitating") > 0   # doctest: +SKIP
        True
    """
    check_data(model, data)
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    gates = torch.ones(1 + len(HEAD_CLASSES), n_layers, n_heads)
    for i, head_class in enumerate(HEAD_CLASSES, start=1):
        for layer, row in enumerate(result.classes):
            for head, cls in enumerate(row):
                if cls == head_class:
                    gates[i, layer, head] = 0.0
    loss, acc = evaluate_gates(model, data, gates, max_rows=max_rows)
    rows = []
    for i, head_class in enumerate(HEAD_CLASSES, start=1):
        heads = result.heads_in(head_class)
        rows.append({"class": head_class, "n_heads": len(heads), "heads": heads,
                     "loss": float(loss[i]), "delta_loss": float(loss[i] - loss[0]),
                     "accuracy": float(acc[i]), "delta_accuracy": float(acc[i] - acc[0])})  # fmt: skip
    return AblationCheck(tuple(rows), float(loss[0]), float(acc[0]))


def single_head_ablation(
    model: Any,
    data: GatingData,
    *,
    heads_per_pass: int = 16,
    max_rows: int = 256,
    progress: Progress | None = None,
) -> Float[Tensor, "layer head"]:
    """Loss increase when each head alone is zero-ablated (exhaustive, one at a time).

    Ablations are batched: ``heads_per_pass`` single-head ablations share a forward pass by
    repeating the batch, so memory stays bounded by ``max_rows`` rows.

    Example:
        >>> single_head_ablation(lm, data).argmax()   # doctest: +SKIP
    """
    check_data(model, data)
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    base, _ = evaluate_gates(model, data, None, max_rows=max_rows)
    n = n_layers * n_heads
    out = torch.zeros(n)
    for start in range(0, n, heads_per_pass):
        idx = torch.arange(start, min(n, start + heads_per_pass))
        gates = torch.ones(len(idx), n)
        gates[torch.arange(len(idx)), idx] = 0.0
        loss, _ = evaluate_gates(
            model, data, gates.reshape(-1, n_layers, n_heads), max_rows=max_rows
        )
        out[idx] = loss - base[0]
        if progress is not None:
            progress("ablate", int(idx[-1]) + 1, n)
    return out.reshape(n_layers, n_heads)


@dataclass(frozen=True)
class RankedAblation:
    """The paper's causal check of CHG scores: ablate heads cumulatively in score order.

    Attributes:
        frame: one row per (score, seed, n_ablated): ``loss``, ``delta_loss`` and
            ``delta_logprob`` (= -delta_loss) against the ungated model; ``seed`` is an int or
            ``"mean"`` (heads ranked by the mean score over valid seeds).
        base_loss: the ungated model's loss on the same data.
    """

    frame: pd.DataFrame
    base_loss: float

    def curve(self, score: str, seed: int | str = "mean") -> pd.DataFrame:
        """``n_ablated`` and ``delta_logprob`` of one ranking."""
        rows = self.frame[(self.frame["score"] == score) & (self.frame["seed"] == seed)]
        return rows[["n_ablated", "delta_logprob"]].reset_index(drop=True)

    def to_frame(self) -> pd.DataFrame:
        """The long frame."""
        return self.frame.copy()

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form."""
        return {"rows": self.frame.to_dict(orient="records"), "base_loss": self.base_loss}


def ablation_counts(n_heads: int) -> list[int]:
    """0, 1, 2, 4, 8, ... and ``n_heads``: how many heads each ranked-ablation point removes."""
    counts, k = [0], 1
    while k < n_heads:
        counts.append(k)
        k *= 2
    return [*counts, n_heads]


def ranked_ablation(
    model: Any,
    data: GatingData,
    result: HeadGatingResult,
    *,
    scores: tuple[str, ...] = ("facilitation", "irrelevance", "interference"),
    counts: list[int] | None = None,
    per_seed: bool = True,
    max_rows: int = 64,
    progress: Progress | None = None,
) -> RankedAblation:
    """Zero-ablate the top-k heads by each score (per seed and by the mean), for several k.

    The paper's validation: ablating heads in order of facilitation lowers the target
    log-prob, in order of irrelevance leaves it ~unchanged, in order of interference raises
    it (at first). Every ranking x k is one gate set; gate sets share forward passes.

    Args:
        model: the model the gates were fitted on.
        data: the data to measure on (ideally held out from the fit).
        result: a ``fit_head_gates`` result.
        scores: which score rankings to ablate.
        counts: numbers of heads to ablate (``ablation_counts`` by default).
        per_seed: also rank by each valid seed's own scores, not only by the mean.
        max_rows: most rows x gate sets in one forward pass.
        progress: called as ``progress("ablate", done, total)`` per chunk of gate sets.

    Returns:
        A ``RankedAblation``.

    Example:
        >>> ranked_ablation(lm, held_out, result).curve("facilitation")   # doctest: +SKIP
    """
    check_data(model, data)
    n_layers, n_heads = model.cfg.n_layers, model.cfg.n_heads
    n = n_layers * n_heads
    counts = counts or ablation_counts(n)
    if any(k < 0 or k > n for k in counts):
        raise OptionError(f"counts must lie in 0..{n}, got {counts}")
    valid = torch.nonzero(result.valid_seeds).flatten().tolist()
    per = result.seed_scores()
    rankings: list[tuple[str, int | str, Tensor]] = []
    for score in scores:
        if score not in result.scores:
            raise OptionError(f"unknown score {score!r}; valid: {', '.join(result.scores)}")
        rankings.append((score, "mean", result.scores[score].flatten()))
        if per_seed:
            rankings += [(score, s, per[score][s].flatten()) for s in valid]
    sets = torch.ones(len(rankings) * len(counts), n)
    keys = []
    for r, (score, seed, values) in enumerate(rankings):
        order = torch.argsort(values, descending=True, stable=True)
        for c, k in enumerate(counts):
            sets[r * len(counts) + c, order[:k]] = 0.0
            keys.append((score, seed, k))
    base, _ = evaluate_gates(model, data, None, max_rows=max_rows)
    loss, _ = evaluate_gates(model, data, sets.reshape(-1, n_layers, n_heads),
                             max_rows=max_rows, progress=progress, stage="ablate")  # fmt: skip
    frame = pd.DataFrame(
        [
            {
                "score": score,
                "seed": seed,
                "n_ablated": k,
                "loss": float(v),
                "delta_loss": float(v - base[0]),
                "delta_logprob": float(base[0] - v),
            }
            for (score, seed, k), v in zip(keys, loss, strict=True)
        ]
    )
    return RankedAblation(frame, float(base[0]))
