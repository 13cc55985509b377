"""Logit-lens accuracy suite: from which layer on the answer is readable through the unembedding."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from analysis.figures import lens_accuracy_figure
from analysis.lens_accuracy import LensAccuracyOptions, run_lens_accuracy
from probes.errors import SuiteNotApplicable
from probes.hashing import fingerprint
from probes.suite import PreparedInputs, Progress, Suite, SuiteOutput, register_suite
from probes.suites.data import describe, model_dataset


@dataclass(frozen=True)
class LensAccuracySuiteOptions:
    """Attributes:
    n_inputs: random task inputs (task and RASP models).
    n_texts: corpus chunks (text models).
    max_len: tokens per corpus chunk.
    batch_size: rows per forward pass.
    seed: seed of the inputs.
    """

    n_inputs: int = 64
    n_texts: int = 16
    max_len: int = 32
    batch_size: int = 16
    seed: int = 0

    def check(self) -> None:
        """Raise ``ValueError`` for a value out of range."""
        for name in ("n_inputs", "n_texts", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.max_len < 2:
            raise ValueError(f"max_len must be >= 2, got {self.max_len}")


def prepare(model: Any, options: LensAccuracySuiteOptions) -> PreparedInputs:
    """Task inputs with their exact outputs, or corpus text with its next tokens."""
    data = model_dataset(model, options.n_inputs, options.n_texts, options.max_len, options.seed)
    if data.is_numerical:
        raise SuiteNotApplicable(
            f"{model.name} has a numerical output; the lens accuracy needs class outputs"
        )
    return PreparedInputs(
        data, fingerprint(data.tokens, data.targets, data.lengths), describe(data)
    )


def measure(
    model: Any, data: Any, options: LensAccuracySuiteOptions, progress: Progress | None
) -> SuiteOutput:
    """Per-layer accuracy, agreement with the model, target probability and KL."""
    result = run_lens_accuracy(model, data, options=LensAccuracyOptions(options.batch_size))
    mid = len(result.layer_labels) // 2
    summary = {
        "final_accuracy": round(float(result.accuracy[-1]), 4),
        "mid_accuracy": round(float(result.accuracy[mid]), 4),
        "mid_layer": result.layer_labels[mid],
        "first_layer_90pct": result.first_layer_reaching(0.9) or "never",
        "mid_agreement": round(float(result.agreement[mid]), 4),
        "positions": result.n_positions,
    }
    return SuiteOutput(
        summary, {"by_layer": result.to_frame()}, {"accuracy": lens_accuracy_figure(result)}
    )


register_suite(
    Suite(
        name="lens_accuracy",
        title="Logit-lens accuracy by layer",
        description=(
            "Each layer's residual decoded with the final norm and unembedding (logit lens): "
            "top-1 accuracy against the exact task output or the next token, agreement with "
            "the model's own top-1, mean target probability and KL to the final output."
        ),
        options_type=LensAccuracySuiteOptions,
        prepare=prepare,
        measure=measure,
    )
)
