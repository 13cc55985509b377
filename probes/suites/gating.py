"""Causal head gating suites: the CHG taxonomy of any model, and ground-truth recovery on
compiled RASP models.

``chg`` fits head gates (``analysis.head_gating``) on the model's natural data (task inputs
with exact targets, or next-token prediction on the shipped corpus) and counts facilitating,
interfering and irrelevant heads. ``rasp_recovery`` does the same on a compiled ``rasp:*``
model and scores the facilitating heads against the heads the compiler built (its
``head_roles``): precision, recall, and how many unused heads were called irrelevant.

Defaults are small, to suit a batch report on a CPU: the authors' lr 1.0 with clipping on text
models, lr 0.1 without clipping on task and compiled models (their thresholding MLPs make the
large step jump over loss cliffs; see tests/test_head_gating.py).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import pandas as pd

from analysis.figures import gating_loss_figure, gating_map_figure
from analysis.head_gating import HeadGatingOptions, HeadGatingResult, fit_head_gates
from analysis.hooks import head_label
from probes.errors import SuiteNotApplicable
from probes.hashing import fingerprint
from probes.suite import PreparedInputs, Progress, Suite, SuiteOutput, register_suite
from probes.suites.data import codec_dataset, describe, model_dataset

_HEAD = re.compile(r"L(\d+)H(\d+)")


@dataclass(frozen=True)
class GatingSuiteOptions:
    """Attributes:
    n_inputs: random task inputs (task and RASP models).
    n_texts: corpus chunks (text models).
    max_len: tokens per corpus chunk.
    steps: updates per stage, three stages (default: 60 for task/RASP models, whose lr 0.1
        needs about that many to close an unused head from fully open; 10 for text models).
    n_seeds: gate sets fitted in parallel.
    lam: regulariser weight.
    lr: Adam learning rate (default: 0.1 for task/RASP models, 1.0 for text models).
    grad_clip: gradient-norm clip (default: none for task/RASP models, 1.0 for text models;
        0 turns it off).
    batch_size: rows per update (default: 32 for task/RASP models, 8 for text models).
    seed: seed of the inputs, the gates and the batch order.
    """

    n_inputs: int = 64
    n_texts: int = 12
    max_len: int = 24
    steps: int | None = None
    n_seeds: int = 2
    lam: float = 0.1
    lr: float | None = None
    grad_clip: float | None = None
    batch_size: int | None = None
    seed: int = 0

    def check(self) -> None:
        """Raise ``ValueError`` for a value out of range."""
        for name in ("n_inputs", "n_texts", "steps", "n_seeds"):
            if (getattr(self, name) or 1) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.max_len < 2:
            raise ValueError(f"max_len must be >= 2, got {self.max_len}")
        self.gating_options(text=True).check()
        self.gating_options(text=False).check()

    def gating_options(self, *, text: bool) -> HeadGatingOptions:
        """The backend's options, with the family defaults filled in."""
        clip = self.grad_clip if self.grad_clip is not None else (1.0 if text else 0.0)
        return HeadGatingOptions(
            lam=self.lam,
            lr=self.lr if self.lr is not None else (1.0 if text else 0.1),
            grad_clip=clip or None,
            steps=self.steps or (10 if text else 60),
            batch_size=self.batch_size or (8 if text else 32),
            n_seeds=self.n_seeds,
            seed=self.seed,
        )


@dataclass(frozen=True)
class RecoverySuiteOptions(GatingSuiteOptions):
    """``GatingSuiteOptions`` with more inputs by default: recovery is scored."""

    n_inputs: int = 80


def _prepared(data: Any, extra: Any = None) -> PreparedInputs:
    return PreparedInputs(
        data, fingerprint(data.tokens, data.targets, data.lengths, extra), describe(data)
    )


def prepare_chg(model: Any, options: GatingSuiteOptions) -> PreparedInputs:
    """Task inputs with exact targets, or corpus text with next tokens."""
    data = model_dataset(model, options.n_inputs, options.n_texts, options.max_len, options.seed)
    return _prepared(data)


def _fit(
    model: Any, data: Any, options: GatingSuiteOptions, progress: Progress | None
) -> HeadGatingResult:
    gating = options.gating_options(text=model.codec is None)
    return fit_head_gates(model, data, options=gating, progress=progress)


def _figures(result: HeadGatingResult) -> dict[str, Any]:
    return {"classes": gating_map_figure(result, "class"), "loss": gating_loss_figure(result)}


def measure_chg(
    model: Any, data: Any, options: GatingSuiteOptions, progress: Progress | None
) -> SuiteOutput:
    """Class counts, the facilitating heads, the fit's warnings."""
    result = _fit(model, data, options, progress)
    counts = result.class_counts()
    n_heads = sum(counts.values())
    summary: dict[str, Any] = {
        **{c: counts[c] for c in ("facilitating", "interfering", "irrelevant")},
        "facilitating_fraction": round(counts["facilitating"] / n_heads, 4),
        "facilitating_heads": " ".join(result.heads_in("facilitating")[:12]),
        "ungated_loss": round(result.ungated_loss, 4),
        "ungated_accuracy": round(result.ungated_accuracy, 4),
        "valid_seeds": int(result.valid_seeds.sum()),
    }
    return SuiteOutput(summary, {"heads": result.to_frame()}, _figures(result), result.warnings)


def needed_heads(model: Any) -> set[str]:
    """Heads the compiler built (``L0H1`` keys of ``head_roles``); MLP roles are left out."""
    return {k for k in (model.head_roles or {}) if _HEAD.fullmatch(k)}


def prepare_recovery(model: Any, options: RecoverySuiteOptions) -> PreparedInputs:
    """Random inputs of a compiled library program with the interpreter's outputs."""
    if model.kind != "rasp" or model.head_roles is None:
        raise SuiteNotApplicable(
            f"RASP recovery needs a compiled rasp:<program> model with known head roles; "
            f"{model.name!r} is {model.kind}"
        )
    data = codec_dataset(model, options.n_inputs, options.seed, f"{options.n_inputs} random inputs")
    return _prepared(data, sorted(model.head_roles.items()))


def measure_recovery(
    model: Any, data: Any, options: RecoverySuiteOptions, progress: Progress | None
) -> SuiteOutput:
    """Precision and recall of the facilitating heads against the compiled heads."""
    result = _fit(model, data, options, progress)
    needed = needed_heads(model)
    found = set(result.heads_in("facilitating"))
    every = {
        head_label(layer, head)
        for layer in range(len(result.classes))
        for head in range(len(result.classes[0]))
    }
    unused = every - needed
    hits = found & needed
    irrelevant = set(result.heads_in("irrelevant"))
    precision = len(hits) / len(found) if found else float("nan")
    recall = len(hits) / len(needed) if needed else float("nan")
    summary: dict[str, Any] = {
        "precision": round(precision, 4),
        "recall": round(recall, 4),
        "needed_heads": " ".join(sorted(needed)),
        "facilitating_heads": " ".join(sorted(found)),
        "unused_called_irrelevant": f"{len(unused & irrelevant)}/{len(unused)}",
        "ungated_accuracy": round(result.ungated_accuracy, 4),
    }
    frame = result.to_frame()
    roles = model.head_roles or {}
    frame.insert(3, "compiled_role", [roles.get(label, "") for label in frame["label"]])
    frame.insert(4, "needed", [label in needed for label in frame["label"]])
    tables = {"heads": frame, "recovery": pd.DataFrame([summary])}
    return SuiteOutput(summary, tables, _figures(result), result.warnings)


register_suite(
    Suite(
        name="chg",
        title="Causal head gating taxonomy",
        description=(
            "Causal head gating (Nam et al. 2025): one gate per head fitted with lambda = 0, "
            "then under retention (G+) and removal (G-) pressure; heads kept under removal "
            "facilitate, heads removed under retention interfere, the rest are irrelevant."
        ),
        options_type=GatingSuiteOptions,
        prepare=prepare_chg,
        measure=measure_chg,
    )
)

register_suite(
    Suite(
        name="rasp_recovery",
        title="RASP ground-truth recovery",
        description=(
            "CHG on a compiled RASP model, whose heads are known by construction: precision and "
            "recall of the facilitating heads against the heads the compiler built, and how "
            "many unused heads CHG calls irrelevant."
        ),
        options_type=RecoverySuiteOptions,
        prepare=prepare_recovery,
        measure=measure_recovery,
        applies_to=("rasp",),
    )
)
