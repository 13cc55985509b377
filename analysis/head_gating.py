"""Causal head gating (CHG, Nam et al. 2025): which heads facilitate, interfere or don't matter.

One gate ``g = sigmoid(logit)`` per (seed, layer, head) multiplies the head's output
(``hook_z``) while the model stays frozen. The gate logits are fitted three times on
``mean NLL - lambda * mean(clamp(logit, -4, 4))``: first with ``lambda = 0``, then from that
fit once with ``+lambda`` (retention pressure: G+) and once with ``-lambda`` (removal
pressure: G-). Scores per seed: facilitation = G-, interference = 1 - G+, irrelevance =
G+ (1 - G-). Note where this follows the paper rather than the packaged re-release: the
re-release's README calls the ``+lambda`` stage "pushes masks to 0" and its taxonomy calls a
head interfering when G+ < 0.5 <= G-; its code's sign pushes ``+lambda`` gates *up*, and the
paper calls a head interfering when G+ is low, which is what we do.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import pandas as pd
import torch
from jaxtyping import Bool, Float
from torch import Tensor

from analysis.errors import OptionError
from analysis.gating_cliffs import revert_cliffs
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
from analysis.hooks import head_label
from analysis.protocol import model_device, model_name

HEAD_CLASSES = ("facilitating", "interfering", "irrelevant")
STAGES = ("none", "g_plus", "g_minus")


@dataclass(frozen=True)
class HeadGatingOptions:
    """How to fit head gates (defaults are the authors', except steps, which suit a CPU).

    Attributes:
        lam: regulariser weight lambda (> 0); G+ uses ``+lam``, G- ``-lam``.
        lr: Adam learning rate on the gate logits.
        lr_schedule: ``constant`` or ``linear`` (decay to 0 over each stage, an option of the
            authors' trainer): decay lets a removal stage settle on the edge of a loss cliff
            instead of oscillating across it.
        grad_clip: gradient-norm clip per seed (``None``: no clipping).
        steps: updates per stage (the paper uses about 500).
        batch_size: rows per update and seed.
        n_seeds: gate sets fitted in parallel in one forward pass.
        batches: ``per_seed`` (each seed draws its own batches: seeds differ by data order as
            well as by initialisation, so ``open`` seeds give a real spread) or ``shared`` (one
            batch repeated for every seed, as the authors: seeds differ only by their
            initial gates, and ``open`` seeds are then identical).
        init: ``open`` (every logit ``+clamp``, robust on non-smooth models) or ``uniform``
            (gates drawn from U(0, 1), as the authors).
        clamp: logits are clamped to ``[-clamp, clamp]`` in the regulariser.
        threshold: gate value separating "kept" from "removed" in the classes.
        cliff_check: put back gates that a stage moved (by more than 0.1) when that lowers
            the stage objective on all the data (``analysis.gating_cliffs``; for non-smooth
            models such as compiled ones). ``None``: on for models with at most 64 heads.
        seed_tolerance: a seed whose lambda=0 loss exceeds the ungated loss by more than this
            (relative, plus 0.01 absolute) landed in a local optimum and is left out of means.
        eval_rows: most rows in one evaluation forward pass.
        seed: seed of the initial gates and the batch order.
    """

    lam: float = 0.1
    lr: float = 1.0
    lr_schedule: Literal["constant", "linear"] = "constant"
    grad_clip: float | None = 1.0
    steps: int = 200
    batch_size: int = 32
    n_seeds: int = 4
    batches: Literal["per_seed", "shared"] = "per_seed"
    init: Literal["open", "uniform"] = "open"
    clamp: float = 4.0
    threshold: float = 0.5
    cliff_check: bool | None = None
    seed_tolerance: float = 0.05
    eval_rows: int = 64
    seed: int = 0

    def check(self) -> None:
        """Raise ``OptionError`` for a value out of range."""
        for name in ("steps", "batch_size", "n_seeds", "eval_rows"):
            if getattr(self, name) < 1:
                raise OptionError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.lam < 0:
            raise OptionError(f"lam must be >= 0 (the stages set its sign), got {self.lam}")
        if self.lr <= 0 or self.clamp <= 0:
            raise OptionError(f"lr and clamp must be > 0, got lr={self.lr}, clamp={self.clamp}")
        if self.batches not in ("per_seed", "shared"):
            raise OptionError(f"batches must be 'per_seed' or 'shared', got {self.batches!r}")
        if self.init not in ("open", "uniform"):
            raise OptionError(f"init must be 'open' or 'uniform', got {self.init!r}")
        if not 0 < self.threshold < 1:
            raise OptionError(f"threshold must be in (0, 1), got {self.threshold}")


def scores_of(g_plus: Tensor, g_minus: Tensor) -> dict[str, Tensor]:
    """``{facilitation, interference, irrelevance}`` from G+ and G- (any matching shapes)."""
    return {
        "facilitation": g_minus,
        "interference": 1 - g_plus,
        "irrelevance": g_plus * (1 - g_minus),
    }


def classify(g_plus: Tensor, g_minus: Tensor, threshold: float) -> list[list[str]]:
    """Class per head: interfering when G+ < t, else facilitating when G- >= t, else irrelevant."""
    out = []
    for layer in range(g_plus.shape[0]):
        row = []
        for head in range(g_plus.shape[1]):
            if g_plus[layer, head] < threshold:
                row.append("interfering")
            elif g_minus[layer, head] >= threshold:
                row.append("facilitating")
            else:
                row.append("irrelevant")
        out.append(row)
    return out


@dataclass(frozen=True)
class HeadGatingResult:
    """Fitted gates, scores and classes of every head.

    Attributes:
        model_name, data_name: what was fitted.
        gates: ``{"none" | "g_plus" | "g_minus": [seed, layer, head]}`` final gate values.
        valid_seeds: ``[seed]`` seeds whose lambda=0 fit is as good as the ungated model.
        scores: ``{facilitation, interference, irrelevance: [layer, head]}``, means over valid
            seeds; ``score_std`` holds their spread across valid seeds.
        classes: ``[layer][head]`` class names (``HEAD_CLASSES``) from the mean gates.
        loss_curves: ``{stage: [step, seed]}`` training NLL per update.
        seed_losses: ``[seed]`` loss of each lambda=0 fit on all the data.
        ungated_loss, ungated_accuracy: the model without gates on all the data.
        warnings: things to know before trusting the classes (pitfalls 1 and 2).
        seconds: wall time of the fit.
        cliff_reverts: ``{stage: gates put back by the cliff check}`` (empty when it is off).
    """

    model_name: str
    data_name: str
    gates: dict[str, Float[Tensor, "seed layer head"]]
    valid_seeds: Bool[Tensor, " seed"]
    scores: dict[str, Float[Tensor, "layer head"]]
    score_std: dict[str, Float[Tensor, "layer head"]]
    classes: list[list[str]]
    loss_curves: dict[str, Float[Tensor, "step seed"]]
    seed_losses: Float[Tensor, " seed"]
    ungated_loss: float
    ungated_accuracy: float
    options: HeadGatingOptions
    warnings: tuple[str, ...]
    seconds: float
    cliff_reverts: dict[str, int] = field(default_factory=dict)

    def seed_scores(self) -> dict[str, Float[Tensor, "seed layer head"]]:
        """Scores of every seed (valid or not)."""
        return scores_of(self.gates["g_plus"], self.gates["g_minus"])

    def heads_in(self, head_class: str) -> list[str]:
        """Labels (``L1H3``) of the heads in ``head_class``.

        Raises:
            OptionError: for a class not in ``HEAD_CLASSES``.
        """
        if head_class not in HEAD_CLASSES:
            raise OptionError(f"unknown class {head_class!r}; valid: {', '.join(HEAD_CLASSES)}")
        return [
            head_label(layer, head)
            for layer, row in enumerate(self.classes)
            for head, cls in enumerate(row)
            if cls == head_class
        ]

    def class_counts(self) -> dict[str, int]:
        """How many heads each class holds."""
        return {c: len(self.heads_in(c)) for c in HEAD_CLASSES}

    def to_frame(self) -> pd.DataFrame:
        """One row per head: gates (mean over valid seeds), scores, spread and class."""
        valid = self.valid_seeds
        rows = []
        for layer, row in enumerate(self.classes):
            for head, cls in enumerate(row):
                entry: dict[str, Any] = {"layer": layer, "head": head,
                                         "label": head_label(layer, head), "class": cls}  # fmt: skip
                for stage, g in self.gates.items():
                    entry[f"gate_{stage}"] = float(g[valid, layer, head].mean())
                for name, value in self.scores.items():
                    entry[name] = float(value[layer, head])
                    entry[f"{name}_std"] = float(self.score_std[name][layer, head])
                rows.append(entry)
        return pd.DataFrame(rows)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe form."""
        return {
            "model_name": self.model_name,
            "data_name": self.data_name,
            "gates": {k: v.tolist() for k, v in self.gates.items()},
            "valid_seeds": self.valid_seeds.tolist(),
            "scores": {k: v.tolist() for k, v in self.scores.items()},
            "score_std": {k: v.tolist() for k, v in self.score_std.items()},
            "classes": self.classes,
            "class_counts": self.class_counts(),
            "loss_curves": {k: v.tolist() for k, v in self.loss_curves.items()},
            "seed_losses": self.seed_losses.tolist(),
            "ungated_loss": self.ungated_loss,
            "ungated_accuracy": self.ungated_accuracy,
            "options": asdict(self.options),
            "warnings": list(self.warnings),
            "seconds": self.seconds,
            "cliff_reverts": dict(self.cliff_reverts),
        }


def initial_logits(model: Any, options: HeadGatingOptions, gen: torch.Generator) -> Tensor:
    """``[seed, layer, head]`` starting logits (``open``: all ``+clamp``; ``uniform``: U(0,1))."""
    shape = (options.n_seeds, model.cfg.n_layers, model.cfg.n_heads)
    if options.init == "open":
        start = torch.full(shape, float(options.clamp))
    else:
        start = torch.logit(torch.rand(shape, generator=gen).clamp(1e-6, 1 - 1e-6))
    return start.to(model_device(model))


def fit_stage(
    model: Any,
    start: Tensor,
    lam: float,
    sample: BatchSampler,
    options: HeadGatingOptions,
    stage: str,
    progress: Progress | None,
) -> tuple[Tensor, Tensor]:
    """Fit gate logits from ``start`` on ``NLL - lam * mean(clamp(logit))``; final logits and
    the ``[step, seed]`` NLL curve."""
    logits = start.clone().requires_grad_(True)
    opt = torch.optim.Adam([logits], lr=options.lr)
    curve = torch.zeros(options.steps, start.shape[0], device=start.device)
    per_seed = options.batches == "per_seed"
    for step in range(options.steps):
        if options.lr_schedule == "linear":
            opt.param_groups[0]["lr"] = options.lr * (1 - step / options.steps)
        nll, _ = gated_nll(model, torch.sigmoid(logits), sample(), per_seed=per_seed)
        loss = (nll - lam * regulariser(logits, options.clamp)).sum()
        (grad,) = torch.autograd.grad(loss, [logits])
        logits.grad = clip_per_seed(grad, options.grad_clip)
        opt.step()
        curve[step] = nll.detach()
        if progress is not None:
            progress(stage, step + 1, options.steps)
    return logits.detach(), curve.cpu()


def fit_head_gates(
    model: Any,
    data: GatingData,
    *,
    options: HeadGatingOptions | None = None,
    progress: Progress | None = None,
) -> HeadGatingResult:
    """Fit causal head gates and sort the heads into facilitating / interfering / irrelevant.

    Args:
        model: a hooked model (``LoadedModel`` or TransformerLens model) with ``hook_z``.
        data: the sequences and supervised targets (``analysis.gating_data``).
        options: fit settings (``HeadGatingOptions()`` by default).
        progress: called as ``progress(stage, done, total)``; nothing is printed.

    Returns:
        A ``HeadGatingResult``.

    Raises:
        OptionError: bad options, or data that does not fit the model.

    Example:
        >>> data = task_data(lm, seqs, outs)                        # doctest: +SKIP
        >>> fit_head_gates(lm, data).heads_in("facilitating")      # doctest: +SKIP
        ['L0H0', 'L3H0']
    """
    options = options or HeadGatingOptions()
    options.check()
    check_data(model, data)
    start_time = time.perf_counter()
    gen = torch.Generator().manual_seed(options.seed)
    draws = options.n_seeds if options.batches == "per_seed" else 1
    sample = BatchSampler(data, options.batch_size, gen, draws=draws)
    ungated_loss, ungated_acc = evaluate_gates(model, data, None, max_rows=options.eval_rows)
    base, curve0 = fit_stage(
        model, initial_logits(model, options, gen), 0.0, sample, options, "none", progress
    )
    plus, curve_p = fit_stage(model, base, options.lam, sample, options, "g_plus", progress)
    minus, curve_m = fit_stage(model, base, -options.lam, sample, options, "g_minus", progress)
    n_heads = model.cfg.n_layers * model.cfg.n_heads
    reverts: dict[str, int] = {}
    if options.cliff_check or (options.cliff_check is None and n_heads <= 64):
        kw = {"clamp": options.clamp, "max_rows": options.eval_rows, "progress": progress}
        plus, reverts["g_plus"] = revert_cliffs(model, data, base, plus, options.lam, **kw)
        minus, reverts["g_minus"] = revert_cliffs(model, data, base, minus, -options.lam, **kw)
    seed_losses, _ = evaluate_gates(model, data, torch.sigmoid(base), max_rows=options.eval_rows)
    if progress is not None:
        progress("evaluate", 1, 1)
    gates = {
        k: torch.sigmoid(v).cpu() for k, v in (("none", base), ("g_plus", plus), ("g_minus", minus))
    }
    limit = float(ungated_loss[0]) * (1 + options.seed_tolerance) + 0.01
    valid = seed_losses <= limit
    warnings = []
    if not bool(valid.all()):
        bad = torch.nonzero(~valid).flatten().tolist()
        warnings.append(
            f"seeds {bad} ended the lambda=0 fit with a loss above the ungated model's "
            f"({[round(float(seed_losses[i]), 4) for i in bad]} > {limit:.4f}): local optima, "
            "left out of the means"
        )
    if not bool(valid.any()):
        warnings.append("no seed matched the ungated loss; means use every seed")
        valid = torch.ones_like(valid)
    if float(ungated_loss[0]) < 1e-3:
        warnings.append(
            f"the ungated loss is ~0 ({float(ungated_loss[0]):.2e}): the loss is saturated, so "
            "heads whose removal costs accuracy can still look irrelevant"
        )
    per_seed = scores_of(gates["g_plus"][valid], gates["g_minus"][valid])
    n_valid = int(valid.sum())
    std = {
        k: (v.std(dim=0) if n_valid > 1 else torch.zeros_like(v[0])) for k, v in per_seed.items()
    }
    return HeadGatingResult(
        model_name=model_name(model),
        data_name=data.name,
        gates=gates,
        valid_seeds=valid,
        scores={k: v.mean(dim=0) for k, v in per_seed.items()},
        score_std=std,
        classes=classify(
            gates["g_plus"][valid].mean(0), gates["g_minus"][valid].mean(0), options.threshold
        ),
        loss_curves={"none": curve0, "g_plus": curve_p, "g_minus": curve_m},
        seed_losses=seed_losses,
        ungated_loss=float(ungated_loss[0]),
        ungated_accuracy=float(ungated_acc[0]),
        options=options,
        warnings=tuple(warnings),
        seconds=time.perf_counter() - start_time,
        cliff_reverts=reverts,
    )
